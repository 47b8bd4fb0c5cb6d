"""Rendering jobs of the command-line tools: view sets of seeds or inverted latents to images, videos and
depth / normal maps, the shipped model's defaults and the flags every rendering script shares.

`inference.py` is this module's command line; `invert.py`, `viewer.py` and `render_multiview_images.py`
render through the same calls (`run_view_type`, `render_view_set`), so their files are identical for the
same flags.
"""
import argparse
import os

import torch
from tqdm import tqdm

from generators import build_generator, load_generator
from generators.camera import sample_camera_angles
from generators.gram import check_inexact_options
from rendering import interpolation, outputs3d
from rendering.views import VIEW_TYPES, frontal_angles, view_offsets
from utils.checkpoints import CheckpointError
from utils.cli import (HelpFormatter, comma_list, default_device, device, nonnegative_float, positive_int,
                       seed_list, truncation)
from utils.images import add_watermark, make_grid, save_png, save_video, to_uint8
from utils.resources import format_bytes, require_memory
from utils.seeds import latent_for_seed, parse_seeds


def render_batch(generator, z, pitch, yaw, args_img_size, truncation, lock, render_options=None,
                 with_depth=False, styles=None):
    """Render one camera per row of z (or of `styles`, the latent parameters of inverted photos: see
    `render` of GramGenerator / GramHDGenerator); returns (images, lr_images or None) as uint8 [B, H, W, 3].
    `render_options`: GRAM's inexact options (`GramGenerator.render` keywords). With `with_depth`, also
    (depth, lr_depth or None): float depth maps [B, 1, H, W] on the CPU (distance along each ray)."""
    with torch.no_grad():
        if getattr(generator, 'is_hd', False):
            if with_depth:
                images, lr_images, depth, lr_depth = generator.render(
                    z, pitch, yaw, truncation_psi=truncation, lock_view_dependence=lock, return_lr=True,
                    return_depth=True, return_lr_depth=True, styles=styles)
                return to_uint8(images), to_uint8(lr_images), depth.cpu(), lr_depth.cpu()
            images, lr_images = generator.render(z, pitch, yaw, truncation_psi=truncation,
                                                 lock_view_dependence=lock, return_lr=True, styles=styles)
            return to_uint8(images), to_uint8(lr_images)
        if with_depth:
            images, depth = generator.render(z, pitch, yaw, img_size=args_img_size, truncation_psi=truncation,
                                             lock_view_dependence=lock, return_depth=True, styles=styles,
                                             **(render_options or {}))
            return to_uint8(images), None, depth.cpu(), None
        images = generator.render(z, pitch, yaw, img_size=args_img_size, truncation_psi=truncation,
                                  lock_view_dependence=lock, styles=styles, **(render_options or {}))
        return to_uint8(images), None


def render_hd_frame(generator, textures, pitch, yaw, with_depth=False):
    """One view of precomputed GRAM-HD textures; returns (images, lr_images) as uint8 [B, H, W, 3], plus
    (HR depth, LR depth) [B, 1, H, W] on the CPU with `with_depth`."""
    with torch.no_grad():
        if with_depth:
            images, lr_images, depth, lr_depth = generator.render_from_textures(
                textures, pitch, yaw, return_lr=True, return_depth=True, return_lr_depth=True)
            return to_uint8(images), to_uint8(lr_images), depth.cpu(), lr_depth.cpu()
        images, lr_images = generator.render_from_textures(textures, pitch, yaw, return_lr=True)
    return to_uint8(images), to_uint8(lr_images)


