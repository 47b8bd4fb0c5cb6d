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

from inference import default_device, load_or_exit, render_view_set, seeds_or_exit, watermark_all
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--generator_file', default='./pretrained_models/FFHQ_default/generator.pth')
    parser.add_argument('--output_dir', default='./experiments/multiview_images/FFHQ_default')
    parser.add_argument('--config', default='FFHQ_default')
    parser.add_argument('--seeds', default='0-19')
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--psi', type=float, default=0.7)
    parser.add_argument('--no_watermark', action='store_true')
    parser.add_argument('--img_size', type=int, default=None, help='render size; default: the config')
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--batch_size', type=int, default=4)
    args = parser.parse_args(argv)
    seeds = seeds_or_exit(args.seeds)
    if args.frames < 2:
        raise SystemExit(f"--frames must be >= 2, got {args.frames}")
    generator = load_or_exit(args.generator_file, args.config, args.device)
    views, lock, fov = trajectory(args.config, args.frames)
    if fov is not None:
        generator.camera['fov'] = fov
    os.makedirs(args.output_dir, exist_ok=True)
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
