"""3D consistency by depth reprojection: how well one rendered view predicts its neighbour.

Protocol (the defaults of `eval.py --metrics consistency`):

1. For each seed, z = latent_for_seed(seed) (the latent of `inference.py`'s multi-view renders) and a sweep of
   `num_views` (7) cameras at the prior's mean pitch, with yaw = prior mean + linspace(-yaw_range, +yaw_range)
   (yaw_range 0.3 rad, so neighbours are 0.1 rad apart). Every view is rendered at the model resolution with
   its depth map (distance along the ray), view dependence locked (as the official multi-view renders: a
   view-dependent colour is not an inconsistency of the geometry) and the given truncation psi.
2. For every pair of neighbouring views, in both directions (target t, source s): each target pixel is
   lifted to 3D with its rendered depth (`generators.camera.unproject_depth`), projected into the source
   camera (`project_points`) and the source image and depth are sampled there (bilinear, pixel centres at
   NDC +-1, i.e. grid_sample with align_corners=True).
3. A target pixel counts as co-visible when it lands inside the source image, in front of the camera, both
   depths are finite, and the depth test passes: |distance from the source camera - source depth there|
   <= depth_tolerance (0.01) x that distance. Pixels failing it are occluded in (or out of) the source view.
4. Errors are taken on [0, 1] colours over the co-visible pixels of all pairs of a seed pooled together:
   L1 = mean |target - warped source|, PSNR = 10 log10(1 / MSE) (capped at 100 dB when MSE is 0).
   Reported: mean and std over seeds of PSNR and L1, plus the mean co-visible fraction.

A renderer that is a true function of 3D space scores a high PSNR, limited only by bilinear resampling
and by depth being a single number per pixel (GRAM's depth is the alpha-weighted mean of the manifold
hits, exact for an opaque first surface). 2D image-space effects that move content independently per
view (upsampler texture sticking, per-view noise) lower it. Absolute values depend on resolution, the yaw
step and image content, so compare models only under the same protocol (it is written to the JSON).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from generators import camera
from utils.seeds import latent_for_seed

DEFAULT_NUM_VIEWS = 7
DEFAULT_YAW_RANGE = 0.3
DEFAULT_DEPTH_TOLERANCE = 0.01
PSNR_CAP = 100.0


def mean_pitch(prior):
    """The pitch at the centre of a camera prior (`G.prior`), in the official label convention."""
    mode = prior.get('mode', 'gaussian')
    if mode == 'spherical_uniform':
        # sample_camera_angles maps v = v_mean / pi to pitch = arccos(1 - 2v).
        v = min(max(prior['v_mean'] / math.pi, 1e-5), 1 - 1e-5)
        return math.acos(1 - 2 * v)
    return float(prior['v_mean'])


def sweep_angles(prior, num_views=DEFAULT_NUM_VIEWS, yaw_range=DEFAULT_YAW_RANGE):
    """(pitch [V], yaw [V]) float64 of a horizontal sweep centred on the prior's mean pose."""
    if num_views < 2:
        raise ValueError(f"the consistency sweep needs at least 2 views, got {num_views}")
    if not yaw_range > 0:
        raise ValueError(f"the consistency yaw range must be > 0 radians, got {yaw_range}")
    yaw = float(prior['h_mean']) + torch.linspace(-yaw_range, yaw_range, num_views, dtype=torch.float64)
    pitch = torch.full((num_views,), mean_pitch(prior), dtype=torch.float64)
    return pitch, yaw


def warp_to_target(target_depth, target_origin, source_image, source_depth, source_origin, fov,
                   depth_tolerance=DEFAULT_DEPTH_TOLERANCE):
    """Warp one source view into a target view using the target's depth.

    target_depth/source_depth [1, 1, H, W], source_image [1, C, H, W], origins [1, 3].
    Returns (warped source [1, C, H, W], co-visibility mask [H, W] bool).
    """
    _, _, height, width = target_depth.shape
    points = camera.unproject_depth(target_origin, target_depth, fov).reshape(1, -1, 3)
    ndc, distance, in_front = camera.project_points(source_origin, points, fov)
    # grid_sample's y runs down the rows while NDC y runs up (row 0 = +y).
    grid = torch.stack([ndc[..., 0], -ndc[..., 1]], dim=-1).reshape(1, height, width, 2)
    grid = torch.nan_to_num(grid, nan=2.0)  # NaN depth -> a point outside the image, masked below
    warped = F.grid_sample(source_image, grid, mode='bilinear', padding_mode='border', align_corners=True)
    source_depth_there = F.grid_sample(source_depth, grid, mode='bilinear', padding_mode='border',
                                       align_corners=True).reshape(-1)
    inside = (ndc.abs() <= 1).all(dim=-1).reshape(-1) & in_front.reshape(-1)
    finite = torch.isfinite(target_depth.reshape(-1)) & torch.isfinite(source_depth_there)
    visible = (distance.reshape(-1) - source_depth_there).abs() <= depth_tolerance * distance.reshape(-1)
    mask = inside & finite & visible
    return warped, mask.reshape(height, width)


def neighbour_pairs(num_views):
    """(target, source) index pairs: every pair of neighbouring views, in both directions."""
    pairs = []
    for index in range(num_views - 1):
        pairs += [(index, index + 1), (index + 1, index)]
    return pairs


