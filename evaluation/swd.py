"""Sliced Wasserstein distance on Laplacian-pyramid patches (the SWD of Karras et al., ProGAN, 2018).

An offline image-distribution metric: it needs no downloaded weights, so it runs on any machine.

Protocol (printed beside every number by `eval.py`):
- images in [0, 255] RGB, all of one size S (a power of two >= 16);
- Laplacian pyramid with the 5-tap binomial kernel [1, 4, 6, 4, 1]/16 from S down to 16x16; each level
  is reported separately, the coarsest one being the 16x16 Gaussian image itself;
- per image and level, 128 random 7x7x3 neighbourhoods (a fixed-seed RNG);
- descriptors of each set are normalised per channel (mean and std over all descriptors of that set);
- SWD = mean over 4 repeats of the mean absolute difference of the sorted projections onto 128 random
  unit directions; reported x1e3, per level and averaged over levels.
Lower is better; two sets of real images of the same distribution give the floor.
"""
import numpy as np
import torch
import torch.nn.functional as F

PATCH_SIZE = 7
PATCHES_PER_IMAGE = 128
DIRECTIONS = 128
REPEATS = 4
MIN_LEVEL_SIZE = 16
SCALE = 1e3


def _binomial_kernel(device):
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device) / 16
    return (taps[:, None] * taps[None, :]).expand(3, 1, 5, 5).contiguous()


def _blur(images, kernel):
    return F.conv2d(F.pad(images, (2, 2, 2, 2), mode='reflect'), kernel, groups=3)


def laplacian_pyramid(images):
    """images [N, 3, S, S] float -> list of levels, finest first, the last one the 16^2 Gaussian image."""
    kernel = _binomial_kernel(images.device)
    levels = []
    current = images
    while current.shape[-1] > MIN_LEVEL_SIZE:
        smaller = _blur(current, kernel)[..., ::2, ::2]
        upsampled = torch.zeros_like(current)
        upsampled[..., ::2, ::2] = smaller * 4  # zero-insertion; x4 keeps the mean after the blur
        levels.append(current - _blur(upsampled, kernel))
        current = smaller
    levels.append(current)
    return levels


def level_descriptors(level, rng):
    """128 random 7x7 neighbourhoods per image: [N * 128, 3, 7, 7]."""
    count, _, height, width = level.shape
    rows = torch.from_numpy(rng.integers(0, height - PATCH_SIZE + 1, size=(count, PATCHES_PER_IMAGE)))
    cols = torch.from_numpy(rng.integers(0, width - PATCH_SIZE + 1, size=(count, PATCHES_PER_IMAGE)))
    patches = level.unfold(2, PATCH_SIZE, 1).unfold(3, PATCH_SIZE, 1)  # [N, 3, H', W', 7, 7]
    image_index = torch.arange(count)[:, None].expand(-1, PATCHES_PER_IMAGE)
    picked = patches.permute(0, 2, 3, 1, 4, 5)[image_index, rows, cols]  # [N, 128, 3, 7, 7]
    return picked.reshape(-1, 3, PATCH_SIZE, PATCH_SIZE)


def normalise(descriptors):
    mean = descriptors.mean(dim=(0, 2, 3), keepdim=True)
    std = descriptors.std(dim=(0, 2, 3), keepdim=True)
    return ((descriptors - mean) / std).reshape(descriptors.shape[0], -1)


def sliced_wasserstein(a, b, rng):
    """Mean over repeats of the mean |sorted(a.d) - sorted(b.d)| over random unit directions d."""
    if a.shape[0] != b.shape[0]:
        count = min(a.shape[0], b.shape[0])  # equal-size sets: subsample the larger one, deterministically
        a = a[torch.from_numpy(rng.permutation(a.shape[0])[:count])]
        b = b[torch.from_numpy(rng.permutation(b.shape[0])[:count])]
    results = []
    for _ in range(REPEATS):
        directions = torch.from_numpy(rng.standard_normal((a.shape[1], DIRECTIONS))).to(a.dtype)
        directions = directions / directions.norm(dim=0, keepdim=True)
        projected_a = torch.sort(a @ directions, dim=0).values
        projected_b = torch.sort(b @ directions, dim=0).values
        results.append((projected_a - projected_b).abs().mean())
    return float(torch.stack(results).mean())


def swd(images_a, images_b, seed=123):
    """SWD x1e3 between two image sets (uint8 or float in [0, 255], [N, 3, S, S]).

    Returns {'per_level': {size: value}, 'mean': value}.
    """
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(f"SWD needs images of one size: got {tuple(images_a.shape[1:])} and "
                         f"{tuple(images_b.shape[1:])}")
    size = images_a.shape[-1]
    if size < MIN_LEVEL_SIZE or size & (size - 1):
        raise ValueError(f"SWD needs square images whose side is a power of two >= {MIN_LEVEL_SIZE}, got {size}")
    rng = np.random.default_rng(seed)
    pyramid_a = laplacian_pyramid(images_a.float())
    pyramid_b = laplacian_pyramid(images_b.float())
    per_level = {}
    for level_a, level_b in zip(pyramid_a, pyramid_b):
        descriptors_a = normalise(level_descriptors(level_a, rng))
        descriptors_b = normalise(level_descriptors(level_b, rng))
        per_level[level_a.shape[-1]] = SCALE * sliced_wasserstein(descriptors_a, descriptors_b, rng)
    return {'per_level': per_level, 'mean': float(np.mean(list(per_level.values())))}


PROTOCOL = ('ProGAN SWD x1e3: Laplacian pyramid (binomial 5-tap) down to 16^2, 128 random 7x7 patches per image '
            'and level, per-channel normalisation per set, 4 repeats x 128 random directions; mean over levels')
