"""Procedural 3D "heads": a dataset with known poses that anyone can generate offline in minutes.

Each object is a union of ellipsoids (a head, a nose, two eyes, two ears, a hair cap) with random sizes,
colours and a procedural texture, lit by a random Lambertian light, in front of a textured background
plane at world z = -0.12 (where GRAM's own background plane is). Cameras come from the FFHQ prior of the
configs (yaw ~ N(pi/2, 0.3), pitch ~ N(pi/2, 0.155), fov 12 deg, radius 1) and rays are those of
`generators.camera`, so the conventions are exactly the generator's. The object lies inside the
0.88-1.12 ray range (within 0.12 of the world origin).

Poses are written as FFHQ-style `.mat` files (key `angle` = [rx, ry, 0]) chosen so that the official
FFHQ conversion (pitch = pi/2 - (rx - 0.1), yaw = pi/2 + ry) returns the true camera pose; the folder
therefore trains with the `FFHQ` dataset class unchanged.
"""
import math
import os

import numpy as np
import torch

from generators import camera

FACE_PRIOR = dict(h_stddev=0.3, v_stddev=0.155, h_mean=math.pi / 2, v_mean=math.pi / 2, mode='gaussian')
FOV = 12
BACKGROUND_Z = -0.12
SUPERSAMPLE = 2  # rays per pixel side, averaged: anti-aliasing keeps 64^2 images free of jaggies


def _uniform(rng, low, high, n):
    return low + (high - low) * torch.rand(n, generator=rng)


def random_heads(n, rng):
    """Parameters of n objects: a dict of tensors, each [n, ...]. Deterministic for the generator state."""
    head_radii = torch.stack([_uniform(rng, 0.058, 0.070, n), _uniform(rng, 0.068, 0.082, n),
                              _uniform(rng, 0.056, 0.066, n)], -1)
    head_center = torch.stack([torch.zeros(n), _uniform(rng, -0.008, 0.008, n), _uniform(rng, -0.03, -0.018, n)], -1)
    front = head_center[:, 2] + head_radii[:, 2]
    nose_size = _uniform(rng, 0.010, 0.016, n)
    eye_spacing = _uniform(rng, 0.020, 0.028, n)
    eye_height = _uniform(rng, 0.008, 0.018, n)
    ear_height = _uniform(rng, -0.01, 0.01, n)
    colours = {
        'skin': _palette(rng, n, [(0.93, 0.76, 0.62), (0.78, 0.57, 0.42), (0.55, 0.38, 0.26), (0.45, 0.62, 0.85),
                                  (0.55, 0.80, 0.45), (0.85, 0.55, 0.75)]),
        'hair': _palette(rng, n, [(0.12, 0.08, 0.05), (0.45, 0.28, 0.12), (0.85, 0.70, 0.35), (0.55, 0.10, 0.10),
                                  (0.20, 0.20, 0.60), (0.9, 0.9, 0.9)]),
        'eye': _palette(rng, n, [(0.05, 0.05, 0.08), (0.15, 0.30, 0.55), (0.20, 0.40, 0.15)]),
        'nose': None,
        'background': torch.rand(n, 3, generator=rng) * 0.8 + 0.1,
    }
    colours['nose'] = torch.clamp(colours['skin'] * _uniform(rng, 0.75, 0.9, n)[:, None] +
                                  torch.tensor([0.08, 0.0, 0.0]), 0, 1)
    return {
        'head': (head_center, head_radii),
        'nose': (torch.stack([torch.zeros(n), head_center[:, 1] - _uniform(rng, 0.0, 0.01, n), front - 0.004], -1),
                 torch.stack([nose_size * 0.8, nose_size * 1.3, nose_size * 1.2], -1)),
        'eye_left': (torch.stack([-eye_spacing, head_center[:, 1] + eye_height, front - 0.012], -1),
                     (nose_size * 0.75)[:, None].expand(n, 3)),
        'eye_right': (torch.stack([eye_spacing, head_center[:, 1] + eye_height, front - 0.012], -1),
                      (nose_size * 0.75)[:, None].expand(n, 3)),
        'ear_left': (torch.stack([-head_radii[:, 0] - 0.002, head_center[:, 1] + ear_height, head_center[:, 2]], -1),
                     torch.stack([_uniform(rng, 0.008, 0.012, n), _uniform(rng, 0.016, 0.024, n),
                                  _uniform(rng, 0.010, 0.014, n)], -1)),
        'ear_right': (torch.stack([head_radii[:, 0] + 0.002, head_center[:, 1] + ear_height, head_center[:, 2]], -1),
                      torch.stack([_uniform(rng, 0.008, 0.012, n), _uniform(rng, 0.016, 0.024, n),
                                   _uniform(rng, 0.010, 0.014, n)], -1)),
        # The hair cap: a slightly larger ellipsoid shifted up and back, visible on top and behind.
        'hair': (head_center + torch.stack([torch.zeros(n), _uniform(rng, 0.006, 0.016, n),
                                            _uniform(rng, -0.015, -0.005, n)], -1),
                 head_radii * torch.stack([_uniform(rng, 1.02, 1.06, n), _uniform(rng, 0.92, 1.0, n),
                                           _uniform(rng, 0.95, 1.02, n)], -1)),
        'colours': colours,
        'texture': {'frequency': _uniform(rng, 60, 160, n), 'phase': torch.rand(n, 3, generator=rng) * 6.28,
                    'strength': _uniform(rng, 0.03, 0.12, n)},
        'light': torch.nn.functional.normalize(torch.stack([_uniform(rng, -0.7, 0.7, n), _uniform(rng, 0.1, 0.8, n),
                                                            torch.ones(n)], -1), dim=-1),
    }


