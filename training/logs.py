"""Rank-0 outputs besides checkpoints: scalars (JSONL, optional TensorBoard), snapshots, options.json."""
import copy
import json
import math
import os
import time

import torch

from utils.atomic import atomic_open
from utils.images import make_grid, save_png, to_uint8
from utils.seeds import latent_for_seed

SCALARS_FILE = 'scalars.jsonl'
OPTIONS_FILE = 'options.json'
# Snapshot grid: 5x5 fixed latents (seeds 0..24), truncation 0.7, frontal and 0.5 rad yaw (official views).
SNAPSHOT_ROWS = 5
SNAPSHOT_PSI = 0.7
SNAPSHOT_VIEWS = (('fixed', 0.0), ('tilted', 0.5))


class ScalarLog:
    """Appends one JSON object per step to scalars.jsonl (a resumed run appends after the old lines; when
    it redoes steps of a killed run, the later line of a step is the valid one) and mirrors the numbers to
    TensorBoard when the `tensorboard` package is installed."""

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, SCALARS_FILE)
        self.stream = open(self.path, 'a', encoding='utf-8')
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional dependency
            SummaryWriter = None
        if SummaryWriter is not None:
            self.tensorboard = SummaryWriter(os.path.join(output_dir, 'tensorboard'))

    def write(self, step, values):
        record = {'step': step, 'time': round(time.time(), 3)}
        record.update({k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in values.items()})
        self.stream.write(json.dumps(record) + '\n')
        self.stream.flush()
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, step)

    def close(self):
        self.stream.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def fixed_latents(z_dim, count=SNAPSHOT_ROWS * SNAPSHOT_ROWS):
    """[count, z_dim]: the latents of seeds 0..count-1 (utils.seeds), the same in every run."""
    return torch.cat([latent_for_seed(seed, z_dim) for seed in range(count)])


@torch.no_grad()
def write_snapshots(run, output_dir, step, latents):
    """`%06d_fixed.png` / `%06d_tilted.png`: 5x5 grids from the EMA(0.999) generator in fp32.

    (The official snapshots used the raw weights; the EMA is what the scripts render and evaluate.)
    """
    snapshot_generator = copy.deepcopy(run.generator)
    run.ema.copy_to(snapshot_generator)
    snapshot_generator.eval()
    z = latents.to(run.device)
    paths = []
    for name, yaw_offset in SNAPSHOT_VIEWS:
        pitch = torch.full((z.shape[0],), math.pi / 2, dtype=torch.float64)
        yaw = torch.full((z.shape[0],), math.pi / 2 + yaw_offset, dtype=torch.float64)
        images = snapshot_generator.render(z, pitch, yaw, truncation_psi=SNAPSHOT_PSI)
        path = os.path.join(output_dir, f'{step:06d}_{name}.png')
        save_png(make_grid(list(to_uint8(images)), SNAPSHOT_ROWS, SNAPSHOT_ROWS), path)
        paths.append(path)
    return paths


def write_options(output_dir, config, config_name, options, world_size, start_step):
    record = {'config_name': config_name, 'config': config, 'options': options, 'world_size': world_size,
              'start_step': start_step, 'torch': torch.__version__, 'started': time.strftime('%Y-%m-%d %H:%M:%S')}
    path = os.path.join(output_dir, OPTIONS_FILE)
    with atomic_open(path, 'w', encoding='utf-8') as stream:
        json.dump(record, stream, indent=2, default=str)
