"""README's picture of the shipped model: per seed, a row of views over yaw and under it their depth.

    python docs/make_shipped_grid.py                      # ckpts/synthetic_heads.pt -> docs/synthetic_heads_grid.png
    python docs/make_shipped_grid.py --ckpt results/synth_cpu_wide/step010000_ema.pth --output grid.png

Views: the frontal camera turned by `--yaws` (radians), pitch 0, view dependence locked to the frontal view
(as inference.py's grids). Depth: the expected depth along each ray, coloured near yellow ... far violet over
the camera's depth band (ray_start ... ray_end), so GRAM's background plane is violet and a head in front of
it is orange to yellow.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from generators import load_generator  # noqa: E402
from rendering.view_jobs import DEMO_CHECKPOINT  # noqa: E402
from rendering.views import frontal_angles  # noqa: E402
from utils.images import make_grid, save_png, to_uint8  # noqa: E402
from utils.maps import colorize_depth  # noqa: E402
from utils.seeds import latent_for_seed, parse_seeds  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt', default=DEMO_CHECKPOINT)
    parser.add_argument('--output', default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         'synthetic_heads_grid.png'))
    parser.add_argument('--seeds', default='0-3')
    parser.add_argument('--yaws', default='-0.5,-0.3,-0.15,0,0.15,0.3,0.5')
    parser.add_argument('--img_size', type=int, default=64)
    args = parser.parse_args(argv)
    generator = load_generator(args.ckpt).eval()
    yaws = [float(value) for value in args.yaws.split(',')]
    camera = generator.config['camera']
    tiles = []
    angles = [frontal_angles(0.0, yaw) for yaw in yaws]
    pitch_angles, yaw_angles = torch.cat([p for p, _ in angles]), torch.cat([y for _, y in angles])
    for seed in parse_seeds(args.seeds):
        # the latent inference.py renders for this seed, seen from every view in one call
        z = latent_for_seed(seed, generator.z_dim).expand(len(yaws), -1)
        with torch.no_grad():
            # psi 1 (no truncation), stated in README: inference.py's default is 0.7
            images, depths = generator.render(z, pitch_angles, yaw_angles, img_size=args.img_size, return_depth=True,
                                              lock_view_dependence=True, truncation_psi=1.0)
        tiles += list(to_uint8(images))
        tiles += [colorize_depth(depth[0].numpy(), camera['ray_start'], camera['ray_end']) for depth in depths]
    rows = len(tiles) // len(yaws)
    save_png(make_grid(tiles, rows, len(yaws)), args.output)
    print(f"wrote {args.output} ({rows // 2} seeds x {len(yaws)} views, RGB over depth)")


if __name__ == '__main__':
    main()