def _palette(rng, n, colours):
    base = torch.tensor(colours, dtype=torch.float32)
    index = torch.randint(len(colours), (n,), generator=rng)
    jitter = (torch.rand(n, 3, generator=rng) - 0.5) * 0.12
    return torch.clamp(base[index] + jitter, 0, 1)


def _ray_ellipsoids(origins, directions, centers, radii):
    """Nearest positive hit distances [B, R, P] (inf where missed) of rays [B, R, 3] with P ellipsoids [B, P, 3]."""
    o = (origins[:, :, None] - centers[:, None]) / radii[:, None]
    d = directions[:, :, None] / radii[:, None]
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1
    disc = b * b - a * c
    t = (-b - torch.sqrt(disc.clamp(min=0))) / a
    return torch.where((disc > 0) & (t > 0), t, torch.full_like(t, math.inf))


def _texture(points, texture):
    """A smooth procedural pattern in [-1, 1] per point: sums of sines of world coordinates."""
    f = texture['frequency'][:, None]
    phase = texture['phase']
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    pattern = (torch.sin(f * x + phase[:, None, 0]) * torch.sin(f * 0.7 * y + phase[:, None, 1]) +
               torch.sin(f * 0.5 * (x + z) + phase[:, None, 2]))
    return pattern / 2


PARTS = ['head', 'hair', 'nose', 'eye_left', 'eye_right', 'ear_left', 'ear_right']
PART_COLOUR = ['skin', 'hair', 'nose', 'eye', 'eye', 'skin', 'skin']


def render_heads(heads, pitch, yaw, size, return_geometry=False):
    """Render objects from cameras (pitch, yaw) [B] radians; returns images [B, 3, size, size] in [0, 1].

    With `return_geometry` also the truth a generator's geometry is judged against (`evaluation/geometry.py`):
    depth [B, 1, size, size], the distance along the ray to the first surface (head or background plane),
    as GRAM's expected depth measures it, and the background plane's share of each pixel [B, 1, size, size]
    (the fraction of its supersampled rays that miss the head). Both are averaged over the supersamples
    like the colour.
    """
    batch = pitch.shape[0]
    origins = camera.origins_from_angles(pitch, yaw)
    _, ray_origins, ray_directions = camera.world_rays(origins, size * SUPERSAMPLE, FOV)
    centers = torch.stack([heads[part][0] for part in PARTS], 1)  # [B, P, 3]
    radii = torch.stack([heads[part][1] for part in PARTS], 1)
    distances = _ray_ellipsoids(ray_origins, ray_directions, centers, radii)  # [B, R, P]
    # The hair cap is cut away where it would cover the face (front and lower part of the head).
    hair = PARTS.index('hair')
    hair_point = ray_origins + distances[..., hair].clamp(max=10)[..., None] * ray_directions
    head_center, head_radii = heads['head']
    on_face = ((hair_point[..., 2] > head_center[:, None, 2] + 0.2 * head_radii[:, None, 2]) &
               (hair_point[..., 1] < head_center[:, None, 1] + 0.45 * head_radii[:, None, 1]))
    distances[..., hair] = torch.where(on_face, torch.full_like(on_face, math.inf, dtype=distances.dtype),
                                       distances[..., hair])
    nearest, part = distances.min(-1)  # [B, R]
    hit = torch.isfinite(nearest)
    surface = ray_origins + nearest.clamp(max=10)[..., None] * ray_directions
    index = part[..., None].expand(-1, -1, 3)
    center = torch.gather(centers, 1, index)
    radius = torch.gather(radii, 1, index)
    normal = torch.nn.functional.normalize((surface - center) / radius ** 2, dim=-1)
    palette = torch.stack([heads['colours'][name] for name in PART_COLOUR], 1)  # [B, P, 3]
    albedo = torch.gather(palette, 1, index)
    texture = heads['texture']
    plane_distance = (BACKGROUND_Z - ray_origins[..., 2]) / ray_directions[..., 2]
    plane_point = ray_origins + plane_distance[..., None] * ray_directions
    background = heads['colours']['background'][:, None] * (1 + 0.25 * _texture(plane_point * 0.5, texture)[..., None])
    textured = albedo * (1 + texture['strength'][:, None, None] * _texture(surface, texture)[..., None])
    diffuse = (normal * heads['light'][:, None]).sum(-1).clamp(min=0)[..., None]
    image = torch.where(hit[..., None], textured * (0.35 + 0.75 * diffuse), background).clamp(0, 1)
    def pixels(values):  # [B, R, C] on the supersampled grid -> [B, C, size, size]
        values = values.reshape(batch, size * SUPERSAMPLE, size * SUPERSAMPLE, -1).permute(0, 3, 1, 2)
        return torch.nn.functional.avg_pool2d(values, SUPERSAMPLE)

    if not return_geometry:
        return pixels(image)
    depth = torch.where(hit, nearest, plane_distance)
    return pixels(image), pixels(depth[..., None]), pixels((~hit).to(image.dtype)[..., None])