def reprojection_scores(images, depths, pitch, yaw, fov, depth_tolerance=DEFAULT_DEPTH_TOLERANCE):
    """Masked reprojection error of one sweep.

    images [V, 3, H, W] in [-1, 1]; depths [V, 1, h, w] (distance along the ray; resized to H x W when the
    renderer's depth has another resolution, e.g. GRAM-HD's low-resolution manifolds); pitch/yaw [V].
    Returns dict(psnr, l1, covisible) over the co-visible pixels of all neighbour pairs.
    """
    images = images.detach().double().cpu()
    depths = depths.detach().double().cpu()
    num_views, _, height, width = images.shape
    if height != width:
        raise ValueError(f"reprojection_scores: square images expected, got {height}x{width}")
    if depths.shape[0] != num_views:
        raise ValueError(f"reprojection_scores: {num_views} images but {depths.shape[0]} depth maps")
    if depths.shape[-2:] != images.shape[-2:]:
        # Pixel centres sit at NDC +-1 at every resolution, which is what align_corners=True resamples.
        depths = F.interpolate(depths, size=(height, width), mode='bilinear', align_corners=True)
    origins = camera.origins_from_angles(pitch, yaw).double()
    colors = (images + 1) / 2
    abs_sum = sq_sum = 0.0
    covisible = 0
    pairs = neighbour_pairs(num_views)
    for target, source in pairs:
        warped, mask = warp_to_target(depths[target:target + 1], origins[target:target + 1],
                                      colors[source:source + 1], depths[source:source + 1],
                                      origins[source:source + 1], fov, depth_tolerance)
        difference = (colors[target] - warped[0])[:, mask]
        abs_sum += float(difference.abs().sum())
        sq_sum += float((difference ** 2).sum())
        covisible += int(mask.sum())
    if covisible == 0:
        raise ValueError("no co-visible pixels between neighbouring views: the yaw step is too large for the "
                         "image, or the depth maps are not finite (check the renderer's depth output)")
    values = covisible * colors.shape[1]
    mse = sq_sum / values
    psnr = PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else 10 * math.log10(1 / mse)
    return {'psnr': psnr, 'l1': abs_sum / values, 'covisible': covisible / (len(pairs) * height * width)}


@torch.no_grad()
def render_sweep(generator, seed, pitch, yaw, truncation_psi=1.0, device='cpu', image_size=None):
    """Images [V, 3, H, W] and depths [V, 1, h, w] of one latent seen from every camera of the sweep, at
    `image_size` (default: the model resolution; GRAM-HD: its HR size)."""
    z = latent_for_seed(seed, generator.z_dim).to(device).expand(pitch.shape[0], -1)
    images, depths = generator.render(z, pitch, yaw, img_size=image_size, truncation_psi=truncation_psi,
                                      lock_view_dependence=True, return_depth=True)
    return images, depths


def evaluate_consistency(generator, seeds, num_views=DEFAULT_NUM_VIEWS, yaw_range=DEFAULT_YAW_RANGE,
                         truncation_psi=1.0, depth_tolerance=DEFAULT_DEPTH_TOLERANCE, device='cpu',
                         progress=None, render_size=None):
    """The consistency score of a generator: {psnr_mean, psnr_std, l1_mean, l1_std, covisible_mean,
    per_seed: [...], protocol: {...}}."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("the consistency metric needs at least one seed")
    pitch, yaw = sweep_angles(generator.prior, num_views, yaw_range)
    fov = generator.camera['fov']
    per_seed = []
    image_size = None
    for seed in seeds:
        images, depths = render_sweep(generator, seed, pitch, yaw, truncation_psi, device, render_size)
        image_size = images.shape[-1]
        scores = reprojection_scores(images, depths, pitch, yaw, fov, depth_tolerance)
        per_seed.append(dict(seed=int(seed), **scores))
        if progress is not None:
            progress.update(1)
    psnr = np.array([s['psnr'] for s in per_seed])
    l1 = np.array([s['l1'] for s in per_seed])
    return {
        'psnr_mean': float(psnr.mean()), 'psnr_std': float(psnr.std()),
        'l1_mean': float(l1.mean()), 'l1_std': float(l1.std()),
        'covisible_mean': float(np.mean([s['covisible'] for s in per_seed])),
        'per_seed': per_seed,
        'protocol': {
            'method': 'depth reprojection between neighbouring views (both directions), bilinear sampling, '
                      'masked by bounds and a relative depth test; errors on [0,1] colours; mean/std over seeds',
            'num_seeds': len(seeds), 'seeds': [int(s) for s in seeds],
            'latent': 'utils.seeds.latent_for_seed (as inference.py multi-view renders)',
            'num_views': int(num_views), 'yaw_range': float(yaw_range),
            'pitch': float(pitch[0]), 'yaw_center': float(generator.prior['h_mean']),
            'image_size': int(image_size), 'fov': float(fov), 'truncation': float(truncation_psi),
            'lock_view_dependence': True, 'depth_tolerance': float(depth_tolerance),
            'psnr_cap_db': PSNR_CAP,
        },
    }
