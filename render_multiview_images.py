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

from inference import load_or_exit, render_view_set, watermark_all
from utils.cli import HelpFormatter, default_device, device, finite_float, positive_int, seed_list, writable_dir
from utils.images import save_gif, save_png


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
    parser.add_argument('--config', default='FFHQ_default', help='config name')
    parser.add_argument('--seeds', type=seed_list, default='0-19',
                        help='e.g. 0-19 or 0,1,4-6 (inclusive ranges, each seed once)')
    parser.add_argument('--frames', type=positive_int, default=30, help='frames per seed (at least 2)')
    parser.add_argument('--psi', type=finite_float, default=0.7, help='truncation psi; 1.0 disables truncation')
    parser.add_argument('--no_watermark', action='store_true', help="do not mark frames as 'generated'")
    parser.add_argument('--img_size', type=positive_int, default=None, help='render size; default: the config')
    parser.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    parser.add_argument('--batch_size', type=positive_int, default=4, help='seeds rendered together at one camera')
    args = parser.parse_args(argv)
    seeds = args.seeds
    if args.frames < 2:
        parser.error(f"argument --frames: expected at least 2, got {args.frames}")
    writable_dir(args.output_dir)
    generator = load_or_exit(args.generator_file, args.config, args.device)
    views, lock, fov = trajectory(args.config, args.frames)
    if fov is not None:
        generator.camera['fov'] = fov
    progress = tqdm(total=len(seeds) * len(views), desc='frames', unit='view')
    results = render_view_set(generator, seeds, views, args.device, args.img_size, args.psi, lock,
                              args.batch_size, progress)
    progress.close()
    for seed, (frames, _) in results.items():
        frames = watermark_all(frames, not args.no_watermark)
        for index, frame in enumerate(frames):
            save_png(frame, os.path.join(args.output_dir, f'grid_{seed}_{index}.png'))
        save_gif(frames, os.path.join(args.output_dir, f'grid_{seed}.gif'), fps=15)
    print(f"wrote {len(views)} frames and a GIF for {len(seeds)} seed(s) to {args.output_dir}")


if __name__ == '__main__':
    sys.exit(main())
