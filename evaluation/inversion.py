"""Inversion against the truth: put held-out procedural heads into a GRAM generator and score the novel views.

The procedural renderer knows every head from every camera, so an inverted head can be judged where it
was never seen. Per held-out head (dataset seed --depth_truth_seed, never used in training), two inputs:
- frontal: the true render at the frontal camera;
- side: the true render at yaw +0.3 rad, the hard case: scored on the far side only (views with yaw < 0),
  half of which the input never showed.
Each input is fitted (rendering/inversion.py, at its true pose) and rendered at inference.py's 3x7 views
(yaw -0.4 ... 0.4 x pitch +0.2, 0, -0.2 from frontal), and scored against the true renders there:
- psnr: over the whole image; psnr_head: over the head alone (pixels the background plane covers less than
  half of, in the truth);
- depth_l1: mean |expected depth - true depth| over the central half of the image side;
- input_psnr: at the input view itself; seconds: the fit's wall time.
With `finetune_steps`, each latent fit is followed by `finetune_radiance` (`*_finetuned` rows; the ceiling's
PSNR at the input view is in the plain rows as ceiling_input_psnr, the bar fine-tuning has to pass).
With `estimate_pose`, each input is also fitted from the camera `estimate_pose` finds, refined during the fit
(`*_estimated` rows, with the pose error in radians: the distance of (pitch, yaw) from the truth).
Each input may be fitted together with its mirror view (`mirror_weight`, the symmetry prior of invert.py).
In the same table, per head: the floor (the mean latent) and the ceiling (one latent fitted to all 21 true
views at once: what this generator can express at all).
"""
import math
import time

import numpy as np
import torch

import synthetic_data
from rendering import inversion
from rendering.views import frontal_angles, frontal_offsets, view_offsets

from . import geometry

SIDE_YAW = 0.3
DEFAULT_NUM = 20


def _angles(offsets):
    pitch = torch.cat([frontal_angles(p, y)[0] for p, y in offsets])
    yaw = torch.cat([frontal_angles(p, y)[1] for p, y in offsets])
    return pitch, yaw


def true_views(heads, index, offsets, size):
    """Images [V, 3, S, S] in [-1, 1], depth and plane share [V, 1, S, S] of head `index` at the offsets."""
    def repeat(value):  # the head's row, once per view (heads: tuples and dicts of [B, ...] tensors)
        if isinstance(value, dict):
            return {key: repeat(item) for key, item in value.items()}
        if isinstance(value, tuple):
            return tuple(repeat(item) for item in value)
        return value[index:index + 1].expand(len(offsets), *value.shape[1:])
    one = repeat(heads)
    pitch, yaw = _angles(offsets)
    with torch.no_grad():
        images, depth, plane = synthetic_data.render_heads(one, pitch, yaw, size, return_geometry=True)
    return images * 2 - 1, depth, plane


def render_styles(generator, styles, offsets, size):
    pitch, yaw = _angles(offsets)
    with torch.no_grad():
        images, depth = generator.render(None, pitch, yaw, img_size=size, lock_view_dependence=True,
                                         return_depth=True, styles=tuple(s.expand(len(offsets), -1) for s in styles))
    return images.cpu(), depth.cpu()


def scores(images, depth, true_images, true_depth, true_plane, keep):
    """Mean scores over the views `keep` (a boolean list)."""
    keep = torch.tensor(keep)
    size = images.shape[-1]
    lo, hi = size // 4, size - size // 4
    error = ((images - true_images) ** 2)[keep]
    head = (true_plane < 0.5)[keep].expand_as(error)
    psnr = [inversion.psnr_from_mse(float(e.mean())) for e in error]
    psnr_head = [inversion.psnr_from_mse(float(e[h].mean())) if h.any() else float('nan') for e, h in zip(error, head)]
    depth_l1 = float((depth - true_depth)[keep][..., lo:hi, lo:hi].abs().mean())
    return {'psnr': float(np.mean(psnr)), 'psnr_head': float(np.nanmean(psnr_head)), 'depth_l1': depth_l1}


