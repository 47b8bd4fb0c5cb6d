"""Render multi-view grids, orbit videos or random-pose samples from a GRAM / GRAM-HD checkpoint.

    python inference.py            # the shipped model (ckpts/synthetic_heads.pt): 3x7 grids + orbit videos
    python inference.py --ckpt pretrained/FFHQ_default/generator.pth --config FFHQ_default --seeds 0-3
    python inference.py --ckpt ckpts/ffhq256.pt --config GRAMHD256_FFHQ --type video --seeds 0
    python inference.py --ckpt run/ema.pth --config FFHQ_default --type rand --seeds 0-9999 --truncation 1

View sets (`--type`, as GRAM-HD's inference.py; offsets from the frontal pose, radians):
    multiview1x3   yaw -0.3, 0, +0.3; pitch 0                     -> grid_{seed}.png (1x3)
    multiview3x7   yaw linspace(-0.4, 0.4, 7) x pitch +0.2, 0, -0.2 -> grid_{seed}.png (3x7)
    video          60 frames, yaw ping-pong +-0.3, pitch 0, 30 fps -> grid_{seed}.mp4
    rand           1 view from the training prior, view dependence on, no watermark -> {index:05d}.png
GRAM-HD checkpoints also write the 64^2 GRAM image as grid_{seed}_lr.png / grid_{seed}_lr.mp4.
A positive pitch offset puts the camera below the equator (looking up).

Inexact speed-ups for GRAM checkpoints, all off by default (errors measured in README "Inexact options"):
    --precision bf16|fp16   the radiance MLP in reduced precision
    --tf32                  TF32 matmuls in the radiance MLP (CUDA only)
    --compile               torch.compile the radiance MLP (the first render compiles)
    --early_termination T   skip points behind a transmittance below T (colour error <= ~T)
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from generators import build_generator, load_generator
from generators.camera import sample_camera_angles
from generators.gram import check_inexact_options
from utils.checkpoints import CheckpointError
from utils.images import add_watermark, make_grid, save_png, save_video, to_uint8
from utils.seeds import latent_for_seed, parse_seeds

VIEW_TYPES = ('video', 'multiview1x3', 'multiview3x7', 'rand')


def view_offsets(view_type):
    """(rows, cols, [(pitch_offset, yaw_offset), ...] row-major, lock_view_dependence) of a view set."""
    if view_type == 'multiview1x3':
        return 1, 3, [(0.0, yaw) for yaw in (-0.3, 0.0, 0.3)], True
    if view_type == 'multiview3x7':
        yaws = np.linspace(-0.4, 0.4, 7)
        return 3, 7, [(pitch, float(yaw)) for pitch in (0.2, 0.0, -0.2) for yaw in yaws], True
    if view_type == 'video':
        yaws = list(np.linspace(-0.3, 0.3, 31)[:-1]) + list(np.linspace(0.3, -0.3, 31)[:-1])
        return 1, 1, [(0.0, float(yaw)) for yaw in yaws], True
    raise ValueError(f"unknown view type {view_type!r}; expected one of {', '.join(VIEW_TYPES)}")


def frontal_angles(pitch_offset, yaw_offset):
    """Official pose labels (float64) for offsets from the frontal camera: (pi/2 + pitch, pi/2 + yaw)."""
    return (torch.tensor([math.pi / 2 + pitch_offset], dtype=torch.float64),
            torch.tensor([math.pi / 2 + yaw_offset], dtype=torch.float64))


def render_batch(generator, z, pitch, yaw, args_img_size, truncation, lock, render_options=None):
    """Render one camera per row of z; returns (images, lr_images or None) as uint8 [B, H, W, 3].
    `render_options`: GRAM's inexact options (`GramGenerator.render` keywords)."""
    with torch.no_grad():
        if getattr(generator, 'is_hd', False):
            images, lr_images = generator.render(z, pitch, yaw, truncation_psi=truncation,
                                                 lock_view_dependence=lock, return_lr=True)
            return to_uint8(images), to_uint8(lr_images)
        images = generator.render(z, pitch, yaw, img_size=args_img_size, truncation_psi=truncation,
                                  lock_view_dependence=lock, **(render_options or {}))
        return to_uint8(images), None


