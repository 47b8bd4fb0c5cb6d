"""GRAM's multi-view script, with its flags correctly typed: per-frame PNGs and a GIF per seed.

    python render_multiview_images.py --generator_file pretrained_models/FFHQ_default/generator.pth \
        --config FFHQ_default --seeds 0-3 --frames 30 --psi 0.7

Trajectories (microsoft/GRAM render_multiview_images.py): faces/cats sweep the yaw back and forth over
+-0.4 rad at pitch 0 with view dependence locked; CARLA turns a full circle at phi = pi/3 with view
dependence on and the script's fov of 35 degrees (training used 30). Writes grid_{seed}_{i}.png and
grid_{seed}.gif (15 fps). Uses the EMA weights when the sibling ema.pth exists.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from rendering.view_jobs import (RENDER_BYTES_PER_PIXEL, load_or_exit, render_sizes, render_view_set,
                                 watermark_all)
from utils.cli import (HelpFormatter, default_device, device, output_folder, positive_int, seed_list, truncation,
                       warn_ignored)
from utils.images import save_gif, save_png
from utils.resources import require_memory


def trajectory(config_name, frames):
    """([(pitch [1] float64, yaw [1] float64)], lock_view_dependence, fov or None) for the GRAM script."""
    if config_name == 'CARLA_default':
        yaws = np.linspace(-math.pi, math.pi, frames + 1)[:-1]
        views = [(torch.tensor([math.pi / 3], dtype=torch.float64),
                  torch.tensor([math.pi / 2 + yaw], dtype=torch.float64)) for yaw in yaws]
        return views, False, 35
    half = frames // 2 + 1
    yaws = list(np.linspace(-0.4, 0.4, half)[:-1]) + list(np.linspace(0.4, -0.4, half)[:-1])
    views = [(torch.tensor([math.pi / 2], dtype=torch.float64),
              torch.tensor([math.pi / 2 + yaw], dtype=torch.float64)) for yaw in yaws]
    return views, True, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--generator_file', default='./pretrained_models/FFHQ_default/generator.pth',
                        help='checkpoint (the sibling ema.pth is used when present)')
    parser.add_argument('--output_dir', default='./experiments/multiview_images/FFHQ_default',
                        help='folder for the frames and GIFs')
    parser.add_argument('--config', default=None,
                        help="config name; official files default to FFHQ_default (the GRAM script's default), "
                             "checkpoints of this project carry their own")
    parser.add_argument('--seeds', type=seed_list, default='0-19',
                        help='e.g. 0-19 or 0,1,4-6 (inclusive ranges, each seed once)')
    parser.add_argument('--frames', type=positive_int, default=30, help='frames per seed (at least 2)')
    parser.add_argument('--psi', type=truncation, default=0.7, help='truncation psi in [0, 1]; 1.0 disables truncation')
    parser.add_argument('--no_watermark', action='store_true', help="do not mark frames as 'generated'")
    parser.add_argument('--img_size', type=positive_int, default=None, help='render size; default: the config')
    parser.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    parser.add_argument('--batch_size', type=positive_int, default=4, help='seeds rendered together at one camera')
    args = parser.parse_args(argv)
    seeds = args.seeds
    if args.frames < 2:
        parser.error(f"argument --frames: expected at least 2, got {args.frames}")
    with output_folder(args.output_dir):  # a run that fails before writing leaves no empty folder
        generator = load_or_exit(args.generator_file, args.config, args.device, default_config='FFHQ_default')
        if getattr(generator, 'is_hd', False) and args.img_size is not None:
            warn_ignored('--img_size', args.img_size, f"GRAM-HD renders at its config's {generator.img_size}^2")
        size, lr_size = render_sizes(generator, args.img_size)
        pixels = size * size + (lr_size * lr_size if lr_size else 0)
        # before the trajectory is built: its cameras alone grow with --frames
        require_memory(len(seeds) * args.frames * pixels * 3 + min(args.batch_size, len(seeds)) * pixels
                       * RENDER_BYTES_PER_PIXEL, f"{len(seeds)} seed(s) x --frames {args.frames} of {size}^2 pixels",
                       args.device, advice='use a smaller --img_size, fewer --frames or seeds')
        views, lock, fov = trajectory(args.config or generator.config_name, args.frames)
        if fov is not None:
            generator.camera['fov'] = fov
        progress = tqdm(total=len(seeds) * len(views), desc='frames', unit='view')
        results = render_view_set(generator, seeds, views, args.device, args.img_size, args.psi, lock,
                                  args.batch_size, progress)
        progress.close()
        try:
            for seed, (frames, _) in results.items():
                frames = watermark_all(frames, not args.no_watermark)
                for index, frame in enumerate(frames):
                    save_png(frame, os.path.join(args.output_dir, f'grid_{seed}_{index}.png'))
                save_gif(frames, os.path.join(args.output_dir, f'grid_{seed}.gif'), fps=15)
        except OSError as error:  # a disk that fills up or a folder removed while writing
            raise SystemExit(f"error: cannot write to --output_dir {args.output_dir}: {error.strerror or error} "
                             f"({error.filename or 'while saving'})")
    print(f"wrote {len(views)} frames and a GIF for {len(seeds)} seed(s) to {args.output_dir}")


if __name__ == '__main__':
    sys.exit(main())
