"""Everything one training process holds (models, optimizers, scaler, EMAs), and how it is built.

Plain construction, no framework: `build_training_run(config, ...)` returns a `TrainingRun` whose fields
are the objects the process step and the checkpoint code use.
"""
import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from discriminators import build_discriminator
from generators import build_generator

from .ema import EMA

EMA_DECAY = 0.999
EMA2_DECAY = 0.9999

# Optional per-group learning rates of the generator: config key -> parameter-name prefix. Groups come
# first in this order and the rest ("generator") last; CARLA_default uses sampling_network_lr 2e-6.
PARAM_GROUPS = (('sampling_network_lr', 'representation.sample_network.'),
                ('mapping_network_lr', 'representation.rf_network.mapping_network.'),
                ('sigma_lr', 'representation.rf_network.output_sigma.'))  # not official: the demo config's


@dataclass
class TrainingRun:
    config: dict
    config_name: Optional[str]
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    optimizer_G: torch.optim.Optimizer
    optimizer_D: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA
    ema2: EMA
    device: torch.device
    amp: bool
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    patch_split: Optional[int] = None

    def autocast(self):
        """fp16 autocast on CUDA (the official AMP); a no-op context on CPU, which trains in fp32."""
        if self.amp:
            return torch.autocast(device_type='cuda', dtype=torch.float16)
        return contextlib.nullcontext()


def generator_param_groups(generator, optimizer_config):
    named = [(name, p) for name, p in generator.named_parameters() if p.requires_grad]
    groups = []
    for key, prefix in PARAM_GROUPS:
        if optimizer_config.get(key) is None:
            continue
        chosen = [p for name, p in named if name.startswith(prefix)]
        named = [(name, p) for name, p in named if not name.startswith(prefix)]
        groups.append({'params': chosen, 'lr': float(optimizer_config[key]), 'name': key[:-len('_lr')]})
    groups.append({'params': [p for _, p in named], 'lr': float(optimizer_config['gen_lr']), 'name': 'generator'})
    return groups


def build_training_run(config, config_name=None, device='cpu', rank=0, world_size=1, seed=0, patch_split=None,
                       training_path='fast'):
    """Models, optimizers, EMAs and scaler of a fresh run. `training_path` is the generator's training
    evaluation (GramGenerator.TRAINING_PATHS: 'fast', 'low_memory' or the stock-autograd 'plain')."""
    device = torch.device(device)
    # The same seed on every rank: identical initial weights without a broadcast (the official code did
    # torch.manual_seed(0) on all ranks for the same reason).
    torch.manual_seed(seed)
    generator = build_generator(config).to(device).train()
    if training_path not in generator.TRAINING_PATHS:
        raise ValueError(f"training_path must be one of {generator.TRAINING_PATHS}, got {training_path!r}")
    generator.training_path = training_path
    discriminator = build_discriminator(config).to(device).train()
    optimizer_config = config['optimizer']
    betas = tuple(float(b) for b in optimizer_config['betas'])  # configs write (0, 0.9): ints rejected
    optimizer_G = torch.optim.Adam(generator_param_groups(generator, optimizer_config), betas=betas)
    optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=float(optimizer_config['disc_lr']), betas=betas)
    amp = device.type == 'cuda'
    use_scaler = amp and not config['global'].get('disable_scaler', False)
    scaler = torch.amp.GradScaler('cuda', enabled=use_scaler)
    return TrainingRun(config=config, config_name=config_name, generator=generator, discriminator=discriminator,
                       optimizer_G=optimizer_G, optimizer_D=optimizer_D, scaler=scaler,
                       ema=EMA(generator, EMA_DECAY), ema2=EMA(generator, EMA2_DECAY), device=device, amp=amp,
                       rank=rank, world_size=world_size, seed=seed, patch_split=patch_split)


def step_generator(seed, rank, step):
    """The CPU random stream of one rank at one step, a pure function of (seed, rank, step).

    All of the loop's randomness (latents, camera poses) is drawn from it, so a resumed run draws exactly
    what an uninterrupted one would without saving RNG states, on any device, and ranks differ.
    """
    state = np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
