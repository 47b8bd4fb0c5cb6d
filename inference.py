"""Render multi-view grids, orbit videos or random-pose samples from a GRAM / GRAM-HD checkpoint.

    python inference.py            # the shipped model (ckpts/synthetic_heads.pt): 1x3 grids of 128^2 views
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
import os
import sys

from rendering.inversion import latent_or_exit
from rendering.view_jobs import (DEMO_CHECKPOINT, DEMO_IMG_SIZE, DEMO_OUTPUTS, DEMO_SEEDS, DEMO_TYPES,
                                 build_view_parser, check_job_fits, check_render_options, demo_defaults_apply,
                                 interpolation_setup, load_or_exit, run_view_type, seeds_or_exit)
from rendering.views import VIEW_TYPES
from utils.cli import output_folder, warn_ignored


def build_parser():
    return build_view_parser(__doc__)


def main(argv=None):
    args = build_parser().parse_args(argv)
    demo = demo_defaults_apply(args)
    if demo:
        if not os.path.isfile(DEMO_CHECKPOINT):
            raise SystemExit(f"no --ckpt given and the shipped model {DEMO_CHECKPOINT} is missing; pass --ckpt PATH "
                             "(with --config for official files)")
        args.ckpt = DEMO_CHECKPOINT
        if args.img_size is None:
            args.img_size = DEMO_IMG_SIZE
        if args.outputs is None:
            args.outputs = list(DEMO_OUTPUTS)
    if args.seeds is None:
        args.seeds = DEMO_SEEDS if demo else '0-9'
    view_types = args.type if args.type is not None else (DEMO_TYPES if demo else 'multiview1x3').split(',')
    for name in view_types:
        if name not in VIEW_TYPES:
            raise SystemExit(f"--type: unknown view type {name}; expected one or a comma list of "
                             f"{', '.join(VIEW_TYPES)}")
    seeds = seeds_or_exit(args.seeds)
    if 'interpolation' in view_types:
        interpolation_setup(args, seeds)  # bad interpolation flags fail before the model loads
    with output_folder(args.output_dir):  # a failed run leaves no empty folder behind
        generator = load_or_exit(args.ckpt, args.config, args.device, args.untrained)
        check_render_options(generator, args)
        if getattr(generator, 'is_hd', False) and args.img_size is not None and not demo:
            warn_ignored('--img_size', args.img_size, f"GRAM-HD renders at its config's {generator.img_size}^2 "
                         f"(and {generator.lr_img_size}^2 for the LR images)")
        latents = None
        if args.latent is not None:
            seeds, latents = latent_or_exit(generator, args.latent, args.ckpt, view_types)
        check_job_fits(generator, args, seeds, view_types)
        try:
            for view_type in view_types:
                run_view_type(generator, args, seeds, args.device, view_type, latents)
        except OSError as error:  # a disk that fills up or a folder removed while rendering
            raise SystemExit(f"error: cannot write to --output_dir {args.output_dir}: {error.strerror or error} "
                             f"({error.filename or 'while saving'})")
    print(f"wrote {', '.join(view_types)} outputs for {len(seeds)} seed(s) to {args.output_dir}")


if __name__ == '__main__':
    sys.exit(main())