def render_view_set(generator, seeds, views, device, img_size=None, truncation=0.7, lock=True, batch_size=4,
                    progress=None, render_options=None, with_depth=False, latents=None):
    """Render every view of every seed. Seeds are batched at one camera at a time, so the z-independent
    manifold intersections are computed once per camera and batch. For GRAM-HD with view dependence
    locked, the manifold textures (the expensive super-resolution) are computed once per batch of seeds
    and every view is only intersections + texture lookups; the frames equal those of `render`.

    views: list of (pitch [1] float64, yaw [1] float64); render_options as `render_batch`. Returns
    {seed: (frames, lr_frames or None)} with frames a list of uint8 HWC arrays in view order; with
    `with_depth`, {seed: (frames, lr_frames, depths, lr_depths or None)}, depths a list of [1, H, W] tensors.
    `latents`: {name: latent parameters (`fit_latent`'s: FiLM parameters, and SR styles for GRAM-HD)};
    `seeds` are then those names.
    """
    results = {}
    for first in range(0, len(seeds), batch_size):
        batch_seeds = seeds[first:first + batch_size]
        styles = None
        if latents is not None:
            styles = tuple(torch.cat([latents[name][kind] for name in batch_seeds]).to(device)
                           for kind in range(len(latents[batch_seeds[0]])))
            z = styles[0]
        else:
            z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in batch_seeds]).to(device)
        frames = {seed: [] for seed in batch_seeds}
        lr_frames = {seed: [] for seed in batch_seeds}
        depths = {seed: [] for seed in batch_seeds}
        lr_depths = {seed: [] for seed in batch_seeds}
        textures = None
        if getattr(generator, 'is_hd', False) and lock:
            with torch.no_grad():
                textures = generator.manifold_textures(z, truncation_psi=truncation, styles=styles)
        for pitch, yaw in views:
            pitch_batch = pitch.expand(len(batch_seeds))
            yaw_batch = yaw.expand(len(batch_seeds))
            if textures is not None:
                rendered = render_hd_frame(generator, textures, pitch_batch, yaw_batch, with_depth)
            else:
                rendered = render_batch(generator, z, pitch_batch, yaw_batch, img_size, truncation, lock,
                                        render_options, with_depth, styles)
            images, lr_images = rendered[:2]
            for row, seed in enumerate(batch_seeds):
                frames[seed].append(images[row])
                if lr_images is not None:
                    lr_frames[seed].append(lr_images[row])
                if with_depth:
                    depths[seed].append(rendered[2][row])
                    if rendered[3] is not None:
                        lr_depths[seed].append(rendered[3][row])
            if progress is not None:
                progress.update(len(batch_seeds))
        for seed in batch_seeds:
            results[seed] = (frames[seed], lr_frames[seed] or None)
            if with_depth:
                results[seed] += (depths[seed], lr_depths[seed] or None)
    return results


def watermark_all(frames, enabled):
    return [add_watermark(frame) for frame in frames] if enabled else frames


def run_view_type(generator, args, seeds, device, view_type, latents=None):
    os.makedirs(args.output_dir, exist_ok=True)
    watermark = not args.no_watermark
    if view_type == 'rand':
        progress = tqdm(total=len(seeds), desc='rand', unit='img')
        for index, seed in enumerate(seeds):
            # z, then the pose, from one seeded stream: a seed always gives the same image on any device.
            rng = torch.Generator().manual_seed(seed)
            z = torch.randn(1, generator.z_dim, generator=rng).to(device)
            pitch, yaw = sample_camera_angles(1, generator=rng, **generator.prior)
            rendered = render_batch(generator, z, pitch.double(), yaw.double(), args.img_size, args.truncation,
                                    lock=False, render_options=render_options(args), with_depth=wants_maps(args))
            images = rendered[0]
            if 'rgb' in output_kinds(args):
                save_png(images[0], os.path.join(args.output_dir, f'{index:05d}.png'))  # never watermarked: FID input
            if wants_maps(args):
                lr_depth = None if rendered[3] is None else [rendered[3][0]]
                write_seed_maps(generator, args, f'{index:05d}', [rendered[2][0]], lr_depth, 1, 1, None, None, None)
            progress.update(1)
        progress.close()
        return
    if view_type == 'interpolation':
        run_interpolation(generator, args, seeds, device)
        return
    rows, cols, offsets, lock = view_offsets(view_type)
    views = [frontal_angles(pitch, yaw) for pitch, yaw in offsets]
    progress = tqdm(total=len(seeds) * len(views), desc=view_type, unit='view')
    results = render_view_set(generator, seeds, views, device, args.img_size, args.truncation, lock,
                              args.batch_size, progress, render_options(args), with_depth=wants_maps(args),
                              latents=latents)
    progress.close()
    for seed, (frames, lr_frames, *depth_maps) in results.items():
        outputs = [('', frames)] + ([('_lr', lr_frames)] if lr_frames else [])
        written = {}
        for suffix, tiles in outputs:
            tiles = watermark_all(tiles, watermark)
            written[suffix] = tiles
            if 'rgb' not in output_kinds(args):
                continue
            if view_type == 'video':
                save_video(tiles, os.path.join(args.output_dir, f'grid_{seed}{suffix}.mp4'), fps=30)
            else:
                save_png(make_grid(tiles, rows, cols), os.path.join(args.output_dir, f'grid_{seed}{suffix}.png'))
        if depth_maps:
            video = view_type == 'video'
            write_seed_maps(generator, args, f'grid_{seed}', depth_maps[0], depth_maps[1], rows, cols,
                            written[''] if video else None, written.get('_lr') if video else None,
                            30 if video else None)


