"""Geometry against the truth: a generator's expected-depth maps compared with the procedural heads'.

Images can look right while the geometry is wrong: a GRAM generator can paint its subject on the
background plane (`generators/gram.py` BACKGROUND_PLANE_Z, where the procedural background lies too), and a
reprojection-based consistency score cannot tell, since a plane reprojects exactly. The procedural
renderer (`synthetic_data.py`) knows every head's depth, so a model trained on that data is judged here by:

- central_depth: mean expected depth over the central region (the central half of the image side), in world
  units along the ray (the camera is at radius 1; the plane is at about 1.12, the true heads at about 0.98);
- in_front: the fraction of central pixels painted mostly in front of the plane: the plane carries less than
  half of the pixel's composite weight and the expected depth is more than IN_FRONT_MARGIN in front of it
  (depth alone is not enough: 10% of weight on surfaces in front pulls the depth of a plane pixel forward);
- plane_share: the mean composite weight the background plane carries over the central pixels;
- mean_map_mad: mean |mean generated depth map - mean true depth map| over the central pixels;
- depth_swd: sliced Wasserstein distance (x1e3, world units) between the sets of central depth maps, as
  vectors, without any normalisation: it sees both the shapes and the absolute depths.
Each at the frontal camera and at yaw +-0.3 rad (pitch at the prior mean), for generated latents (seeds
0..N-1, psi as given, view dependence locked) and N true heads of a held-out procedural seed.
"""
import math

import numpy as np
import torch

import synthetic_data
from generators import camera
from generators.gram import GramGenerator
from generators.gramhd import GramHDGenerator
from utils.seeds import latent_for_seed

from .swd import sliced_wasserstein

VIEWS = {'frontal': 0.0, 'yaw+0.3': 0.3, 'yaw-0.3': -0.3}  # yaw offsets from the prior mean (radians)
IN_FRONT_MARGIN = 0.01  # world units; the true heads' surfaces are 0.10-0.15 in front of the plane
DEFAULT_TRUTH_SEED = 101  # the held-out procedural seed also used for SWD in README (training data: seed 0)
DEFAULT_NUM = 64
SWD_SCALE = 1e3
PROTOCOL = ("expected depth (distance along the ray) of N generated latents (seeds 0..N-1, view dependence "
            "locked) and N procedural heads of a held-out dataset seed, rendered at the frontal camera and at "
            "yaw +-0.3 rad (pitch = prior mean); central region = the central half of the image side; in_front: "
            f"plane weight < 0.5 and depth < plane distance - {IN_FRONT_MARGIN}; plane_share: the background "
            "plane's composite weight; "
            "mean_map_mad: |mean generated map - mean true map| over central pixels; depth_swd: sliced "
            f"Wasserstein x{SWD_SCALE:g} between the central depth maps as vectors (world units, 4 x 128 "
            "random directions, seed 123)")


def central(maps):
    """The central half of each map's side: [N, 1, S, S] -> [N, 1, S/2, S/2] (the subject, not the border)."""
    size = maps.shape[-1]
    start, end = size // 4, size - size // 4
    return maps[..., start:end, start:end]


def view_angles(prior, yaw_offset):
    """(pitch, yaw) float64 of a view: the prior mean with the yaw offset (official labels)."""
    return float(prior['v_mean']), float(prior['h_mean']) + yaw_offset


def plane_distance_map(pitch, yaw, size, fov):
    """Distance along each pixel's ray to the background plane z = BACKGROUND_Z: [1, 1, S, S]."""
    origins = camera.origins_from_angles(torch.tensor([pitch]), torch.tensor([yaw]))
    _, ray_origins, ray_directions = camera.world_rays(origins, size, fov)
    distance = (synthetic_data.BACKGROUND_Z - ray_origins[..., 2]) / ray_directions[..., 2]
    return distance.reshape(1, 1, size, size)


def true_geometry(truth_seed, num, size, pitch, yaw):
    """Depth and plane share maps [num, 1, S, S] of the first `num` heads of procedural dataset `truth_seed`,
    all seen from one camera (not their dataset poses)."""
    heads, _, _ = synthetic_data.heads_for_indices(truth_seed, range(num))
    pitch_all = torch.full((num,), pitch, dtype=torch.float64)
    yaw_all = torch.full((num,), yaw, dtype=torch.float64)
    with torch.no_grad():
        _, depth, plane_share = synthetic_data.render_heads(heads, pitch_all, yaw_all, size, return_geometry=True)
    return depth, plane_share


def generated_geometry(generator, num, size, pitch, yaw, truncation, device, batch_size=16):
    """Depth and background-plane weight maps [num, 1, S, S] of latents seeds 0..num-1 (float32, CPU)."""
    depths, weights = [], []
    for start in range(0, num, batch_size):
        seeds = range(start, min(num, start + batch_size))
        z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in seeds]).to(device)
        with torch.no_grad():
            _, depth, plane_weight = generator.render(
                z, torch.full((len(seeds),), pitch, dtype=torch.float64),
                torch.full((len(seeds),), yaw, dtype=torch.float64), img_size=size, truncation_psi=truncation,
                lock_view_dependence=True, return_depth=True, return_background_weight=True)
        depths.append(depth.float().cpu())
        weights.append(plane_weight.float().cpu())
    return torch.cat(depths), torch.cat(weights)


