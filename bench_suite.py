"""The GPU measurement suite (issue 13): every render and training figure of README Performance in one run.

    python bench_suite.py --json gpu_suite.json           # on a CUDA machine: a few minutes on an H200
    python bench_suite.py --quick --json quick.json       # TINY_GRAM, tiny sizes: the same code end to end on CPU

Needs no dataset and no download: the models are built from the configs with random weights (seed 0) and
real images are random tensors, so the figures are speeds and memory, not image quality (the work per point
does not depend on the weights; the share of culled points does, a little).

Render table (FFHQ_default at 256^2): B seeds at one camera for B = 1, 8, 32, and an orbit of one seed (4
views), on each path: 'batched' (the CUDA default: culled points of all latents in one batched MLP),
'per_latent' (the CPU default: a Python loop over latents), 'plain' (every point, as the official code),
and 'fp16' (batched, radiance MLP in float16) with its max / mean |difference| from the exact batched
images. Training table (bench_train.py's step): GRAM64_FFHQ at batch 8 and FFHQ_default at batch 4 with
--patch_split 4, per training path, seconds/iteration and the peak memory of the run (CUDA max allocated).

Rows are skipped, with the reason in the JSON, once the run passes --budget_s (default 330 s), so that the
suite ends within 6 minutes on a device it has not seen; a row that does not fit in memory is reported as
out of memory and the run goes on.
"""
import argparse
import gc
import json
import math
import platform
import sys
import time

import torch

from bench import PointCounter, peak_memory_mb, time_calls
from bench_train import benchmark
from generators import build_generator
from utils.seeds import latent_for_seed

# (name, render options, the exact path its images are compared with)
RENDER_PATHS = (
    ('batched', dict(fast=True, radiance_path='batched'), None),
    ('per_latent', dict(fast=True, radiance_path='per_latent'), None),
    ('plain', dict(fast=False), None),
    ('fp16', dict(fast=True, radiance_path='batched', precision='fp16'), 'batched'),
)
# (training_path, radiance_path): the CUDA default ('fast' on the batched path) first
TRAINING_PATHS = (('fast', 'batched'), ('fast', 'per_latent'), ('low_memory', 'batched'), ('plain', 'auto'))

SETTINGS = {
    'full': dict(render_config='FFHQ_default', img_size=256, batches=(1, 8, 32), frames=4, warmup=1, repeats=2,
                 training=(('GRAM64_FFHQ', 8, None), ('FFHQ_default', 4, 4)), iterations=2),
    # the same rows at CPU scale
    'quick': dict(render_config='TINY_GRAM', img_size=16, batches=(1, 2), frames=2, warmup=0, repeats=1,
                  training=(('TINY_GRAM', 2, None), ('TINY_GRAM', 2, 2)), iterations=1),
}


def _reset_peak(device):
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _is_out_of_memory(error):
    return isinstance(error, torch.cuda.OutOfMemoryError) or 'out of memory' in str(error)


def measure_or_skip(row, deadline, device, measure):
    """measure() with the peak-memory counter reset, or None with row['skipped'] saying why: the time
    budget is spent, or the device ran out of memory (other errors propagate)."""
    if time.perf_counter() > deadline:
        row['skipped'] = 'time budget spent'
        return None
    _reset_peak(device)
    try:
        return measure()
    except RuntimeError as error:
        if not _is_out_of_memory(error):
            raise
        row['skipped'] = f'out of memory: {str(error).splitlines()[0]}'
        return None


def render_rows(settings, device, deadline):
    torch.manual_seed(0)
    generator = build_generator(settings['render_config']).to(device).eval()
    counter = PointCounter(generator)
    size = settings['img_size']
    frontal = math.pi / 2
    cases = [(f'{batch} seeds, one camera', batch, [frontal] * batch) for batch in settings['batches']]
    cases.append((f"orbit, 1 seed, {settings['frames']} views", 1,
                  (torch.linspace(-0.3, 0.3, settings['frames'], dtype=torch.float64) + frontal).tolist()))
    rows = []
    for case, seeds, yaws in cases:
        z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in range(seeds)]).to(device)
        images_per_call = len(yaws) if seeds == 1 else seeds
        exact_images = {}

        def render(options, z=z, yaws=yaws, seeds=seeds):
            with torch.no_grad():
                if seeds > 1:  # seeds at one camera: one call
                    pitch = torch.full((seeds,), frontal, dtype=torch.float64)
                    return generator.render(z, pitch, pitch, img_size=size, **options)
                return torch.cat([generator.render(z, torch.tensor([frontal], dtype=torch.float64),
                                                   torch.tensor([yaw], dtype=torch.float64), img_size=size,
                                                   **options) for yaw in yaws])

        for name, options, compare_with in RENDER_PATHS:
            row = {'table': 'render', 'config': settings['render_config'], 'img_size': size, 'case': case,
                   'path': name, 'options': options, 'images': images_per_call}
            rows.append(row)
            measured = measure_or_skip(row, deadline, device, lambda: (
                time_calls(lambda: render(options), device, settings['warmup'], settings['repeats'], counter),
                render(options)))
            if measured is None:
                continue
            (seconds, flops, points, first_call), images = measured
            row.update(ms_per_image=1000 * seconds / images_per_call, images_per_s=images_per_call / seconds,
                       gflop_per_s=flops / seconds / 1e9, radiance_points=points, first_call_s=first_call,
                       peak_memory_mb=peak_memory_mb(device))
            if compare_with is None:
                exact_images[name] = images
            elif compare_with in exact_images:
                difference = (images - exact_images[compare_with]).abs()
                row.update(max_abs_diff_vs_exact=difference.max().item(),
                           mean_abs_diff_vs_exact=difference.mean().item())
        del exact_images
    return rows