def render_hd_frame(generator, textures, pitch, yaw):
    """One view of precomputed GRAM-HD textures; returns (images, lr_images) as uint8 [B, H, W, 3]."""
    with torch.no_grad():
        images, lr_images = generator.render_from_textures(textures, pitch, yaw, return_lr=True)
    return to_uint8(images), to_uint8(lr_images)


def render_view_set(generator, seeds, views, device, img_size=None, truncation=0.7, lock=True, batch_size=4,
                    progress=None, render_options=None):
    """Render every view of every seed. Seeds are batched at one camera at a time, so the z-independent
    manifold intersections are computed once per camera and batch. For GRAM-HD with view dependence
    locked, the manifold textures (the expensive super-resolution) are computed once per batch of seeds
    and every view is only intersections + texture lookups; the frames equal those of `render`.

    views: list of (pitch [1] float64, yaw [1] float64); render_options as `render_batch`. Returns
    {seed: (frames, lr_frames or None)} with frames a list of uint8 HWC arrays in view order.
    """
    results = {}
    for first in range(0, len(seeds), batch_size):
        batch_seeds = seeds[first:first + batch_size]
        z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in batch_seeds]).to(device)
        frames = {seed: [] for seed in batch_seeds}
        lr_frames = {seed: [] for seed in batch_seeds}
        textures = None
        if getattr(generator, 'is_hd', False) and lock:
            with torch.no_grad():
                textures = generator.manifold_textures(z, truncation_psi=truncation)
        for pitch, yaw in views:
            pitch_batch = pitch.expand(len(batch_seeds))
            yaw_batch = yaw.expand(len(batch_seeds))
            if textures is not None:
                images, lr_images = render_hd_frame(generator, textures, pitch_batch, yaw_batch)
            else:
                images, lr_images = render_batch(generator, z, pitch_batch, yaw_batch, img_size, truncation, lock,
                                                 render_options)
            for row, seed in enumerate(batch_seeds):
                frames[seed].append(images[row])
                if lr_images is not None:
                    lr_frames[seed].append(lr_images[row])
            if progress is not None:
                progress.update(len(batch_seeds))
        for seed in batch_seeds:
            results[seed] = (frames[seed], lr_frames[seed] or None)
    return results


def watermark_all(frames, enabled):
    return [add_watermark(frame) for frame in frames] if enabled else frames


def run_view_type(generator, args, seeds, device, view_type):
    os.makedirs(args.output_dir, exist_ok=True)
    watermark = not args.no_watermark
    if view_type == 'rand':
        progress = tqdm(total=len(seeds), desc='rand', unit='img')
        for index, seed in enumerate(seeds):
            # z, then the pose, from one seeded stream: a seed always gives the same image on any device.
            rng = torch.Generator().manual_seed(seed)
            z = torch.randn(1, generator.z_dim, generator=rng).to(device)
            pitch, yaw = sample_camera_angles(1, generator=rng, **generator.prior)
            images, _ = render_batch(generator, z, pitch.double(), yaw.double(), args.img_size, args.truncation,
                                     lock=False, render_options=render_options(args))
            save_png(images[0], os.path.join(args.output_dir, f'{index:05d}.png'))  # never watermarked: FID input
            progress.update(1)
        progress.close()
        return
    rows, cols, offsets, lock = view_offsets(view_type)
    views = [frontal_angles(pitch, yaw) for pitch, yaw in offsets]
    progress = tqdm(total=len(seeds) * len(views), desc=view_type, unit='view')
    results = render_view_set(generator, seeds, views, device, args.img_size, args.truncation, lock,
                              args.batch_size, progress, render_options(args))
    progress.close()
    for seed, (frames, lr_frames) in results.items():
        outputs = [('', frames)] + ([('_lr', lr_frames)] if lr_frames else [])
        for suffix, tiles in outputs:
            tiles = watermark_all(tiles, watermark)
            if view_type == 'video':
                save_video(tiles, os.path.join(args.output_dir, f'grid_{seed}{suffix}.mp4'), fps=30)
            else:
                save_png(make_grid(tiles, rows, cols), os.path.join(args.output_dir, f'grid_{seed}{suffix}.png'))


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


def default_device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


# The model this project trained on its procedural heads (README: "The shipped model"), used when no
# checkpoint is given.
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ckpts', 'synthetic_heads.pt')
DEMO_TYPES = 'multiview3x7,video'
DEMO_SEEDS = '0-3'