def evaluate_inversion(generator, num=DEFAULT_NUM, truth_seed=101, size=None, steps=inversion.DEFAULT_STEPS,
                       ceiling_steps=None, progress=None, mirror_weight=inversion.DEFAULT_MIRROR_WEIGHT,
                       estimate_pose=False, finetune_steps=0):
    """Per-head and mean scores of frontal and side inversions, the floor and the ceiling (JSON-ready)."""
    size = int(size or generator.img_size)
    _, _, grid = view_offsets('multiview3x7')[:3]
    heads, _, _ = synthetic_data.heads_for_indices(truth_seed, range(num))
    mean_styles = generator.latent_center(next(generator.parameters()).device)
    ceiling_steps = ceiling_steps or steps
    rows = []
    for index in range(num):
        true_images, true_depth, true_plane = true_views(heads, index, grid, size)
        row = {'head': index}
        every, far = [True] * len(grid), [yaw < 0 for _, yaw in grid]
        floor_images, floor_depth = render_styles(generator, mean_styles, grid, size)
        row['floor'] = scores(floor_images, floor_depth, true_images, true_depth, true_plane, every)
        row['floor_far'] = scores(floor_images, floor_depth, true_images, true_depth, true_plane, far)
        pitch, yaw = _angles(grid)
        ceiling, _, _ = inversion.fit_latent(generator, true_images, pitch, yaw, steps=ceiling_steps)
        ceiling_images, ceiling_depth = render_styles(generator, ceiling, grid, size)
        row['ceiling'] = scores(ceiling_images, ceiling_depth, true_images, true_depth, true_plane, every)
        row['ceiling_far'] = scores(ceiling_images, ceiling_depth, true_images, true_depth, true_plane, far)
        for name, offset, keep in (('frontal', (0.0, 0.0), every), ('side', (0.0, SIDE_YAW), far)):
            input_image, _, _ = true_views(heads, index, [offset], size)
            pitch, yaw = _angles([offset])
            start = time.time()
            styles, history, _ = inversion.fit_latent(generator, input_image, pitch, yaw, steps=steps,
                                                      mirror_weight=mirror_weight)
            seconds = time.time() - start
            images, depth = render_styles(generator, styles, grid, size)
            ceiling_input, _ = render_styles(generator, ceiling, [offset], size)
            row[name] = dict(scores(images, depth, true_images, true_depth, true_plane, keep),
                             input_psnr=inversion.psnr_from_mse(history[-1]), seconds=seconds,
                             ceiling_input_psnr=inversion.psnr_from_mse(float(((ceiling_input - input_image) ** 2)
                                                                              .mean())))
            if finetune_steps:
                start = time.time()
                tuned, tuned_history = inversion.finetune_radiance(generator, styles, input_image, pitch, yaw,
                                                                   finetune_steps)
                images, depth = render_styles(tuned, styles, grid, size)
                row[name + '_finetuned'] = dict(scores(images, depth, true_images, true_depth, true_plane, keep),
                                                input_psnr=inversion.psnr_from_mse(tuned_history[-1]),
                                                seconds=time.time() - start)
            if estimate_pose:
                start = time.time()
                pose = inversion.estimate_pose(generator, input_image)
                pitch, yaw = _angles([pose])
                styles, history, (pitch, yaw) = inversion.fit_latent(
                    generator, input_image, pitch, yaw, steps=steps, mirror_weight=mirror_weight,
                    pose_lr=inversion.DEFAULT_POSE_LR)
                seconds = time.time() - start
                images, depth = render_styles(generator, styles, grid, size)
                found = frontal_offsets(pitch[0], yaw[0])
                row[name + '_estimated'] = dict(
                    scores(images, depth, true_images, true_depth, true_plane, keep),
                    input_psnr=inversion.psnr_from_mse(history[-1]), seconds=seconds,
                    pose_error=math.hypot(found[0] - offset[0], found[1] - offset[1]),
                    yaw_error=abs(found[1] - offset[1]), pitch_error=abs(found[0] - offset[0]))
        rows.append(row)
        if progress is not None:
            progress.update(1)
    keys = [key for key in rows[0] if key != 'head']
    means = {key: {metric: float(np.mean([row[key][metric] for row in rows])) for metric in rows[0][key]}
             for key in keys}
    protocol = {'num': num, 'truth_seed': truth_seed, 'image_size': size, 'steps': steps,
                'estimate_pose': bool(estimate_pose), 'finetune_steps': int(finetune_steps),
                'finetune': f"rendering/inversion.finetune_radiance (lr {inversion.DEFAULT_FINETUNE_LR}, geometry "
                            f"weight {inversion.DEFAULT_GEOMETRY_WEIGHT}, 8 prior views)",
                'ceiling_steps': ceiling_steps, 'side_yaw': SIDE_YAW,
                'views': '3x7: yaw linspace(-0.4, 0.4, 7) x pitch +0.2, 0, -0.2 from frontal; side input scored '
                         'on yaw < 0 only', 'fit': f"rendering/inversion.fit_latent (lr {inversion.DEFAULT_LR}, "
                                                  f"mean pull {inversion.DEFAULT_MEAN_PULL}, noise "
                                                  f"{inversion.DEFAULT_NOISE}, mirror view weight {mirror_weight}), "
                                                  "at the true input pose"}
    return {'mean': means, 'per_head': rows, 'protocol': protocol}


