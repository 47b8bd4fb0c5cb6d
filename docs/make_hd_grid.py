"""README's picture of GRAM-HD stage 2 on the procedural heads: per row, held-out true heads | the stage-1 GRAM
rendered directly at the HR size | the GRAM-HD model at the HR size, each at the same yaws.

    python docs/make_hd_grid.py --hd_ckpt ckpts/synthetic_heads_hd.pt     # -> docs/synthetic_heads_hd_grid.png

The true heads are the first heads of held-out procedural set `--truth_seed` (101, never trained on); the
two models render the latents inference.py renders for seeds `--seeds` (so a row's truth is *a* head of the
data, not the one the latent shows). Views: the frontal camera turned by `--yaws`, pitch 0, view dependence
locked; the stage-1 model at the HD model's HR size.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import synthetic_data  # noqa: E402
from generators import load_generator  # noqa: E402
from rendering.views import frontal_angles  # noqa: E402
from utils.images import make_grid, save_png, to_uint8  # noqa: E402
from utils.seeds import latent_for_seed, parse_seeds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def repeat_head(heads, index, count):
    """Head `index` of stacked heads (nested dicts / tuples of [n, ...] tensors), repeated `count` times."""
    if isinstance(heads, dict):
        return {key: repeat_head(value, index, count) for key, value in heads.items()}
    if isinstance(heads, tuple):
        return tuple(repeat_head(value, index, count) for value in heads)
    return heads[index:index + 1].expand(count, *heads.shape[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hd_ckpt', required=True)
    parser.add_argument('--stage1_ckpt', default=os.path.join(os.path.dirname(HERE), 'ckpts', 'synthetic_heads.pt'))
    parser.add_argument('--output', default=os.path.join(HERE, 'synthetic_heads_hd_grid.png'))
    parser.add_argument('--seeds', default='0-3')
    parser.add_argument('--yaws', default='-0.3,0,0.3')
    parser.add_argument('--truth_seed', type=int, default=101)
    parser.add_argument('--truncation', type=float, default=1.0)
    args = parser.parse_args(argv)
    hd, stage1 = load_generator(args.hd_ckpt).eval(), load_generator(args.stage1_ckpt).eval()
    size = hd.img_size
    seeds = parse_seeds(args.seeds)
    yaws = [float(value) for value in args.yaws.split(',')]
    angles = [frontal_angles(0.0, yaw) for yaw in yaws]
    pitch, yaw = torch.cat([p for p, _ in angles]), torch.cat([y for _, y in angles])
    heads, _, _ = synthetic_data.heads_for_indices(args.truth_seed, range(len(seeds)))
    tiles = []
    with torch.no_grad():
        for row, seed in enumerate(seeds):
            truth = synthetic_data.render_heads(repeat_head(heads, row, len(yaws)), pitch, yaw, size) * 2 - 1
            z = latent_for_seed(seed, hd.z_dim).expand(len(yaws), -1)
            low = stage1.render(z, pitch, yaw, img_size=size, truncation_psi=args.truncation,
                                lock_view_dependence=True)
            high = hd.render(z, pitch, yaw, truncation_psi=args.truncation, lock_view_dependence=True)
            for images in (truth, low, high):
                tiles += list(to_uint8(images.clamp(-1, 1)))
    save_png(make_grid(tiles, len(seeds), 3 * len(yaws)), args.output)
    print(f"wrote {args.output}: {len(seeds)} rows x (truth | stage 1 at {size}^2 | GRAM-HD at {size}^2) x "
          f"{len(yaws)} yaws")


if __name__ == '__main__':
    main()
