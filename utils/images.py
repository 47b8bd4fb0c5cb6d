"""Image conversion, grids, watermark, and writing PNG / GIF / MP4 (the one place that saves images)."""
import os
import tempfile

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images):
    """[B, 3, H, W] or [3, H, W] float in [-1, 1] -> uint8 HWC numpy ([B, H, W, 3] or [H, W, 3]).

    Values are mapped to [0, 1], NaNs to 0, clipped, scaled by 255 and truncated, as the official
    inference scripts do (they clip the HR image; GRAM-HD's LR image is not clipped there and can wrap
    around in uint8, which we do not reproduce).
    """
    array = ((images.detach().float().cpu() + 1) / 2).numpy()
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    return np.moveaxis(array, -3, -1)


def make_grid(tiles, rows, cols):
    """Tile uint8 HWC images (a list of rows*cols arrays, row-major) into one image, no padding."""
    if len(tiles) != rows * cols:
        raise ValueError(f"make_grid: {len(tiles)} tiles for a {rows}x{cols} grid")
    return np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)


def add_watermark(image, text='generated'):
    """Blend a visible text mark into the lower-right corner of a uint8 HWC image (returns a new array).

    GRAM's scripts mark generated faces by default; we draw the word instead of shipping their logo.
    """
    height, width = image.shape[:2]
    size = max(8, height // 8)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        font = ImageFont.load_default()
    base = Image.fromarray(image).convert('RGBA')
    layer = Image.new('RGBA', base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(1, height // 64)
    position = (width - (right - left) - margin - left, height - (bottom - top) - margin - top)
    stroke = max(1, size // 10)
    draw.text(position, text, font=font, fill=(255, 255, 255, 170), stroke_width=stroke,
              stroke_fill=(0, 0, 0, 170))
    return np.asarray(Image.alpha_composite(base, layer).convert('RGB'))


def _atomic_path(path, suffix='.partial'):
    # A temporary name that no `*.png` glob of a data reader matches; videos keep their extension because
    # ffmpeg picks the container from it.
    folder = os.path.dirname(os.path.abspath(path)) or '.'
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix='.tmp_', suffix=suffix, dir=folder)
    os.close(handle)
    return temp


def save_png(image, path):
    """Write a uint8 HWC image as PNG (atomically: temp file + rename)."""
    temp = _atomic_path(path)
    try:
        Image.fromarray(image).save(temp, format='PNG')
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def save_gif(frames, path, fps=15):
    """Write uint8 HWC frames as a looping GIF."""
    temp = _atomic_path(path)
    try:
        pictures = [Image.fromarray(frame) for frame in frames]
        pictures[0].save(temp, format='GIF', save_all=True, append_images=pictures[1:],
                         duration=int(round(1000 / fps)), loop=0)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def save_video(frames, path, fps=30):
    """Write uint8 HWC frames as an H.264 MP4 (imageio + the ffmpeg binary of imageio-ffmpeg)."""
    import imageio.v2 as imageio

    temp = _atomic_path(path, suffix=os.path.splitext(path)[1])
    try:
        # macro_block_size=1 keeps odd sizes (e.g. 64x64 tiles of a 1x3 grid) instead of resizing them.
        with imageio.get_writer(temp, format='FFMPEG', mode='I', fps=fps, codec='libx264', quality=8,
                                macro_block_size=1, ffmpeg_log_level='error') as writer:
            for frame in frames:
                writer.append_data(frame)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def image_tensor_from_uint8(image):
    """uint8 HWC -> float [3, H, W] in [-1, 1] (for reading our own PNGs back in tests/metrics)."""
    return torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 127.5 - 1
