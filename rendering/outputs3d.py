"""Depth and normal maps written next to inference.py's RGB images and videos.

Conventions (README "3D outputs"):
- depth = GRAM's composite depth, sum_i w_i t_i / sum_i w_i over a pixel's samples, where t_i is the
  distance of sample i from the camera centre along the pixel's ray (not the z-depth; z-depth = depth times
  the cosine between the ray and the optical axis); world units, the camera orbits the origin at radius 1.
  Stored as a 16-bit PNG (utils.maps.DEPTH_ENCODING) with near / far in a JSON beside it, one range per
  image grid or per video, plus a colour preview.
- normals are derived from the depth map (generators.camera.normals_from_depth), in camera space: +x right,
  +y up, +z towards the viewer; stored as 8-bit RGB (n + 1) / 2.
- GRAM-HD: the HR depth composites the HR texture alphas at the up-sampled LR intersections (what the HR
  image shows), so HR normals follow the HR image; the LR depth and normals are those of the GRAM render.
"""
import os

import numpy as np
import torch

from generators.camera import normals_from_depth
from utils.images import make_grid, save_png, save_video
from utils.maps import colorize_depth, depth_range, depth_record, normals_to_uint8, save_depth_png, save_json

OUTPUT_KINDS = ('rgb', 'depth', 'normal')
DEPTH_QUANTITY = ("GRAM's composite depth: sum_i w_i t_i / sum_i w_i, t_i = distance of sample i from the camera "
                  "centre along the pixel's ray")


def depth_tiles(depth):
    """Rendered depth [B, 1, H, W] tensor -> list of B float32 numpy [H, W] (NaN where no weight)."""
    return list(depth.detach().float().cpu()[:, 0].numpy())


def normal_tile(depth, fov):
    """uint8 RGB normal map [H, W, 3] of one depth tile [H, W] (camera-space normals from depth)."""
    normals = normals_from_depth(torch.from_numpy(np.asarray(depth, np.float32))[None, None], fov)[0]
    return normals_to_uint8(normals.numpy())


def _grid(tiles, rows, cols):
    return make_grid(list(tiles), rows, cols)


def write_maps(stem, depth_frames, rows, cols, fov, outputs, rgb_frames=None, fps=None, mark=None):
    """Write the depth / normal files of one image (fps None) or one video.

    depth_frames: a list of frames, each a list of rows * cols depth tiles [H, W] (row-major, NaN = none);
    rgb_frames: the matching uint8 RGB frames as written (needed for videos: the maps are shown beside the
    RGB); mark: applied to each view of the depth previews (the 'generated' watermark), never to the data
    (16-bit depth, normal maps).
    Files: stem_depth.png (16-bit) + stem_depth.json + stem_depth_preview.png, stem_normal.png for an image;
    stem_depth/NNNNN.png (16-bit frames) + stem_depth/range.json + stem_depth.mp4 (RGB | depth preview) and
    stem_normal.mp4 (RGB | normals) for a video.
    """
    mark = mark or (lambda image: image)
    near, far = depth_range([tile for frame in depth_frames for tile in frame])
    name = os.path.basename(stem)
    layout = {'layout': f"{rows}x{cols} grid of views" if rows * cols > 1 else 'one view'}
    if 'normal' in outputs:  # the JSON names only files that are written
        layout['normals'] = (f"{name}_normal.{'mp4' if fps else 'png'}: camera-space normals from the depth map, "
                             "rgb = (n + 1) / 2 * 255, +x right, +y up, +z towards the viewer")
    depth_grids = [_grid(frame, rows, cols) for frame in depth_frames]
    # previews are marked per view, as the RGB tiles are
    previews = [_grid([mark(colorize_depth(tile, near, far)) for tile in frame], rows, cols) for frame in depth_frames]
    normal_grids = None
    if 'normal' in outputs:
        normal_grids = [_grid([normal_tile(tile, fov) for tile in frame], rows, cols) for frame in depth_frames]
    if fps is None:
        if 'depth' in outputs:
            save_depth_png(depth_grids[0], f'{stem}_depth.png', near, far)
            save_json(depth_record(near, far, DEPTH_QUANTITY, layout), f'{stem}_depth.json')
            save_png(previews[0], f'{stem}_depth_preview.png')
        if normal_grids is not None:
            save_png(normal_grids[0], f'{stem}_normal.png')
        return
    if rgb_frames is None or len(rgb_frames) != len(depth_frames):
        raise ValueError("write_maps: a video needs its RGB frames, one per depth frame")
    if 'depth' in outputs:
        for index, grid in enumerate(depth_grids):
            save_depth_png(grid, os.path.join(f'{stem}_depth', f'{index:05d}.png'), near, far)
        # the range goes inside the frames' folder: stem_depth.json is the still image's (grid_0.png and
        # grid_0.mp4 share their stem)
        save_json(depth_record(near, far, DEPTH_QUANTITY, dict(layout, frames=len(depth_grids), fps=fps)),
                  os.path.join(f'{stem}_depth', 'range.json'))
        save_video([np.concatenate([rgb, preview], axis=1) for rgb, preview in zip(rgb_frames, previews)],
                   f'{stem}_depth.mp4', fps=fps)
    if normal_grids is not None:
        save_video([np.concatenate([rgb, normals], axis=1) for rgb, normals in zip(rgb_frames, normal_grids)],
                   f'{stem}_normal.mp4', fps=fps)
