"""Training-step benchmark: seconds per iteration (one D step + one G step) and peak memory for a config.

    python bench_train.py --config GRAM64_FFHQ --iterations 3                # the config's batch (8)
    python bench_train.py --config GRAM64_FFHQ --iterations 2 --batch_size 2 # reduced batch (CPU)
    python bench_train.py --config FFHQ_default --patch_split 4             # strip-wise G backward
    python bench_train.py --config FFHQ_default --saved_only --training_path plain  # sizes the G graph only

Real images are random tensors and real poses come from the camera prior, so no dataset is needed; the
step is the config's training one (stage 1 `training.gan3d`, GRAM-HD stage 2 `training.sr_gan3d`; the
stage-2 GRAM part is random here, the cost is the same), AMP on CUDA, fp32 on CPU. The first iteration is
reported separately (allocator and cuDNN warm-up). Peak memory is CUDA max allocated on GPU, the
process's peak RSS on CPU (a high-water mark of the whole process, model building included), and the peak
above what was held before step 0.

`--saved_only` runs no step: it renders one image with gradients strip by strip and adds up the bytes
autograd saves for G's backward (each storage once per strip), the activation memory a full-image G
forward would hold, without the memory to hold it (FFHQ_default at 256^2 on a laptop).
"""
import argparse
import json
import statistics
import sys
import time

import torch

import configs
from bench import current_memory_mb, peak_memory_mb, synchronize  # the rendering benchmark's timing/memory conventions
from generators import build_generator
from generators.gram import RADIANCE_PATHS, resolve_radiance_path
from training.gan3d import strip_ranges
from training.loop import process_step
from training.state import build_training_run
from utils.cli import positive_int


def prepare_step(config_name, batch_size=None, patch_split=None, device=None, seed=0, training_path='fast',
                 radiance_path='auto'):
    """(run, real_images, real_poses) for timing or profiling `train_step(run, real_images, real_poses, step)`:
    the config's models and optimizers (batch and patch split overridden when given), random real images
    in [-1, 1] and real poses drawn from the camera prior. `radiance_path` is the generator's
    (GramGenerator.RADIANCE_PATHS: 'auto' = batched on CUDA)."""
    config = configs.get_config(config_name)
    if batch_size is not None:
        config['global']['batch_size'] = batch_size
        kwargs = config['process']['kwargs']
        kwargs['batch_split'] = min(kwargs.get('batch_split', 1), batch_size)
        if batch_size % kwargs['batch_split']:
            raise ValueError(f"--batch_size {batch_size} is not divisible by the config's batch_split "
                             f"{kwargs['batch_split']}")
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    run = build_training_run(config, config_name, device, seed=seed, patch_split=patch_split,
                             training_path=training_path)
    resolve_radiance_path(radiance_path, device)
    run.generator.radiance_path = radiance_path
    batch, size = config['global']['batch_size'], config['global']['img_size']
    rng = torch.Generator().manual_seed(seed)
    real_images = torch.rand(batch, 3, size, size, generator=rng) * 2 - 1
    pitch, yaw = run.generator.sample_poses(batch, 'cpu', generator=rng)
    return run, real_images, torch.stack([pitch, yaw], -1)


def benchmark(config_name, iterations=3, batch_size=None, patch_split=None, device=None, seed=0,
              training_path='fast', radiance_path='auto'):
    """Run 1 + `iterations` training iterations; returns a dict of figures (seconds are per iteration).
    `radiance_path` is the generator's (GramGenerator.RADIANCE_PATHS: 'auto' = batched on CUDA)."""
    run, real_images, real_poses = prepare_step(config_name, batch_size, patch_split, device, seed, training_path,
                                                radiance_path)
    config, device = run.config, run.device
    batch, size = config['global']['batch_size'], config['global']['img_size']
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    # What the models, optimizers and data hold before the first step; the peak minus this is the step's
    # working memory (activations, gradients, optimizer states), the part the training paths change.
    start_memory = current_memory_mb(str(device))
    seconds = []
    train_step = process_step(config)
    for step in range(iterations + 1):
        synchronize(str(device))
        started = time.perf_counter()
        train_step(run, real_images, real_poses, step)
        synchronize(str(device))
        seconds.append(time.perf_counter() - started)
    return {
        'config': config_name, 'device': str(device), 'batch_size': batch, 'img_size': size,
        'batch_split': config['process']['kwargs'].get('batch_split', 1), 'patch_split': patch_split,
        'training_path': training_path, 'radiance_path': resolve_radiance_path(radiance_path, device),
        'amp': run.amp, 'threads': torch.get_num_threads(), 'iterations': iterations,
        'first_iteration_s': seconds[0], 'seconds_per_iteration': statistics.median(seconds[1:]),
        'images_per_s': batch / statistics.median(seconds[1:]), 'peak_memory_mb': peak_memory_mb(str(device)),
        'start_memory_mb': start_memory, 'peak_above_start_mb': peak_memory_mb(str(device)) - start_memory,
        'peak_memory_kind': 'cuda max allocated' if device.type == 'cuda' else 'process peak RSS',
    }


