"""Seeds and latents: the one place that turns `--seeds` text into latents."""
import re

import torch

_ITEM = re.compile(r'^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$')
# StyleGAN's seed range (numpy's RandomState); torch.manual_seed takes it too, and products such as the
# synthetic dataset's `seed * 1_000_003 + index` stay inside torch's 64-bit seeds.
MAX_SEED = 2 ** 32 - 1
# A typo such as '0-99999999999' would otherwise build a list of 10^11 ints before anything is rendered.
MAX_SEEDS = 10 ** 7


def parse_seeds(text):
    """StyleGAN-style seed lists: '0-9999', '0,1,4-6' -> [0, 1, 4, 5, 6]. Ranges are inclusive.

    Raises ValueError naming the bad item: negative numbers, reversed ranges, empty items, non-numbers,
    seeds above MAX_SEED, and seeds listed twice (each seed names one output file, so a repeat would render
    the same image twice and write it once, or double the frames of a sequence).
    """
    if isinstance(text, (list, tuple)):
        return [int(s) for s in text]
    seeds, ranges, total = [], [], 0
    for item in str(text).split(','):
        match = _ITEM.match(item)
        if not match:
            what = (f"bad seed item {item.strip()} in {text}" if item.strip() else
                    f"empty item in the seed list {text}" if str(text).strip() else "empty seed list")
            raise ValueError(f"{what}: expected N or A-B with non-negative integers, e.g. 0-9 or 0,1,4-6")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise ValueError(f"bad seed range {item.strip()} in {text}: the end is before the start")
        if end > MAX_SEED:
            raise ValueError(f"seed {end} in {text} is too large: seeds go from 0 to {MAX_SEED}")
        total += end - start + 1
        if total > MAX_SEEDS:
            raise ValueError(f"the seed list {text} has more than {MAX_SEEDS} seeds; split the work into "
                             "several runs")
        ranges.append((start, end))
        seeds.extend(range(start, end + 1))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        if start <= end:
            raise ValueError(f"seed {start} is listed twice in {text}; list each seed once")
    return seeds


def latent_for_seed(seed, z_dim):
    """z [1, z_dim] for a seed: torch.manual_seed(seed); torch.randn(1, z_dim) on the CPU.

    Always drawn on the CPU, so a seed gives the same latent on every device (the official scripts drew
    on CUDA, whose stream differs from the CPU one).
    """
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(1, z_dim, generator=generator)
