"""Depth and normal maps as files: 16-bit depth PNG + JSON range, colour previews, 8-bit normal maps.

Depth encoding (utils.maps.DEPTH_ENCODING, also written into every JSON): value 0 = no depth (a ray with no
weight, e.g. CARLA's empty sky); v in 1..65535 = near + (far - near) * (v - 1) / 65534 in world units
(camera radius 1). The quantity is whatever the caller rendered; inference.py writes the composite
distance along each pixel's ray from the camera centre.
"""
import json

import numpy as np

from .atomic import atomic_open
from .images import save_png

DEPTH_ENCODING = 'value 0 = no depth; value v in 1..65535 -> near + (far - near) * (v - 1) / 65534'
_LEVELS = 65534
# Preview colour ramp, near -> far (bright yellow to dark violet, perceptually ordered anchor colours).
_RAMP = np.array([[0.993, 0.906, 0.144], [0.369, 0.789, 0.383], [0.128, 0.567, 0.551],
                  [0.229, 0.322, 0.546], [0.267, 0.005, 0.329]])


def depth_range(depths):
    """(near, far) over the finite values of one or more depth arrays; far > near always."""
    finite = np.concatenate([np.asarray(d, np.float64)[np.isfinite(d)].reshape(-1) for d in depths] or [[]])
    if finite.size == 0:
        return 0.0, 1.0
    near, far = float(finite.min()), float(finite.max())
    return near, max(far, near + 1e-6)


def encode_depth16(depth, near, far):
    """Depth [H, W] float -> uint16 [H, W] with DEPTH_ENCODING (non-finite -> 0)."""
    depth = np.asarray(depth, np.float64)
    finite = np.isfinite(depth)
    scaled = np.round((np.clip(np.where(finite, depth, near), near, far) - near) / (far - near) * _LEVELS) + 1
    return np.where(finite, scaled, 0).astype(np.uint16)


def decode_depth16(values, near, far):
    """uint16 [H, W] -> float64 depth [H, W] (NaN where there is no depth)."""
    values = np.asarray(values).astype(np.float64)
    return np.where(values > 0, near + (far - near) * (values - 1) / _LEVELS, np.nan)


def colorize_depth(depth, near, far):
    """Depth [H, W] -> uint8 RGB [H, W, 3] preview: near yellow ... far violet; no depth = black."""
    depth = np.asarray(depth, np.float64)
    finite = np.isfinite(depth)
    position = np.clip((np.where(finite, depth, near) - near) / (far - near), 0, 1) * (len(_RAMP) - 1)
    anchors = np.arange(len(_RAMP))
    rgb = np.stack([np.interp(position, anchors, _RAMP[:, c]) for c in range(3)], axis=-1)
    return (np.where(finite[..., None], rgb, 0) * 255 + 0.5).astype(np.uint8)


def normals_to_uint8(normals):
    """Unit normals [3, H, W] (camera space) -> uint8 RGB [H, W, 3] = (n + 1) / 2 * 255, the usual
    normal-map colours (x -> red, y -> green, z -> blue); a zero normal (no surface) is mid grey."""
    normals = np.moveaxis(np.asarray(normals, np.float64), 0, -1)
    return np.round((np.clip(normals, -1, 1) + 1) / 2 * 255).astype(np.uint8)


def save_depth_png(depth, path, near, far):
    """Write depth [H, W] as a 16-bit grayscale PNG with DEPTH_ENCODING (atomically)."""
    save_png(encode_depth16(depth, near, far), path)


def save_json(record, path):
    """Write a JSON record atomically (pretty-printed, keys in the given order)."""
    with atomic_open(path, 'w') as stream:
        json.dump(record, stream, indent=2)
        stream.write('\n')


def depth_record(near, far, quantity, extra=None):
    """The JSON that goes beside 16-bit depth PNGs: range, encoding, quantity, units."""
    record = {'near': near, 'far': far, 'encoding': DEPTH_ENCODING, 'quantity': quantity,
              'units': 'world units; the camera orbits the origin at radius 1'}
    record.update(extra or {})
    return record
