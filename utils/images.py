"""Image conversion, grids, watermark, reading any image as 8-bit RGB, and writing PNG / GIF / MP4 (the one
place that reads and saves images). torch is imported where a function needs it, so preprocessing stays light."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_path


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


# The mark spans this fraction of the image width, in the lower-right corner: readable on a 128^2 tile and
# away from the centred subject on any size (a fixed font size covered a quarter of a 32^2 tile, clipped).
WATERMARK_WIDTH = 0.3
_WATERMARK_FONT_SIZE = 48


def _watermark_stamp(text):
    """The text, white with a dark outline, on a transparent RGBA image cropped to the ink."""
    try:
        font = ImageFont.load_default(size=_WATERMARK_FONT_SIZE)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font, scaled like the vector one
        font = ImageFont.load_default()
    stroke = max(1, _WATERMARK_FONT_SIZE // 12)
    probe = ImageDraw.Draw(Image.new('RGBA', (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=stroke)
    stamp = Image.new('RGBA', (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(stamp).text((-left, -top), text, font=font, fill=(255, 255, 255, 170), stroke_width=stroke,
                               stroke_fill=(0, 0, 0, 170))
    return stamp


def add_watermark(image, text='generated'):
    """Blend a visible text mark into the lower-right corner of a uint8 HWC image (returns a new array).

    GRAM's scripts mark generated faces by default; we draw the word instead of shipping their logo. The
    mark is scaled to WATERMARK_WIDTH of the image, so the whole word shows on small tiles too.
    """
    height, width = image.shape[:2]
    stamp = _watermark_stamp(text)
    mark_width = max(1, round(width * WATERMARK_WIDTH))
    mark_height = max(1, min(height // 4, round(stamp.height * mark_width / stamp.width)))
    stamp = stamp.resize((mark_width, mark_height), Image.Resampling.LANCZOS)
    margin = max(1, min(height, width) // 40)
    base = Image.fromarray(image).convert('RGBA')
    layer = Image.new('RGBA', base.size, (0, 0, 0, 0))
    layer.paste(stamp, (width - mark_width - margin, height - mark_height - margin))
    return np.asarray(Image.alpha_composite(base, layer).convert('RGB'))


def save_png(image, path):
    """Write a uint8 HWC image as PNG (atomically: temp file + rename)."""
    with atomic_path(path) as temp:
        Image.fromarray(image).save(temp, format='PNG')


def save_gif(frames, path, fps=15):
    """Write uint8 HWC frames as a looping GIF."""
    with atomic_path(path) as temp:
        pictures = [Image.fromarray(frame) for frame in frames]
        pictures[0].save(temp, format='GIF', save_all=True, append_images=pictures[1:],
                         duration=int(round(1000 / fps)), loop=0)


def save_video(frames, path, fps=30):
    """Write uint8 HWC frames as an H.264 MP4 (imageio + the ffmpeg binary of imageio-ffmpeg)."""
    import imageio.v2 as imageio

    with atomic_path(path, keep_extension=True) as temp:  # ffmpeg picks the container from the extension
        # macro_block_size=1 keeps odd sizes (e.g. 64x64 tiles of a 1x3 grid) instead of resizing them.
        with imageio.get_writer(temp, format='FFMPEG', mode='I', fps=fps, codec='libx264', quality=8,
                                macro_block_size=1, ffmpeg_log_level='error') as writer:
            for frame in frames:
                writer.append_data(frame)


def read_rgb(path):
    """Decode an image fully and return it as an 8-bit RGB PIL image: the one reader of training data,
    evaluation images and preprocessing inputs, so a file means the same pixels to each of them.

    Decoding is forced here so a truncated or corrupt file fails now, with the decoder's reason. Other
    pixel formats are converted rather than rejected: grayscale is replicated, CMYK goes through PIL's
    conversion, 16-bit samples keep their top 8 bits (PIL's own convert('RGB') clips them at 255: white),
    and transparency is composited onto white (the background GRAM's CARLA model is trained against;
    opaque images are unaffected). A floating-point image is a ValueError (it has no 0-255 range).
    """
    with Image.open(path) as image:
        image.load()
        mode = image.mode
        if mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I'):
            samples = np.asarray(image, dtype=np.float64)
            return Image.fromarray(np.clip(np.round(samples / 257.0), 0, 255).astype(np.uint8)).convert('RGB')
        if mode == 'F':
            raise ValueError(f"{path}: floating-point image (mode F) has no defined 0-255 range; "
                             "expected an 8- or 16-bit image")
        if mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or 'transparency' in image.info:
            rgba = image.convert('RGBA')
            white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert('RGB')
        return image.convert('RGB')


def image_tensor_from_uint8(image):
    """uint8 HWC -> float [3, H, W] in [-1, 1] (for reading our own PNGs back in tests/metrics)."""
    import torch

    return torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 127.5 - 1