def map_scores(depth, plane_weight, plane_distance):
    """Scores of one set of maps [N, 1, S, S] against the plane distances [1, 1, S, S]."""
    depth_c, weight_c, plane_c = central(depth), central(plane_weight), central(plane_distance)
    return {'central_depth': float(depth_c.mean()),
            'in_front': float(((weight_c < 0.5) & (depth_c < plane_c - IN_FRONT_MARGIN)).float().mean()),
            'plane_share': float(weight_c.mean())}


def compare_sets(generated_depth, true_depth, seed=123):
    """mean_map_mad and depth_swd between two sets of depth maps [N, 1, S, S]."""
    gen_c, true_c = central(generated_depth), central(true_depth)
    mad = float((gen_c.mean(0) - true_c.mean(0)).abs().mean())
    rng = np.random.default_rng(seed)
    distance = sliced_wasserstein(gen_c.flatten(1).double(), true_c.flatten(1).double(), rng)
    return {'mean_map_mad': mad, 'depth_swd': SWD_SCALE * distance}


def check_comparable(generator, metric='the depth metric'):
    """The truth is rendered with the procedural data's camera: a generator with another fov or without
    GRAM's background plane at the data's plane cannot be compared map for map."""
    fov = float(generator.camera['fov'])
    if not math.isclose(fov, synthetic_data.FOV):
        raise ValueError(f"{metric} compares with the procedural heads (fov {synthetic_data.FOV} deg); "
                         f"this generator renders with fov {fov:g}")
    if not isinstance(generator, GramGenerator) or isinstance(generator, GramHDGenerator):
        raise ValueError(f"{metric} needs a GRAM generator (GramGenerator), got {type(generator).__name__}")


def evaluate_geometry(generator, num=DEFAULT_NUM, size=None, truncation=1.0, truth_seed=DEFAULT_TRUTH_SEED,
                      device='cpu', views=VIEWS, progress=None):
    """The scores above per view, for the generator and for the truth. Returns a JSON-ready dict.

    A GRAM-HD generator is scored by its GRAM part (`gram_generator()`, at the LR size by default): its
    super-resolution re-textures the manifolds but the geometry is the frozen stage-1 GRAM's."""
    if isinstance(generator, GramHDGenerator):
        generator = generator.gram_generator()
    check_comparable(generator)
    size = int(size or generator.img_size)
    if size < 4:
        raise ValueError(f"depth maps need at least 4x4 pixels, got {size}")
    if num < 2:
        raise ValueError(f"the depth metric needs at least 2 latents, got {num}")
    fov = float(generator.camera['fov'])
    result = {'views': {}}
    for name, yaw_offset in views.items():
        pitch, yaw = view_angles(generator.prior, yaw_offset)
        plane_distance = plane_distance_map(pitch, yaw, size, fov)
        gen_depth, gen_weight = generated_geometry(generator, num, size, pitch, yaw, truncation, device)
        true_depth, true_plane = true_geometry(truth_seed, num, size, pitch, yaw)
        result['views'][name] = {'generated': {**map_scores(gen_depth, gen_weight, plane_distance),
                                               **compare_sets(gen_depth, true_depth)},
                                 'truth': map_scores(true_depth, true_plane, plane_distance)}
        if progress is not None:
            progress.update(1)
    for who in ('generated', 'truth'):
        keys = result['views']['frontal'][who].keys()
        result[who] = {key: float(np.mean([view[who][key] for view in result['views'].values()])) for key in keys}
    result['protocol'] = {'definition': PROTOCOL, 'num': num, 'image_size': size, 'truncation': float(truncation),
                          'truth_seed': truth_seed, 'views': dict(views), 'fov': fov}
    return result


def summary_lines(result):
    """One line per view: generated vs true scores."""
    lines = []
    for name, view in result['views'].items():
        g, t = view['generated'], view['truth']
        lines.append(f"depth {name:8s}: central depth {g['central_depth']:.4f} (truth {t['central_depth']:.4f}), "
                     f"in front of plane {100 * g['in_front']:.1f}% (truth {100 * t['in_front']:.1f}%), "
                     f"plane share {100 * g['plane_share']:.1f}% (truth {100 * t['plane_share']:.1f}%), "
                     f"mean-map MAD {g['mean_map_mad']:.4f}, depth SWD {g['depth_swd']:.2f}")
    protocol = result['protocol']
    lines.append(f"depth protocol: {protocol['num']} latents vs {protocol['num']} procedural heads (seed "
                 f"{protocol['truth_seed']}) at {protocol['image_size']}x{protocol['image_size']}, "
                 f"psi {protocol['truncation']:g}")
    return lines