def seeds_or_exit(text):
    """parse_seeds for a CLI: a bad list ends the program with the message naming the bad item."""
    try:
        return parse_seeds(text)
    except ValueError as error:
        raise SystemExit(f"--seeds: {error}")


def load_or_exit(ckpt, config, device, untrained=False):
    """load_for_inference for a CLI: unusable checkpoints end the program with the reason."""
    try:
        return load_for_inference(ckpt, config, device, untrained)
    except (CheckpointError, FileNotFoundError, KeyError) as error:
        raise SystemExit(f"error: {error}")


def load_for_inference(ckpt, config, device, untrained=False):
    """The generator of a checkpoint, or (`untrained`) a freshly initialised one of `config`."""
    if untrained:
        if config is None:
            raise SystemExit("--untrained needs --config")
        torch.manual_seed(0)
        generator = build_generator(config)
        return generator.to(device).eval()
    if ckpt is None:
        raise SystemExit("no checkpoint: pass --ckpt PATH (with --config for official files), "
                         "or --untrained --config NAME to check the installation")
    return load_generator(ckpt, config=config, device=device)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt', '--generator_file', dest='ckpt', default=None,
                        help='checkpoint: ours, an official generator.pth/ema.pth, or a GRAM-HD ckpts/*.pt')
    parser.add_argument('--config', default=None, help='config name (needed for official checkpoints)')
    parser.add_argument('--output_dir', default='images')
    parser.add_argument('--seeds', default=None,
                        help="e.g. '0-9999' or '0,1,4-6' (inclusive ranges); default 0-9 (shipped model: 0-3)")
    parser.add_argument('--type', default=None,
                        help=f"one or a comma list of {', '.join(VIEW_TYPES)}; default multiview1x3 "
                             f"(shipped model: {DEMO_TYPES})")
    parser.add_argument('--truncation', type=float, default=0.7, help='psi; 1.0 disables truncation')
    parser.add_argument('--img_size', type=int, default=None, help='render size (GRAM); default: the config')
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--batch_size', type=int, default=4, help='seeds rendered together at one camera')
    parser.add_argument('--no_watermark', action='store_true', help="do not mark images as 'generated'")
    parser.add_argument('--untrained', action='store_true',
                        help='render a freshly initialised generator of --config (checks the installation)')
    inexact = parser.add_argument_group('inexact speed-ups (GRAM only; off by default, see README)')
    inexact.add_argument('--precision', default='fp32', help="radiance MLP precision: fp32 (exact), bf16, fp16")
    inexact.add_argument('--tf32', action='store_true', help='TF32 matmuls in the radiance MLP (CUDA only)')
    inexact.add_argument('--compile', action='store_true', help='torch.compile the radiance MLP')
    inexact.add_argument('--early_termination', type=float, default=0.0,
                         help='transmittance threshold T of early ray termination (0 = off; colour error <= ~T)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    demo = args.ckpt is None and not args.untrained
    if demo:
        if not os.path.isfile(DEMO_CHECKPOINT):
            raise SystemExit(f"no --ckpt given and the shipped model {DEMO_CHECKPOINT} is missing; pass --ckpt PATH "
                             "(with --config for official files)")
        args.ckpt = DEMO_CHECKPOINT
    args.seeds = args.seeds or (DEMO_SEEDS if demo else '0-9')
    view_types = [name.strip() for name in (args.type or (DEMO_TYPES if demo else 'multiview1x3')).split(',')]
    for name in view_types:
        if name not in VIEW_TYPES:
            raise SystemExit(f"--type: unknown view type {name!r}; expected one or a comma list of "
                             f"{', '.join(VIEW_TYPES)}")
    seeds = seeds_or_exit(args.seeds)
    if args.batch_size < 1:
        raise SystemExit(f"--batch_size must be >= 1, got {args.batch_size}")
    generator = load_or_exit(args.ckpt, args.config, args.device, args.untrained)
    check_render_options(generator, args)
    for view_type in view_types:
        run_view_type(generator, args, seeds, args.device, view_type)
    print(f"wrote {', '.join(view_types)} outputs for {len(seeds)} seed(s) to {args.output_dir}")


if __name__ == '__main__':
    sys.exit(main())
