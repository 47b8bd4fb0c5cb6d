"""Rendering benchmark: ms/image for a batch of seeds at one camera and for an orbit, fast vs plain path.

    python bench.py --config FFHQ_default --sizes 64,256          # the figures in README
    python bench.py --tiny                                        # seconds; CI runs this to keep it working
    python bench.py --ckpt ckpts/synthetic_heads.pt --early_termination 0.01 --paths fast,inexact

Prints one line per measurement and writes JSON (--json). Timings are the median of --repeats runs after
--warmup runs; `first_call_s` is the first call alone (it includes torch.compile's compilation). FLOP/s
counts the multiply-adds of the two MLPs' Linear layers (x2) on the points each path actually evaluates,
so the fast path's figure is the work it did, not the plain path's. Peak memory is CUDA max allocated on
GPU, the process's peak RSS on CPU (a high-water mark of the whole run). With --peak_gflops (the device's
peak you state, e.g. from its data sheet) each row also gives the achieved fraction of it.
Training seconds/iteration and memory are measured by bench_train.py (its own process, so that its peak
memory is its own).

The inexact options (--precision, --tf32, --compile, --early_termination; see `GramGenerator.render`) add
the path 'inexact': the fast path with those options. Its rows carry the options and the max / mean
|difference| of its images from the exact fast path's images of the same seeds and cameras.
"""
import argparse
import functools
import json
import math
import platform
import sys

import torch

from generators import build_generator, load_generator
from generators.gram import RADIANCE_PATHS, check_inexact_options, resolve_radiance_path
from utils.benchmarking import PointCounter, peak_memory_mb, time_calls
from utils.cli import default_device, device, nonnegative_float, nonnegative_int, positive_float, positive_int
from utils.seeds import latent_for_seed

PATHS = ('fast', 'plain', 'inexact')