# ----------------------------------------------------------------------------------------------------
# 3D outputs (--outputs depth,normal) and interpolation videos (--type interpolation); README "3D outputs".

def output_kinds(args):
    return getattr(args, 'outputs', None) or ['rgb']


def wants_maps(args):
    return any(kind in output_kinds(args) for kind in ('depth', 'normal'))


def write_seed_maps(generator, args, name, depths, lr_depths, rows, cols, rgb_frames, lr_rgb_frames, fps):
    """Depth / normal files of one output name (images: one depth [1, H, W] per view; videos: one per frame)."""
    fov = generator.camera['fov']
    mark = (lambda image: image) if args.no_watermark else add_watermark
    for suffix, maps, rgb in (('', depths, rgb_frames), ('_lr', lr_depths, lr_rgb_frames)):
        if not maps:
            continue
        tiles = outputs3d.depth_tiles(torch.stack(list(maps)))
        frames = [[tile] for tile in tiles] if fps else [tiles]
        outputs3d.write_maps(os.path.join(args.output_dir, f'{name}{suffix}'), frames, rows, cols, fov,
                             output_kinds(args), rgb, fps, mark)


def interpolation_setup(args, seeds):
    """(rows, cols, key seeds per cell, frames) of --type interpolation, or SystemExit with the reason."""
    try:
        rows, cols = interpolation.parse_grid(args.interp_grid)
    except ValueError as error:
        raise SystemExit(f"--interp_grid: {error}")
    num_keyframes = args.num_keyframes or max(2, -(-len(seeds) // (rows * cols)))
    if num_keyframes < 2:
        raise SystemExit(f"--num_keyframes must be >= 2 (a video moves between keys), got {num_keyframes}")
    num_frames = (num_keyframes - 1) * args.frames_per_key + 1
    # A first bound before the keys are listed and the model loads, with the smallest size a config renders
    # (32^2); check_job_fits repeats it with the model's real size.
    size = args.img_size or 32
    require_memory(num_frames * rows * cols * size * size * 3,
                   f"--type interpolation ({num_frames} frames x {rows * cols} cell(s) of at least {size}^2 pixels)",
                   args.device, advice='use fewer --num_keyframes or --frames_per_key, or a smaller --interp_grid')
    keys = interpolation.cell_key_seeds(seeds, rows * cols, num_keyframes)
    return rows, cols, keys, num_frames


def run_interpolation(generator, args, seeds, device):
    """interpolation.mp4: a grid of cells whose latents move between key seeds while the camera orbits."""
    rows, cols, keys, num_frames = interpolation_setup(args, seeds)
    latents = torch.stack([interpolation.keyframe_latents(
        torch.cat([latent_for_seed(seed, generator.z_dim) for seed in cell]), args.frames_per_key)
        for cell in keys]).to(device)  # [cells, frames, z_dim]
    views = [frontal_angles(pitch, yaw) for pitch, yaw in interpolation.orbit_offsets(num_frames)]

    def render(z, pitch, yaw):
        rendered = render_batch(generator, z, pitch, yaw, args.img_size, args.truncation, True,
                                render_options(args), with_depth=wants_maps(args))
        return tuple(rendered) + (None,) * (4 - len(rendered))
    progress = tqdm(total=num_frames * rows * cols, desc='interpolation', unit='view')
    video = interpolation.interpolation_frames(render, latents, views, rows, cols, args.batch_size, progress)
    progress.close()
    watermark = not args.no_watermark
    written = {suffix: watermark_all(video[key], watermark)
               for suffix, key in (('', 'frames'), ('_lr', 'lr_frames')) if video[key]}
    if 'rgb' in output_kinds(args):
        for suffix, frames in written.items():
            save_video(frames, os.path.join(args.output_dir, f'interpolation{suffix}.mp4'), fps=30)
    fov = generator.camera['fov']
    mark = (lambda image: image) if args.no_watermark else add_watermark
    for suffix, key in (('', 'depth'), ('_lr', 'lr_depth')):
        if video[key]:
            frames = [outputs3d.depth_tiles(torch.stack(frame)) for frame in video[key]]
            outputs3d.write_maps(os.path.join(args.output_dir, f'interpolation{suffix}'), frames, rows, cols, fov,
                                 output_kinds(args), written[suffix], 30, mark)


def render_options(args):
    """The inexact options given on the command line, as `GramGenerator.render` keywords ({} if none)."""
    options = dict(precision=args.precision, early_termination=args.early_termination, tf32=args.tf32,
                   compile=args.compile)
    return {} if options == dict(precision='fp32', early_termination=0.0, tf32=False, compile=False) else options


def check_render_options(generator, args):
    """End the program with the reason if the inexact options are bad or the model cannot use them."""
    options = render_options(args)
    if not options:
        return
    if getattr(generator, 'is_hd', False):
        raise SystemExit(f"--precision/--tf32/--compile/--early_termination are GRAM options; GRAM-HD renders "
                         f"keep the official operation order and take none of them (got {options})")
    try:
        check_inexact_options(True, **options)
    except ValueError as error:
        raise SystemExit(f"error: {error}")


# The model this project trained on its procedural heads (README: "The shipped model"), used when no
# checkpoint is given.
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'ckpts',
                               'synthetic_heads.pt')
DEMO_TYPES = 'multiview1x3'
DEMO_SEEDS = '0-3'
# The shipped model was trained at 32^2, too small to see; GRAM renders any size from its manifolds, and
# 4 seeds x 3 views at 128^2 take about 15 s on a 2-core CPU.
DEMO_IMG_SIZE = 128
# Depth beside the pictures: a 3D-aware model is judged by its geometry, not only by its images.
DEMO_OUTPUTS = ['rgb', 'depth']


# Bytes a render holds per pixel of each latent rendered at once: float colour and depth chunks, their
# concatenation, the image and its uint8 copy (the manifold samples are chunked: see GramGenerator.render).
RENDER_BYTES_PER_PIXEL = 64


def render_sizes(generator, img_size):
    """(size of the images written, LR size or None) of a generator rendered with --img_size `img_size`."""
    if getattr(generator, 'is_hd', False):
        return int(generator.img_size), int(generator.lr_img_size)
    return int(img_size or generator.img_size), None


def check_job_fits(generator, args, seeds, view_types):
    """End the program with one line, before anything is rendered, when the images a job holds at once
    would not fit in memory: every size and count flag (--img_size, --seeds, --batch_size,
    --frames_per_key, --num_keyframes, --interp_grid) ends up in this estimate."""
    size, lr_size = render_sizes(generator, args.img_size)
    pixels = size * size + (lr_size * lr_size if lr_size else 0)
    # uint8 RGB, and float32 depth when depth / normal maps are written
    kept_per_pixel = 3 + (4 if wants_maps(args) else 0)
    working = min(args.batch_size, len(seeds)) * pixels * RENDER_BYTES_PER_PIXEL
    for view_type in view_types:
        if view_type == 'rand':
            needed, terms = pixels * RENDER_BYTES_PER_PIXEL, f"1 render of {size}^2 pixels"
        elif view_type == 'interpolation':
            rows, cols, _, num_frames = interpolation_setup(args, seeds)
            needed = (num_frames * rows * cols * (pixels * kept_per_pixel + 4 * generator.z_dim) + working)
            terms = f"{num_frames} frames x {rows * cols} cell(s) of {size}^2 pixels kept for the video"
        else:
            num_views = len(view_offsets(view_type)[2])
            needed = len(seeds) * num_views * pixels * kept_per_pixel + working
            terms = f"{len(seeds)} seed(s) x {num_views} views of {size}^2 pixels"
        require_memory(needed, f"--type {view_type} ({terms}, {format_bytes(working)} while rendering)",
                       args.device, advice='use a smaller --img_size, fewer seeds or frames, or a smaller --batch_size')


def demo_defaults_apply(args):
    """True when the shipped model renders: no --ckpt, or --ckpt naming the shipped file itself (both get the
    same defaults: the 128^2 grids with depth)."""
    if getattr(args, 'untrained', False):
        return False
    if args.ckpt is None:
        return True
    try:
        return os.path.samefile(args.ckpt, DEMO_CHECKPOINT)
    except OSError:  # a missing file: load_or_exit says so
        return False


def seeds_or_exit(text):
    """parse_seeds for a CLI: a bad list ends the program with the message naming the bad item."""
    try:
        return parse_seeds(text)
    except ValueError as error:
        raise SystemExit(f"--seeds: {error}")


def load_or_exit(ckpt, config, device, untrained=False, default_config=None):
    """load_for_inference for a CLI: unusable checkpoints end the program with the reason."""
    try:
        return load_for_inference(ckpt, config, device, untrained, default_config)
    except (CheckpointError, FileNotFoundError, KeyError) as error:
        raise SystemExit(f"error: {error}")


def load_for_inference(ckpt, config, device, untrained=False, default_config=None):
    """The generator of a checkpoint, or (`untrained`) a freshly initialised one of `config`."""
    if untrained:
        if config is None:
            raise SystemExit("--untrained needs --config")
        torch.manual_seed(0)
        generator = build_generator(config)
        generator.config_name = config if isinstance(config, str) else None
        return generator.to(device).eval()
    if ckpt is None:
        raise SystemExit("no checkpoint: pass --ckpt PATH (with --config for official files), "
                         "or --untrained --config NAME to check the installation")
    return load_generator(ckpt, config=config, device=device, default_config=default_config)


def build_view_parser(description=None):
    """The flags of `inference.py` (and, parsed from a list, the settings other scripts render a view set with)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument('--ckpt', '--generator_file', dest='ckpt', default=None,
                        help='checkpoint: ours, an official generator.pth/ema.pth, or a GRAM-HD ckpts/*.pt; '
                             'default: the shipped model ckpts/synthetic_heads.pt')
    parser.add_argument('--config', default=None, help='config name (needed for official checkpoints)')
    parser.add_argument('--output_dir', default='images', help='folder for the images and videos')
    parser.add_argument('--seeds', type=seed_list, default=None,
                        help=f"e.g. 0-9999 or 0,1,4-6 (inclusive ranges, each seed once); default 0-9 "
                             f"(shipped model: {DEMO_SEEDS})")
    parser.add_argument('--type', type=comma_list(), default=None,
                        help=f"one or a comma list of {', '.join(VIEW_TYPES)}; default multiview1x3 "
                             f"(shipped model: {DEMO_TYPES})")
    parser.add_argument('--truncation', type=truncation, default=0.7, help='psi in [0, 1]; 1.0 disables truncation')
    parser.add_argument('--latent', default=None,
                        help='a latent file of invert.py, rendered in place of the seeds (psi does not apply): '
                             'grid_<file name>.png etc.')
    parser.add_argument('--img_size', type=positive_int, default=None,
                        help=f'render size (GRAM); default: the config (shipped model: {DEMO_IMG_SIZE})')
    parser.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    parser.add_argument('--batch_size', type=positive_int, default=4, help='seeds rendered together at one camera')
    parser.add_argument('--no_watermark', action='store_true', help="do not mark images as 'generated'")
    parser.add_argument('--untrained', action='store_true',
                        help='render a freshly initialised generator of --config (checks the installation)')
    outputs = parser.add_argument_group('3D outputs and interpolation videos (README "3D outputs")')
    outputs.add_argument('--outputs', type=comma_list(outputs3d.OUTPUT_KINDS), default=None,
                         help='comma list of rgb, depth (16-bit PNG + JSON range + preview), normal '
                              f"(camera space, from depth); default rgb (shipped model: {','.join(DEMO_OUTPUTS)})")
    outputs.add_argument('--num_keyframes', type=positive_int, default=None,
                         help='interpolation: key seeds per grid cell (default: the seeds spread over the cells)')
    outputs.add_argument('--frames_per_key', type=positive_int, default=30,
                         help='interpolation: frames from one key to the next (30 fps)')
    outputs.add_argument('--interp_grid', default='1x1', help='interpolation: ROWSxCOLS cells of the video')
    inexact = parser.add_argument_group('inexact speed-ups (GRAM only; off by default, see README)')
    inexact.add_argument('--precision', default='fp32', help="radiance MLP precision: fp32 (exact), bf16, fp16")
    inexact.add_argument('--tf32', action='store_true', help='TF32 matmuls in the radiance MLP (CUDA only)')
    inexact.add_argument('--compile', action='store_true', help='torch.compile the radiance MLP')
    inexact.add_argument('--early_termination', type=nonnegative_float, default=0.0,
                         help='transmittance threshold T of early ray termination (0 = off; colour error <= ~T)')
    return parser