def saved_bytes(call):
    """(bytes autograd keeps for the backward while `call()` runs, each storage once; call's result).

    For measuring only: the graph keeps nothing, so the result cannot be back-propagated. (Handing the
    tensors themselves back to the graph would make every op that saves its own output, like sigmoid,
    a reference cycle that is never freed.) The tensors are held here until `call` returns, so that no
    address is reused while storages are told apart by it.
    """
    held = {}

    def count(tensor):
        storage = tensor.untyped_storage()
        held[storage.data_ptr()] = (storage.nbytes(), tensor)
        return None

    with torch.autograd.graph.saved_tensors_hooks(count, lambda _: None):
        out = call()
    total = sum(nbytes for nbytes, _ in held.values())
    held.clear()
    return total, out


def saved_activation_bytes(config_name, training_path='fast', strips=16, device='cpu', seed=0):
    """Bytes autograd keeps for G's backward when one image of the config is rendered with gradients.

    Rays are independent, so the image is rendered in `strips` pixel ranges, one at a time, and their
    saved bytes are summed (the mapping network's few kilobytes are counted once per strip).
    """
    config = configs.get_config(config_name)
    torch.manual_seed(seed)
    generator = build_generator(config).to(device).train()
    generator.training_path = training_path
    size = generator.img_size
    z = torch.randn(1, generator.z_dim, device=device)
    pitch, yaw = generator.sample_poses(1, device, generator=torch.Generator().manual_seed(seed))
    total = 0
    for pixel_range in strip_ranges(size, strips):
        strip_bytes, _ = saved_bytes(lambda: generator(z, pitch.to(device), yaw.to(device), pixel_range=pixel_range))
        total += strip_bytes  # the strip's graph is freed here, before the next strip
    return {'config': config_name, 'img_size': size, 'training_path': training_path, 'strips': strips,
            'saved_for_backward_mb': total / 2 ** 20}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='GRAM64_FFHQ', help=f"one of: {', '.join(configs.config_names())}")
    parser.add_argument('--iterations', type=positive_int, default=3, help='timed iterations after the first')
    parser.add_argument('--batch_size', type=positive_int, default=None, help="default: the config's per-GPU batch")
    parser.add_argument('--patch_split', type=positive_int, default=None)
    parser.add_argument('--training_path', default='fast', choices=('fast', 'low_memory', 'plain'),
                        help="G's training evaluation (see train.py --training_path)")
    parser.add_argument('--radiance_path', default='auto', choices=RADIANCE_PATHS,
                        help="how the culled radiance evaluation runs: auto = batched on CUDA, per_latent on CPU")
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    parser.add_argument('--saved_only', action='store_true',
                        help="no training step: size the activations one image's G forward keeps for backward")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        raise SystemExit("--iterations must be >= 1")
    if args.saved_only:
        result = saved_activation_bytes(args.config, args.training_path, device=args.device or 'cpu')
        print(f"{result['config']} at {result['img_size']}^2, {result['training_path']} path: "
              f"{result['saved_for_backward_mb']:.0f} MiB saved for G's backward per image (fp32)")
        return _write_json(result, args.json)
    result = benchmark(args.config, args.iterations, args.batch_size, args.patch_split, args.device,
                       training_path=args.training_path, radiance_path=args.radiance_path)
    print(f"{result['config']} on {result['device']} ({result['training_path']} path, radiance "
          f"{result['radiance_path']}, amp {result['amp']}, "
          f"{result['threads']} threads): batch "
          f"{result['batch_size']} (split {result['batch_split']}, patch_split {result['patch_split']}), "
          f"{result['seconds_per_iteration']:.3f} s/iteration (median of {result['iterations']}; first "
          f"{result['first_iteration_s']:.3f} s), {result['images_per_s']:.2f} images/s, peak memory "
          f"{result['peak_memory_mb']:.0f} MiB ({result['peak_memory_kind']}; "
          f"{result['peak_above_start_mb']:.0f} MiB above the {result['start_memory_mb']:.0f} MiB before step 0)")
    return _write_json(result, args.json)


def _write_json(result, path):
    if path:
        with open(path, 'w', encoding='utf-8') as stream:
            json.dump(result, stream, indent=2)
    return result


if __name__ == '__main__':
    main()
    sys.exit(0)