def sample_poses(n, rng, yaw_std=FACE_PRIOR['h_stddev'], pitch_std=FACE_PRIOR['v_stddev']):
    """Camera poses (pitch, yaw) [n] float64 from the FFHQ prior of the configs (or one as wide as asked:
    a generator trained on a wider one must pass the same widths as its camera prior)."""
    prior = dict(FACE_PRIOR, h_stddev=float(yaw_std), v_stddev=float(pitch_std))
    pitch, yaw = camera.sample_camera_angles(n, generator=rng, **prior)
    return pitch.double(), yaw.double()


def heads_for_indices(seed, indices, **pose_widths):
    """The objects of images `indices` of the dataset made with `seed` (image i depends only on (seed, i)),
    stacked, with their dataset poses (pitch, yaw) [n] float64 (`pose_widths`: see sample_poses)."""
    heads, pitches, yaws = [], [], []
    for index in indices:
        rng = torch.Generator().manual_seed(seed * 1_000_003 + index)
        heads.append(random_heads(1, rng))
        pitch, yaw = sample_poses(1, rng, **pose_widths)
        pitches.append(pitch)
        yaws.append(yaw)
    return _stack_heads(heads), torch.cat(pitches), torch.cat(yaws)


def pose_to_ffhq_angle(pitch, yaw):
    """Deep3DFaceRecon-style [rx, ry, rz] whose official FFHQ conversion gives back (pitch, yaw)."""
    return np.array([[math.pi / 2 - pitch + 0.1, yaw - math.pi / 2, 0.0]])


def _stack_heads(per_image):
    def stack(values):
        if isinstance(values[0], dict):
            return {key: stack([v[key] for v in values]) for key in values[0]}
        if isinstance(values[0], tuple):
            return tuple(stack([v[i] for v in values]) for i in range(len(values[0])))
        return torch.cat(values)
    return stack(per_image)


