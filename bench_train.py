"""Training-step benchmark: seconds per iteration (one D step + one G step) and peak memory for a config.

    python bench_train.py --config GRAM64_FFHQ --iterations 3                # the config's batch (8)
    python bench_train.py --config GRAM64_FFHQ --iterations 2 --batch_size 2 # reduced batch (CPU)
    python bench_train.py --config FFHQ_default --patch_split 4             # strip-wise G backward

Real images are random tensors and real poses come from the camera prior, so no dataset is needed; the
step is the training one (training.gan3d.train_step), AMP on CUDA, fp32 on CPU. The first iteration is
reported separately (allocator and cuDNN warm-up). Peak memory is CUDA max allocated on GPU, the
process's peak RSS on CPU (a high-water mark of the whole process, model building included).
"""
import argparse
import json
import statistics
import sys
import time

import torch

import configs
from bench import peak_memory_mb, synchronize  # the rendering benchmark's timing/memory conventions
from training.gan3d import train_step
from training.state import build_training_run


def benchmark(config_name, iterations=3, batch_size=None, patch_split=None, device=None, seed=0):
    """Run 1 + `iterations` training iterations; returns a dict of figures (seconds are per iteration)."""
    config = configs.get_config(config_name)
    if batch_size is not None:
        config['global']['batch_size'] = batch_size
        kwargs = config['process']['kwargs']
        kwargs['batch_split'] = min(kwargs.get('batch_split', 1), batch_size)
        if batch_size % kwargs['batch_split']:
            raise ValueError(f"--batch_size {batch_size} is not divisible by the config's batch_split "
                             f"{kwargs['batch_split']}")
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    run = build_training_run(config, config_name, device, seed=seed, patch_split=patch_split)
    batch, size = config['global']['batch_size'], config['global']['img_size']
    rng = torch.Generator().manual_seed(seed)
    real_images = torch.rand(batch, 3, size, size, generator=rng) * 2 - 1
    pitch, yaw = run.generator.sample_poses(batch, 'cpu', generator=rng)
    real_poses = torch.stack([pitch, yaw], -1)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for step in range(iterations + 1):
        synchronize(str(device))
        started = time.perf_counter()
        train_step(run, real_images, real_poses, step)
        synchronize(str(device))
        seconds.append(time.perf_counter() - started)
    return {
        'config': config_name, 'device': str(device), 'batch_size': batch, 'img_size': size,
        'batch_split': config['process']['kwargs'].get('batch_split', 1), 'patch_split': patch_split,
        'amp': run.amp, 'threads': torch.get_num_threads(), 'iterations': iterations,
        'first_iteration_s': seconds[0], 'seconds_per_iteration': statistics.median(seconds[1:]),
        'images_per_s': batch / statistics.median(seconds[1:]), 'peak_memory_mb': peak_memory_mb(str(device)),
        'peak_memory_kind': 'cuda max allocated' if device.type == 'cuda' else 'process peak RSS',
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='GRAM64_FFHQ', help=f"one of: {', '.join(configs.config_names())}")
    parser.add_argument('--iterations', type=int, default=3, help='timed iterations after the first')
    parser.add_argument('--batch_size', type=int, default=None, help="default: the config's per-GPU batch")
    parser.add_argument('--patch_split', type=int, default=None)
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    args = parser.parse_args(argv)
    if args.iterations < 1:
        raise SystemExit("--iterations must be >= 1")
    result = benchmark(args.config, args.iterations, args.batch_size, args.patch_split, args.device)
    print(f"{result['config']} on {result['device']} (amp {result['amp']}, {result['threads']} threads): batch "
          f"{result['batch_size']} (split {result['batch_split']}, patch_split {result['patch_split']}), "
          f"{result['seconds_per_iteration']:.3f} s/iteration (median of {result['iterations']}; first "
          f"{result['first_iteration_s']:.3f} s), {result['images_per_s']:.2f} images/s, peak memory "
          f"{result['peak_memory_mb']:.0f} MiB ({result['peak_memory_kind']})")
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump(result, stream, indent=2)
    return result


if __name__ == '__main__':
    main()
    sys.exit(0)