def training_rows(settings, device, deadline):
    rows = []
    for config, batch, patch_split in settings['training']:
        for training_path, radiance_path in TRAINING_PATHS:
            row = {'table': 'training', 'config': config, 'batch_size': batch, 'patch_split': patch_split,
                   'training_path': training_path,
                   'radiance_path': '-' if training_path == 'plain' else radiance_path}
            rows.append(row)
            result = measure_or_skip(row, deadline, device, lambda: benchmark(
                config, settings['iterations'], batch, patch_split, device, training_path=training_path,
                radiance_path=radiance_path))
            if result is None:
                continue
            row.update({key: result[key] for key in ('seconds_per_iteration', 'first_iteration_s', 'images_per_s',
                                                     'peak_memory_mb', 'peak_memory_kind', 'amp', 'batch_split')})
    return rows


def print_tables(rows):
    print('\nrender (ms/image; fp16: max / mean |diff| from the exact batched images)')
    print(f"{'case':<28} {'path':<11} {'ms/image':>10} {'img/s':>8} {'GFLOP/s':>9} {'peak MB':>9}  note")
    for row in (r for r in rows if r['table'] == 'render'):
        if 'skipped' in row:
            print(f"{row['case']:<28} {row['path']:<11} skipped: {row['skipped']}")
            continue
        note = (f"max|diff| {row['max_abs_diff_vs_exact']:.2g} mean {row['mean_abs_diff_vs_exact']:.2g}"
                if 'max_abs_diff_vs_exact' in row else '')
        print(f"{row['case']:<28} {row['path']:<11} {row['ms_per_image']:10.1f} {row['images_per_s']:8.2f} "
              f"{row['gflop_per_s']:9.1f} {row['peak_memory_mb']:9.0f}  {note}")
    print('\ntraining (one D step + one G step)')
    print(f"{'config':<14} {'batch':>5} {'patch':>5} {'training path':<14} {'radiance':<11} {'s/it':>8} "
          f"{'img/s':>7} {'peak MB':>9}")
    for row in (r for r in rows if r['table'] == 'training'):
        head = (f"{row['config']:<14} {row['batch_size']:>5} {str(row['patch_split'] or '-'):>5} "
                f"{row['training_path']:<14} {row['radiance_path']:<11}")
        if 'skipped' in row:
            print(f"{head} skipped: {row['skipped']}")
            continue
        print(f"{head} {row['seconds_per_iteration']:8.3f} {row['images_per_s']:7.2f} {row['peak_memory_mb']:9.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='TINY_GRAM at tiny sizes: the whole suite in seconds')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--budget_s', type=float, default=330.0,
                        help='rows starting after this many seconds are skipped (reported in the JSON)')
    parser.add_argument('--json', default=None, help='write the environment and all rows here')
    args = parser.parse_args(argv)
    settings = SETTINGS['quick' if args.quick else 'full']
    started = time.perf_counter()
    deadline = started + args.budget_s
    environment = {'device': args.device, 'torch': torch.__version__, 'cuda': torch.version.cuda,
                   'gpu': torch.cuda.get_device_name() if args.device.startswith('cuda') else None,
                   'cpu': platform.processor() or platform.machine(), 'threads': torch.get_num_threads(),
                   'settings': 'quick' if args.quick else 'full', 'weights': 'random (seed 0), no checkpoint',
                   'peak_memory': 'CUDA max allocated' if args.device.startswith('cuda') else 'process peak RSS'}
    print(json.dumps(environment))
    rows = render_rows(settings, args.device, deadline) + training_rows(settings, args.device, deadline)
    environment['total_s'] = time.perf_counter() - started
    print_tables(rows)
    print(f"\ntotal {environment['total_s']:.0f} s")
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump({'environment': environment, 'rows': rows}, stream, indent=1)
    return rows


if __name__ == '__main__':
    main()
    sys.exit(0)
