"""What the training benchmarks measure (bench_train.py, bench_suite.py): a config's training run set up on
random data, timed iterations with their peak memory, and the bytes autograd saves for G's backward.
"""
import statistics
import time

import torch

import configs
from generators import build_generator
from generators.gram import resolve_radiance_path
from utils.benchmarking import current_memory_mb, peak_memory_mb, synchronize

from .gan3d import strip_ranges
from .loop import process_step
from .state import build_training_run


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
