"""Cross-resolution consistency of a GRAM-HD generator: does the HR image, down-sampled, give back the LR one?

Protocol (the defaults of `eval.py --metrics cross_resolution`):

1. For each seed, z = latent_for_seed(seed) and the consistency metric's sweep of cameras (prior mean pitch,
   `num_views` yaws over prior mean +- yaw_range), view dependence locked, truncation psi.
2. One render gives the HR image [3, H, H] and the frozen GRAM's LR image [3, H/s, H/s] (s = scale factor).
3. The HR image is down-sampled by s with the anti-aliased bicubic of GRAM-HD's consistency loss
   (`generators.super_resolution.bicubic_downsample`), both are mapped to [0, 1] colours (clamped), and
   PSNR = 10 log10(1 / MSE) is taken per seed over all its views (capped at 100 dB).
   Reported: mean and std of the PSNR over seeds, and the mean absolute difference.

GRAM-HD trains its SR nets with exactly this down-sampling as a loss term, so a high PSNR says the HR image
adds detail without moving or recolouring what the 3D-consistent LR render shows.
"""
import math

import numpy as np
import torch

from generators.super_resolution import bicubic_downsample
from utils.seeds import latent_for_seed

from .consistency import DEFAULT_NUM_VIEWS, DEFAULT_YAW_RANGE, PSNR_CAP, sweep_angles


def check_hd(generator):
    if not getattr(generator, 'is_hd', False):
        raise ValueError(f"the cross-resolution metric compares a GRAM-HD generator's HR and LR images; "
                         f"{type(generator).__name__} renders one resolution only")


@torch.no_grad()
def evaluate_cross_resolution(generator, seeds, num_views=DEFAULT_NUM_VIEWS, yaw_range=DEFAULT_YAW_RANGE,
                              truncation_psi=1.0, device='cpu', progress=None):
    """{psnr_mean, psnr_std, l1_mean, per_seed: [...], protocol: {...}} of a GRAM-HD generator."""
    check_hd(generator)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("the cross-resolution metric needs at least one seed")
    pitch, yaw = sweep_angles(generator.prior, num_views, yaw_range)
    scale = int(generator.scale_factor)
    per_seed = []
    for seed in seeds:
        z = latent_for_seed(seed, generator.z_dim).to(device).expand(pitch.shape[0], -1)
        hr_images, lr_images = generator.render(z, pitch, yaw, truncation_psi=truncation_psi,
                                                lock_view_dependence=True, return_lr=True)
        down = (bicubic_downsample(hr_images.float(), scale).clamp(-1, 1) + 1) / 2
        lr = (lr_images.float().clamp(-1, 1) + 1) / 2
        mse = float((down - lr).pow(2).mean())
        psnr = PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(1 / mse))
        per_seed.append({'seed': int(seed), 'psnr': psnr, 'l1': float((down - lr).abs().mean())})
        if progress is not None:
            progress.update(1)
    psnr = np.array([s['psnr'] for s in per_seed])
    return {
        'psnr_mean': float(psnr.mean()), 'psnr_std': float(psnr.std()),
        'l1_mean': float(np.mean([s['l1'] for s in per_seed])),
        'per_seed': per_seed,
        'protocol': {
            'method': 'PSNR between bicubic_downsample(HR image, scale) and the LR image of the same render, '
                      '[0,1] colours (clamped), per seed over all views; mean/std over seeds',
            'num_seeds': len(seeds), 'seeds': [int(s) for s in seeds],
            'latent': 'utils.seeds.latent_for_seed (as inference.py multi-view renders)',
            'num_views': int(num_views), 'yaw_range': float(yaw_range), 'pitch': float(pitch[0]),
            'hr_size': int(generator.img_size), 'lr_size': int(generator.lr_img_size), 'scale': scale,
            'truncation': float(truncation_psi), 'lock_view_dependence': True, 'psnr_cap_db': PSNR_CAP,
        },
    }


def summary_lines(scores):
    protocol = scores['protocol']
    return [f"cross-resolution: PSNR {scores['psnr_mean']:.2f} +- {scores['psnr_std']:.2f} dB, L1 "
            f"{scores['l1_mean']:.5f} (HR {protocol['hr_size']}^2 down-sampled x{protocol['scale']} vs LR)",
            f"          {protocol['num_seeds']} seed(s), {protocol['num_views']} views, yaw +-"
            f"{protocol['yaw_range']} rad, psi {protocol['truncation']}"]
