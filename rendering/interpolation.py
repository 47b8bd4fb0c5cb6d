"""Latent interpolation videos: grid cells whose latents move between key seeds while the camera orbits.

What moves is the latent z (spherical interpolation, which keeps a Gaussian latent's norm, with a cosine
ease so the motion stops at every key); truncation is applied by the renderer to every frame's latent
with the same psi, exactly as to the keys' own renders. Frames at a key use the key latent itself, so the
first and last frames equal the key seeds' renders at those cameras.
"""
import math

import torch

from utils.images import make_grid

# The orbit: yaw swings +-0.3 rad (the video type's range) while the camera rises 0.1 rad and comes back,
# one closed loop per video that starts and ends at the frontal camera.
ORBIT_YAW = 0.3
ORBIT_PITCH = 0.1


def slerp(a, b, t):
    """Spherical interpolation of latents a, b [z_dim] at t in [0, 1] (linear when they are parallel)."""
    cosine = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cosine.clamp(-1, 1))
    if torch.sin(omega) < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def keyframe_latents(keys, frames_per_key):
    """keys [K, z_dim] (K >= 2) -> latents [(K - 1) * frames_per_key + 1, z_dim]; frame k * frames_per_key is
    key k exactly."""
    num_keys = keys.shape[0]
    if num_keys < 2 or frames_per_key < 1:
        raise ValueError(f"need >= 2 keys and >= 1 frame per key, got {num_keys} and {frames_per_key}")
    latents = []
    for frame in range((num_keys - 1) * frames_per_key + 1):
        segment, offset = divmod(frame, frames_per_key)
        if offset == 0:
            latents.append(keys[segment])
            continue
        eased = (1 - math.cos(math.pi * offset / frames_per_key)) / 2
        latents.append(slerp(keys[segment], keys[segment + 1], eased))
    return torch.stack(latents)


def orbit_offsets(num_frames):
    """(pitch offset, yaw offset) radians from the frontal camera for each frame: one closed loop."""
    offsets = []
    for frame in range(num_frames):
        phase = 2 * math.pi * frame / max(1, num_frames - 1)
        offsets.append((-ORBIT_PITCH * (1 - math.cos(phase)) / 2, ORBIT_YAW * math.sin(phase)))
    return offsets


def cell_key_seeds(seeds, cells, num_keyframes):
    """Key seeds of each grid cell: cell c, key k takes seeds[(c * K + k) % len(seeds)] (the list wraps)."""
    return [[seeds[(cell * num_keyframes + key) % len(seeds)] for key in range(num_keyframes)]
            for cell in range(cells)]


def parse_grid(text):
    """'RxC' -> (rows, cols); raises ValueError with the reason."""
    parts = str(text).lower().split('x')
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) >= 1 for part in parts):
        raise ValueError(f"expected ROWSxCOLS with positive integers, e.g. 2x2, got {text}")
    return int(parts[0]), int(parts[1])


def interpolation_frames(render, cell_latents, views, rows, cols, batch_size, progress=None):
    """Render an interpolation video's frames.

    render(z [B, z_dim], pitch [B], yaw [B]) -> (images uint8 [B, H, W, 3], lr_images or None, depth [B, 1, H, W]
    or None, lr_depth or None); cell_latents [cells, frames, z_dim] with cells = rows * cols; views: one
    (pitch [1] float64, yaw [1] float64) per frame, shared by all cells (so their manifold intersections are
    computed once per batch). Returns a dict: 'frames' (uint8 grid per frame), 'lr_frames' (or None),
    'depth' / 'lr_depth' (per frame, a list of the cells' depth tensors [1, H, W], or None).
    """
    cells, num_frames = cell_latents.shape[:2]
    if cells != rows * cols or len(views) != num_frames:
        raise ValueError(f"{cells} cells for a {rows}x{cols} grid, {len(views)} views for {num_frames} frames")
    out = {'frames': [], 'lr_frames': [], 'depth': [], 'lr_depth': []}
    for frame, (pitch, yaw) in enumerate(views):
        parts = {'frames': [], 'lr_frames': [], 'depth': [], 'lr_depth': []}
        for first in range(0, cells, batch_size):
            z = cell_latents[first:first + batch_size, frame]
            rendered = render(z, pitch.expand(z.shape[0]), yaw.expand(z.shape[0]))
            for key, value in zip(('frames', 'lr_frames', 'depth', 'lr_depth'), rendered):
                if value is not None:
                    parts[key].extend(list(value))
            if progress is not None:
                progress.update(z.shape[0])
        for key in ('frames', 'lr_frames'):
            if parts[key]:
                out[key].append(make_grid(parts[key], rows, cols))
        for key in ('depth', 'lr_depth'):
            if parts[key]:
                out[key].append(parts[key])
    return {key: (value or None) for key, value in out.items()}

