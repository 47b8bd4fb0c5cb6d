"""Put a photo into a GRAM or GRAM-HD generator and see it from other views, with depth.

    python invert.py --image head.png --pose 0,0.3 --output_dir inverted/   # the shipped model
    python invert.py --image head.png --output_dir inverted/                # camera estimated, then refined
    python invert.py --image photo.jpg --landmarks lm.txt --ckpt pretrained/FFHQ_default/generator.pth \
        --config FFHQ_default --output_dir inverted/                        # a raw photo: cropped, posed
    python invert.py --image face.png --pose 0,0 --ckpt pretrained/FFHQ_default/generator.pth \
        --config FFHQ_default --steps 400 --output_dir inverted/
    python inference.py --latent inverted/latent.pt --type multiview3x7,video --outputs rgb,depth,normal

The photo must be a square crop aligned like the model's training images (preprocess_dataset.py makes
them); `--pose PITCH,YAW` is its camera as offsets from the frontal one in radians (positive yaw: the
camera moved to the subject's left, as inference.py's views; positive pitch: below the equator). Without
--pose the camera is searched for by short fits (rendering/inversion.estimate_pose) and refined during the
fit; `--refine_pose` refines a given one. The fit optimises GRAM's FiLM frequencies and phase shifts from
their mean (rendering/inversion.py), with the mirrored photo as a far-side prior (`--mirror_weight`).
Writes to --output_dir:
    fit.png       input | reconstruction | |difference| x 4, at the model's resolution
    latent.pt     the fitted latent: inference.py --latent renders it in place of a seed
    mesh_latent.ply   its alpha mesh (extract_mesh.py's code; --no_mesh to skip), grid_latent.mp4 + depth /
                  normal videos with --video
    grid_latent.png   the latent from inference.py's multiview3x7 views (yaw -0.4 ... 0.4 x pitch +-0.2) at
                  --img_size, with grid_latent_depth.png (16-bit) / _depth_preview.png / _depth.json, the
                  files `inference.py --latent latent.pt --type multiview3x7 --outputs rgb,depth` writes
`inference.py --latent`, `extract_mesh.py --latent` and `viewer.py --latent` take the latent file in place of a
seed. With --finetune_steps N the radiance network is fitted further after the latent (surfaces frozen, depth
and opacity at other cameras held to the model's) and saved as generator_finetuned.pt beside the latent:
    python inference.py --ckpt inverted/generator_finetuned.pt --latent inverted/latent.pt
GRAM-HD checkpoints: the FiLM parameters and the SR styles are fitted together, at the HR size (no fine-tuning).
Not yet (issue 27): a landmark detector (pass --landmarks).
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from generators import surfaces
from rendering import inversion, meshing, view_jobs
from rendering.views import frontal_angles, frontal_offsets
from utils.cli import (HelpFormatter, default_device, device, nonnegative_float, nonnegative_int, output_folder,
                       positive_float, positive_int, warn_ignored)
from utils.images import make_grid, save_png, to_uint8


def pose_pair(text):
    """'PITCH,YAW' (radians, offsets from the frontal camera) -> (pitch, yaw)."""
    parts = str(text).split(',')
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"expected PITCH,YAW in radians from the frontal camera, e.g. 0,0.3; "
                                         f"got {text}")
    return tuple(values)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--image', required=True, help='the photo: a square crop aligned like the training images')
    parser.add_argument('--pose', type=pose_pair, default=None,
                        help='PITCH,YAW of the photo, radians from the frontal camera (e.g. 0,0.3); default: '
                             'estimated')
    parser.add_argument('--landmarks', default=None,
                        help='5 face landmarks of a raw photo (a text file, 5 lines of "x y": eyes, nose, mouth '
                             'corners): the photo is cropped as preprocess_dataset.py --cate faces crops it '
                             '(aligned.png) and its camera estimated from them, then refined')
    parser.add_argument('--refine_pose', action='store_true',
                        help='optimise the given --pose during the fit too (always done when it is estimated)')
    parser.add_argument('--ckpt', default=None, help='checkpoint (default: the shipped model ckpts/synthetic_heads.pt)')
    parser.add_argument('--config', default=None, help='config name (needed for official checkpoints)')
    parser.add_argument('--output_dir', default='inverted', help='folder for fit.png, latent.pt and the views')
    parser.add_argument('--steps', type=positive_int, default=inversion.DEFAULT_STEPS, help='Adam steps of the fit')
    parser.add_argument('--lr', type=positive_float, default=inversion.DEFAULT_LR, help='Adam learning rate')
    parser.add_argument('--mirror_weight', type=nonnegative_float, default=inversion.DEFAULT_MIRROR_WEIGHT,
                        help='weight of the mirrored photo seen from the mirrored camera (a symmetry prior for the '
                             'side the photo does not show; 0: off)')
    parser.add_argument('--finetune_steps', type=nonnegative_int, default=0,
                        help='after the latent fit, fine-tune the radiance network this many steps (surfaces frozen, '
                             'depth and opacity at other views held): writes generator_finetuned.pt, which the '
                             'latent file then belongs to')
    parser.add_argument('--img_size', type=positive_int, default=None,
                        help=f"size of the novel views (default: the model's; shipped model "
                             f"{view_jobs.DEMO_IMG_SIZE})")
    parser.add_argument('--mesh_resolution', type=positive_int, default=meshing.DEFAULT_RESOLUTION,
                        help='grid of the mesh (extract_mesh.py --resolution); 0 is refused, use --no_mesh')
    parser.add_argument('--no_mesh', action='store_true', help='do not write mesh_latent.ply')
    parser.add_argument('--video', action='store_true',
                        help='also write the orbit video with depth and normals (inference.py --type video)')
    parser.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    demo = view_jobs.demo_defaults_apply(args)
    if demo:
        args.ckpt = view_jobs.DEMO_CHECKPOINT
        args.img_size = args.img_size or view_jobs.DEMO_IMG_SIZE
    if not os.path.isfile(args.image):
        raise SystemExit(f"error: --image {args.image} does not exist")
    if args.landmarks is not None and args.pose is not None:
        raise SystemExit("error: --pose and --landmarks both give the camera; pass one of them")
    with output_folder(args.output_dir):  # a failed run leaves no empty folder behind
        generator = view_jobs.load_or_exit(args.ckpt, args.config, args.device)
        is_hd = getattr(generator, 'is_hd', False)
        if is_hd and args.finetune_steps:
            raise SystemExit("error: --finetune_steps fine-tunes GRAM's radiance network; with a GRAM-HD checkpoint "
                             "only the latent (FiLM parameters and SR styles) is fitted: omit --finetune_steps")
        if is_hd and args.img_size is not None and not demo:
            warn_ignored('--img_size', args.img_size, f"GRAM-HD renders at its config's {generator.img_size}^2")
        pose, pose_note = args.pose, 'given'
        try:
            if args.landmarks is not None:
                aligned, pose = inversion.align_photo(args.image, args.landmarks)
                pose_note = f"from the landmarks {pose[0]:+.3f},{pose[1]:+.3f}"
                save_png(np.asarray(aligned), os.path.join(args.output_dir, 'aligned.png'))
            if pose is not None:
                inversion.check_pose(generator, *pose)
            target = inversion.load_target(args.image, int(generator.img_size),
                                           image=aligned if args.landmarks is not None else None)
        except inversion.InversionError as error:
            raise SystemExit(f"error: {error}")
        start = time.time()
        if pose is None:
            with tqdm(total=inversion.probe_count(generator), desc='camera search', unit='fit') as progress:
                pose = inversion.estimate_pose(generator, target, progress=progress)
            pose_note = f"estimated {pose[0]:+.3f},{pose[1]:+.3f}"
        refine = args.pose is None or args.refine_pose  # estimated (search or landmarks): refined
        with tqdm(total=args.steps, desc='fit', unit='step') as progress:
            styles, history, (pitch, yaw) = inversion.fit_latent(
                generator, target, *frontal_angles(*pose), steps=args.steps, lr=args.lr, progress=progress,
                mirror_weight=args.mirror_weight, pose_lr=inversion.DEFAULT_POSE_LR if refine else 0.0)
        seconds = time.time() - start
        if refine:
            pose = frontal_offsets(pitch[0], yaw[0])
            pose_note += f", refined to {pose[0]:+.3f},{pose[1]:+.3f}"
        checkpoint, finetune_note = args.ckpt, ''
        if args.finetune_steps:
            with tqdm(total=args.finetune_steps, desc='fine-tune', unit='step') as progress:
                generator, finetune_history = inversion.finetune_radiance(
                    generator, styles, target, pitch, yaw, args.finetune_steps, progress=progress)
            checkpoint = os.path.join(args.output_dir, 'generator_finetuned.pt')
            inversion.save_finetuned(checkpoint, generator, args.ckpt)
            finetune_note = (f"; fine-tuned {args.finetune_steps} steps: input view "
                             f"{inversion.psnr_from_mse(finetune_history[-1]):.2f} dB, generator_finetuned.pt")
        with torch.no_grad():
            reconstruction = generator.render(None, pitch, yaw, lock_view_dependence=True, styles=styles)
        difference = (reconstruction - target.to(reconstruction.device)).abs() * 4 - 1  # x4, shown in [-1, 1]
        tiles = list(to_uint8(torch.cat([target.to(reconstruction.device), reconstruction, difference])))
        save_png(make_grid(tiles, 1, 3), os.path.join(args.output_dir, 'fit.png'))
        latent_path = os.path.join(args.output_dir, 'latent.pt')
        inversion.save_latent(latent_path, styles, checkpoint, *pose, args.image, history)
        view_args = view_jobs.build_view_parser().parse_args(
            ['--output_dir', args.output_dir, '--outputs', 'rgb,depth', '--no_watermark']
            + (['--img_size', str(args.img_size)] if args.img_size and not is_hd else []))
        view_jobs.run_view_type(generator, view_args, ['latent'], args.device, 'multiview3x7',
                                latents={'latent': styles})
        if args.video:
            view_args.outputs = ['rgb', 'depth', 'normal']
            view_jobs.run_view_type(generator, view_args, ['latent'], args.device, 'video', latents={'latent': styles})
        mesh_note = ''
        if not args.no_mesh:
            mesh_args = meshing.check_args(meshing.build_mesh_parser().parse_args(
                ['--output_dir', args.output_dir, '--resolution', str(args.mesh_resolution)]))
            mesh_note, _ = meshing.extract_seed(generator, 'latent', mesh_args,
                                                surfaces.default_half_extent(generator), None, styles=styles)
    print(f"camera (pitch,yaw offsets, rad): {pose_note}")
    print(f"fit in {seconds:.1f} s ({args.steps} steps, {seconds / args.steps * 1000:.0f} ms/step): input-view PSNR "
          f"{inversion.psnr_from_mse(history[-1]):.2f} dB (from {inversion.psnr_from_mse(history[0]):.2f} dB at the "
          f"mean latent){finetune_note}; wrote fit.png, latent.pt, grid_latent.png (+ depth){', the video' if args.video else ''}"
          f"{'' if args.no_mesh else ', mesh_latent.ply'} to {args.output_dir}")
    if mesh_note:
        print(mesh_note)
    return 0


if __name__ == '__main__':
    sys.exit(main())