def summary_lines(result):
    mean = result['mean']
    lines = [f"inversion ({result['protocol']['num']} held-out heads of seed {result['protocol']['truth_seed']} at "
             f"{result['protocol']['image_size']}^2, {result['protocol']['steps']} steps):"]
    for key, label in (('frontal', 'frontal input, all 21 views'), ('ceiling', 'ceiling (fit to all 21)'),
                       ('floor', 'floor (mean latent)'), ('side', 'side input (yaw +0.3), far side'),
                       ('ceiling_far', 'ceiling, far side'), ('floor_far', 'floor, far side')):
        row = mean[key]
        extra = (f", input view {row['input_psnr']:.2f} dB, {row['seconds']:.1f} s per fit"
                 if 'input_psnr' in row else '')
        lines.append(f"  {label:34s} PSNR {row['psnr']:.2f} dB, head {row['psnr_head']:.2f} dB, central depth L1 "
                     f"{row['depth_l1']:.4f}{extra}")
    for key, label in (('frontal_finetuned', 'frontal input, fine-tuned'), ('side_finetuned', 'side input, fine-tuned')):
        if key in mean:
            row = mean[key]
            lines.append(f"  {label:34s} PSNR {row['psnr']:.2f} dB, head {row['psnr_head']:.2f} dB, central depth "
                         f"L1 {row['depth_l1']:.4f}, input view {row['input_psnr']:.2f} dB (the ceiling's there: "
                         f"{mean[key.split('_')[0]]['ceiling_input_psnr']:.2f} dB), {row['seconds']:.1f} s")
    for key, label in (('frontal_estimated', 'frontal input, pose estimated'),
                       ('side_estimated', 'side input, pose estimated')):
        if key in mean:
            row = mean[key]
            lines.append(f"  {label:34s} PSNR {row['psnr']:.2f} dB, head {row['psnr_head']:.2f} dB, central depth "
                         f"L1 {row['depth_l1']:.4f}, pose error {row['pose_error']:.3f} rad (yaw "
                         f"{row['yaw_error']:.3f}, pitch {row['pitch_error']:.3f}), {row['seconds']:.1f} s per image")
    return lines


def check_comparable(generator):
    if getattr(generator, 'is_hd', False):
        raise ValueError("the inversion metric fits GRAM checkpoints; GRAM-HD is not supported yet")
    geometry.check_comparable(generator, 'the inversion metric')