def bench_render(generator, counter, device, img_size, batch, frames, path, options, warmup, repeats,
                 radiance_path='auto'):
    """Rows of the two cases (seeds at one camera, orbit of one seed) on one path: 'fast', 'plain', or
    'inexact' (the fast path with the render `options`, compared with the exact fast path's images).
    `radiance_path` is the fast path's (GramGenerator.RADIANCE_PATHS)."""
    z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in range(batch)]).to(device)
    frontal = torch.full((batch,), math.pi / 2, dtype=torch.float64)
    yaws = torch.linspace(-0.3, 0.3, frames, dtype=torch.float64) + math.pi / 2
    render_options = dict(fast=path != 'plain', **(options if path == 'inexact' else {}))
    if path != 'plain':
        render_options['radiance_path'] = radiance_path
    results = []

    def seeds_at_one_camera(**kwargs):
        with torch.no_grad():
            return generator.render(z, frontal, frontal, img_size=img_size, **kwargs)

    def orbit(**kwargs):
        with torch.no_grad():
            return torch.cat([generator.render(z[:1], frontal[:1], yaw.reshape(1), img_size=img_size,
                                               lock_view_dependence=True, **kwargs) for yaw in yaws])

    for name, case, images in (('batch_one_camera', seeds_at_one_camera, batch), ('orbit', orbit, frames)):
        seconds, flops, points, first_call = time_calls(functools.partial(case, **render_options), device,
                                                        warmup, repeats, counter)
        row = {'case': name, 'img_size': img_size, 'path': path, 'images': images,
               'radiance_path': None if path == 'plain' else resolve_radiance_path(radiance_path, device),
               'ms_per_image': 1000 * seconds / images, 'images_per_s': images / seconds,
               'gflop_per_s': flops / seconds / 1e9, 'radiance_points': points, 'first_call_s': first_call,
               'peak_memory_mb': peak_memory_mb(device)}
        if path == 'inexact':
            difference = (case(**render_options) - case(fast=True, radiance_path=radiance_path)).abs()
            row.update(options=options, max_abs_diff_vs_exact=difference.max().item(),
                       mean_abs_diff_vs_exact=difference.mean().item())
        results.append(row)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=None,
                        help='config name (default FFHQ_default, untrained; needed with an official --ckpt)')
    parser.add_argument('--ckpt', default=None, help='render this GRAM checkpoint instead of an untrained model')
    parser.add_argument('--sizes', default='64', help='comma-separated render sizes')
    parser.add_argument('--batch', type=positive_int, default=4, help='seeds rendered together at one camera')
    parser.add_argument('--frames', type=positive_int, default=4, help='frames of the orbit (one seed)')
    parser.add_argument('--paths', default=None,
                        help=f"comma list of {', '.join(PATHS)} (default fast,plain, plus inexact when an "
                             "inexact option is given)")
    parser.add_argument('--radiance_path', default='auto', choices=RADIANCE_PATHS,
                        help="the fast path's culled radiance evaluation: auto = batched on CUDA, per_latent on CPU")
    parser.add_argument('--device', type=device, default=default_device())
    parser.add_argument('--threads', type=positive_int, default=None, help='CPU intra-op threads (default: torch)')
    parser.add_argument('--warmup', type=nonnegative_int, default=1)
    parser.add_argument('--repeats', type=positive_int, default=3)
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--peak_gflops', type=positive_float, default=None,
                        help="the device's peak GFLOP/s for this precision, as you state it (e.g. about 80 for a "
                             "256-wide Linear+sine chain on this project's 2-core CPU); rows add the fraction")
    parser.add_argument('--tiny', action='store_true', help='TINY_GRAM, 16^2, one repeat: a smoke run')
    parser.add_argument('--precision', default='fp32', help="inexact path: radiance MLP in 'bf16' or 'fp16'")
    parser.add_argument('--tf32', action='store_true', help='inexact path: TF32 matmuls in the radiance MLP (CUDA)')
    parser.add_argument('--compile', action='store_true', help='inexact path: torch.compile the radiance MLP')
    parser.add_argument('--early_termination', type=nonnegative_float, default=0.0,
                        help='inexact path: transmittance threshold of early ray termination (0 = off)')
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.sizes, args.batch, args.frames, args.warmup, args.repeats = 'TINY_GRAM', '16', 2, 2, 0, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    options = dict(precision=args.precision, early_termination=args.early_termination, tf32=args.tf32,
                   compile=args.compile)
    try:
        check_inexact_options(True, **options)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    inexact = options != dict(precision='fp32', early_termination=0.0, tf32=False, compile=False)
    paths = (args.paths or ('fast,plain,inexact' if inexact else 'fast,plain')).split(',')
    for path in paths:
        if path not in PATHS:
            raise SystemExit(f"--paths: unknown path {path!r}; expected a comma list of {', '.join(PATHS)}")
    if 'inexact' in paths and not inexact:
        raise SystemExit("--paths inexact needs an inexact option (--precision, --tf32, --compile, "
                         "--early_termination)")

    if args.ckpt:
        generator = load_generator(args.ckpt, config=args.config, device=args.device)
    else:
        torch.manual_seed(0)
        generator = build_generator(args.config or 'FFHQ_default').to(args.device).eval()
    if getattr(generator, 'is_hd', False):
        raise SystemExit("bench.py measures GRAM renders; use bench_hd.py for GRAM-HD")
    counter = PointCounter(generator)
    environment = {'config': args.config, 'ckpt': args.ckpt, 'device': args.device, 'torch': torch.__version__,
                   'threads': torch.get_num_threads(), 'cpu': platform.processor() or platform.machine(),
                   'gpu': torch.cuda.get_device_name() if args.device.startswith('cuda') else None,
                   'options': options if inexact else None}
    print(json.dumps(environment))
    results = []
    for img_size in [int(s) for s in args.sizes.split(',')]:
        for path in paths:
            for row in bench_render(generator, counter, args.device, img_size, args.batch, args.frames, path,
                                    options, args.warmup, args.repeats, args.radiance_path):
                if args.peak_gflops:
                    row['stated_peak_gflop_per_s'] = args.peak_gflops
                    row['fraction_of_peak'] = row['gflop_per_s'] / args.peak_gflops
                results.append(row)
                difference = (f"  max|diff| {row['max_abs_diff_vs_exact']:.2g} mean {row['mean_abs_diff_vs_exact']:.2g}"
                              if path == 'inexact' else '')
                print(f"{row['case']:>17} {row['img_size']:>4}^2 {row['path']:>7}: {row['ms_per_image']:9.1f} "
                      f"ms/image  {row['images_per_s']:7.3f} img/s  {row['gflop_per_s']:6.1f} GFLOP/s  "
                      f"{row['radiance_points']} radiance points  first call {row['first_call_s']:.3g} s  "
                      f"peak {row['peak_memory_mb']:.0f} MB{difference}"
                      + (f"  {100 * row['fraction_of_peak']:.0f}% of the stated peak" if args.peak_gflops else ''))
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump({'environment': environment, 'results': results}, stream, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
