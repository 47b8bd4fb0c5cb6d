"""Rendering benchmark: ms/image for a batch of seeds at one camera and for an orbit, fast vs plain path.

    python bench.py --config FFHQ_default --sizes 64,256          # the figures in README
    python bench.py --tiny                                        # seconds; CI runs this to keep it working

Prints one line per measurement and writes JSON (--json). Timings are the median of --repeats runs after
--warmup runs. FLOP/s counts the multiply-adds of the two MLPs' Linear layers (x2) on the points each
path actually evaluates, so the fast path's figure is the work it did, not the plain path's. Peak memory
is CUDA max allocated on GPU, the process's peak RSS on CPU (a high-water mark of the whole run).
"""
import argparse
import json
import math
import platform
import resource
import statistics
import sys
import time

import torch

from generators import build_generator
from utils.seeds import latent_for_seed


def linear_macs(module):
    """Multiply-adds per input row of the nn.Linear layers of a module (mapping network excluded)."""
    return sum(m.in_features * m.out_features for name, m in module.named_modules()
               if isinstance(m, torch.nn.Linear) and 'mapping_network' not in name)


class PointCounter:
    """Counts the rows fed to the manifold MLP and the radiance MLP (forward hooks)."""

    def __init__(self, generator):
        self.field_points = 0
        self.radiance_points = 0
        representation = generator.representation
        representation.sample_network.register_forward_hook(self._count_field)
        representation.rf_network.register_forward_hook(self._count_radiance)
        # the fast path's folded evaluation bypasses the module call (and so the hook): count it directly
        folded = representation.rf_network.forward_folded

        def counted_folded(points, *args, **kwargs):
            self.radiance_points += points.shape[0]
            return folded(points, *args, **kwargs)
        representation.rf_network.forward_folded = counted_folded
        self.field_macs = linear_macs(representation.sample_network)
        self.radiance_macs = linear_macs(representation.rf_network)

    def _count_field(self, module, inputs, output):
        self.field_points += inputs[0].numel() // 3

    def _count_radiance(self, module, inputs, output):
        self.radiance_points += inputs[0].numel() // 3

    def reset(self):
        self.field_points = self.radiance_points = 0

    def flops(self):
        return 2 * (self.field_points * self.field_macs + self.radiance_points * self.radiance_macs)


def synchronize(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def peak_memory_mb(device):
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_calls(call, device, warmup, repeats, counter):
    for _ in range(warmup):
        call()
    seconds, flops = [], []
    for _ in range(repeats):
        counter.reset()
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        flops.append(counter.flops())
    return statistics.median(seconds), statistics.median(flops)


def bench_render(generator, counter, device, img_size, batch, frames, fast, warmup, repeats):
    z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in range(batch)]).to(device)
    frontal = torch.full((batch,), math.pi / 2, dtype=torch.float64)
    yaws = torch.linspace(-0.3, 0.3, frames, dtype=torch.float64) + math.pi / 2
    results = []

    def seeds_at_one_camera():
        with torch.no_grad():
            generator.render(z, frontal, frontal, img_size=img_size, fast=fast)

    def orbit():
        with torch.no_grad():
            for yaw in yaws:
                generator.render(z[:1], frontal[:1], yaw.reshape(1), img_size=img_size, fast=fast,
                                 lock_view_dependence=True)

    for name, call, images in (('batch_one_camera', seeds_at_one_camera, batch), ('orbit', orbit, frames)):
        seconds, flops = time_calls(call, device, warmup, repeats, counter)
        results.append({'case': name, 'img_size': img_size, 'path': 'fast' if fast else 'plain',
                        'images': images, 'ms_per_image': 1000 * seconds / images,
                        'images_per_s': images / seconds, 'gflop_per_s': flops / seconds / 1e9,
                        'peak_memory_mb': peak_memory_mb(device)})
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='FFHQ_default')
    parser.add_argument('--sizes', default='64', help='comma-separated render sizes')
    parser.add_argument('--batch', type=int, default=4, help='seeds rendered together at one camera')
    parser.add_argument('--frames', type=int, default=4, help='frames of the orbit (one seed)')
    parser.add_argument('--paths', default='fast,plain', help='fast, plain or both')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='CPU intra-op threads (default: torch)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--tiny', action='store_true', help='TINY_GRAM, 16^2, one repeat: a smoke run')
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.sizes, args.batch, args.frames, args.warmup, args.repeats = 'TINY_GRAM', '16', 2, 2, 0, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    generator = build_generator(args.config).to(args.device).eval()
    counter = PointCounter(generator)
    environment = {'config': args.config, 'device': args.device, 'torch': torch.__version__,
                   'threads': torch.get_num_threads(), 'cpu': platform.processor() or platform.machine(),
                   'gpu': torch.cuda.get_device_name() if args.device.startswith('cuda') else None}
    print(json.dumps(environment))
    results = []
    for img_size in [int(s) for s in args.sizes.split(',')]:
        for path in args.paths.split(','):
            for row in bench_render(generator, counter, args.device, img_size, args.batch, args.frames,
                                    path == 'fast', args.warmup, args.repeats):
                results.append(row)
                print(f"{row['case']:>17} {row['img_size']:>4}^2 {row['path']:>5}: {row['ms_per_image']:9.1f} "
                      f"ms/image  {row['images_per_s']:7.3f} img/s  {row['gflop_per_s']:6.1f} GFLOP/s  "
                      f"peak {row['peak_memory_mb']:.0f} MB")
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump({'environment': environment, 'results': results}, stream, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
