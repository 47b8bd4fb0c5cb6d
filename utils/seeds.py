"""Seeds and latents: the one place that turns `--seeds` text into latents."""
import re

import torch

_ITEM = re.compile(r'^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$')


def parse_seeds(text):
    """StyleGAN-style seed lists: '0-9999', '0,1,4-6' -> [0, 1, 4, 5, 6]. Ranges are inclusive.

    Raises ValueError naming the bad item (negative numbers, reversed ranges, empty items, non-numbers).
    """
    if isinstance(text, (list, tuple)):
        return [int(s) for s in text]
    seeds = []
    for item in str(text).split(','):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"bad seed item {item.strip()!r} in {text!r}: expected N or A-B with "
                             "non-negative integers, e.g. '0-9' or '0,1,4-6'")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise ValueError(f"bad seed range {item.strip()!r} in {text!r}: the end is before the start")
        seeds.extend(range(start, end + 1))
    return seeds


def latent_for_seed(seed, z_dim):
    """z [1, z_dim] for a seed: torch.manual_seed(seed); torch.randn(1, z_dim) on the CPU.

    Always drawn on the CPU, so a seed gives the same latent on every device (the official scripts drew
    on CUDA, whose stream differs from the CPU one).
    """
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(1, z_dim, generator=generator)