def render_chunk(seed, first_index, count, size, **pose_widths):
    """Images (uint8 [count, size, size, 3]) and poses of images first_index..first_index+count-1.

    Image i depends only on (seed, i) (and the pose widths), so chunks can be rendered in any order and in
    parallel.
    """
    heads, pitch, yaw = heads_for_indices(seed, range(first_index, first_index + count), **pose_widths)
    with torch.no_grad():
        images = render_heads(heads, pitch, yaw, size)
    images = (images.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return list(images), list(zip(pitch.tolist(), yaw.tolist()))


# How a dataset folder was made, written before its first image: a later run into the same folder resumes
# only with the same settings, instead of skipping images made at another size or seed.
MANIFEST = 'manifest.json'
# Bumped whenever the image or pose of (seed, index) changes, so no folder mixes two versions.
DATASET_VERSION = 1


class DatasetMismatch(ValueError):
    """An existing folder cannot take this dataset; the message names the folder and the difference."""


def check_dataset_folder(output_dir, num_images, size, seed, yaw_std=FACE_PRIOR['h_stddev'],
                         pitch_std=FACE_PRIOR['v_stddev']):
    """The manifest for writing (num_images, size, seed, pose widths) into output_dir; DatasetMismatch when
    the folder holds a dataset made with other settings, or images without a manifest (not ours, or unknown)."""
    import json

    wanted = {'category': 'synthetic', 'version': DATASET_VERSION, 'size': int(size), 'seed': int(seed),
              'yaw_std': float(yaw_std), 'pitch_std': float(pitch_std), 'count': int(num_images)}
    path = os.path.join(output_dir, MANIFEST)
    advice = "choose a new --output_dir (images of different settings must not share a folder)"
    if not os.path.exists(path):
        images = [name for name in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
                  if name.lower().endswith(('.png', '.jpg', '.jpeg'))]
        if images:
            raise DatasetMismatch(f"{output_dir} already holds {len(images)} image(s) but no {MANIFEST} saying how "
                                  f"they were made; {advice}")
        return wanted
    try:
        with open(path) as stream:
            recorded = json.load(stream)
    except (OSError, ValueError) as error:
        raise DatasetMismatch(f"cannot read {path} ({error}); {advice}") from None
    if not isinstance(recorded, dict):
        raise DatasetMismatch(f"{path} is not a dataset manifest; {advice}")
    # manifests written before the pose widths were an option hold the default prior's
    recorded = {'yaw_std': FACE_PRIOR['h_stddev'], 'pitch_std': FACE_PRIOR['v_stddev'], **recorded}
    different = [f"{key} {recorded.get(key)} (now {wanted[key]})"
                 for key in ('category', 'version', 'size', 'seed', 'yaw_std', 'pitch_std')
                 if recorded.get(key) != wanted[key]]
    if different:
        raise DatasetMismatch(f"{output_dir} was made with {', '.join(different)}; {advice}")
    made = recorded.get('count')
    if not isinstance(made, int) or made > num_images:
        raise DatasetMismatch(f"{output_dir} was made with {made} images, more than the {num_images} asked for; "
                              f"ask for at least {made} to resume it, or {advice}")
    return wanted


def write_synthetic_dataset(output_dir, num_images, size, seed, workers=1, overwrite=False, progress=None,
                            yaw_std=FACE_PRIOR['h_stddev'], pitch_std=FACE_PRIOR['v_stddev']):
    """Write `num_images` images `{index:05d}.png` and `poses/{index:05d}.mat` (atomically, resumable).

    The folder's manifest.json records how it was made; a folder made with another size, seed or version
    raises DatasetMismatch before anything is written (a larger count extends it). Returns the number of
    images rendered by this call (the others were already there).
    """
    import json

    import scipy.io
    from concurrent.futures import ProcessPoolExecutor

    from utils.atomic import atomic_open
    from utils.images import save_png

    pose_widths = dict(yaw_std=yaw_std, pitch_std=pitch_std)
    manifest = check_dataset_folder(output_dir, num_images, size, seed, **pose_widths)
    os.makedirs(os.path.join(output_dir, 'poses'), exist_ok=True)
    with atomic_open(os.path.join(output_dir, MANIFEST), 'w') as stream:
        json.dump(manifest, stream, indent=2)
        stream.write('\n')
    chunk = 16
    todo = [start for start in range(0, num_images, chunk)
            if overwrite or not all(os.path.exists(os.path.join(output_dir, f'{i:05d}.png'))
                                    for i in range(start, min(num_images, start + chunk)))]

    written = []

    def store(start, images, poses):
        for offset, (image, (pitch, yaw)) in enumerate(zip(images, poses)):
            name = f'{start + offset:05d}'
            if not overwrite and os.path.exists(os.path.join(output_dir, name + '.png')):
                continue  # made earlier with the same settings (the manifest says so): left as it is
            written.append(name)
            pose_path = os.path.join(output_dir, 'poses', name + '.mat')
            with atomic_open(pose_path, 'wb') as stream:
                scipy.io.savemat(stream, {'angle': pose_to_ffhq_angle(pitch, yaw)})
            save_png(image, os.path.join(output_dir, name + '.png'))  # the image last: it marks "done"
        if progress is not None:
            progress.update(len(images))

    counts = [min(chunk, num_images - start) for start in todo]
    if workers > 1:
        # one intra-op thread per worker: the parallelism is across chunks
        with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            futures = [(start, pool.submit(render_chunk, seed, start, count, size, **pose_widths))
                       for start, count in zip(todo, counts)]
            for start, future in futures:
                store(start, *future.result())
    else:
        for start, count in zip(todo, counts):
            store(start, *render_chunk(seed, start, count, size, **pose_widths))
    return len(written)
