"""Timing and memory conventions of the benchmark scripts (bench.py, bench_train.py, bench_suite.py):
synchronised wall-clock timing, peak / current memory (CUDA allocated on GPU, the process's RSS on CPU),
and the FLOP count of GRAM's two MLPs from the points they evaluate.
"""
import resource
import statistics
import time

import torch


def linear_macs(module):
    """Multiply-adds per input row of the nn.Linear layers of a module (mapping network excluded)."""
    return sum(m.in_features * m.out_features for name, m in module.named_modules()
               if isinstance(m, torch.nn.Linear) and 'mapping_network' not in name)


class PointCounter:
    """Counts the rows fed to the manifold MLP (a forward hook) and the radiance MLP (every point that
    `generator.radiance` evaluates: all of them on the plain path, the culled mask on the fast path)."""

    def __init__(self, generator):
        self.field_points = 0
        self._radiance_points = []
        representation = generator.representation
        representation.sample_network.register_forward_hook(self._count_field)
        # Wrapped on the generator rather than hooked on the network: the fast path calls
        # `forward_folded` (no module hook), possibly compiled, and early termination calls it per group.
        radiance = generator.radiance

        def counted_radiance(points, directions, raw_frequencies, phases, contributing=None, **options):
            # kept as a device tensor: reading it here would add a host sync to the timed render
            evaluated = points.shape[:-1].numel() if contributing is None else contributing.sum()
            self._radiance_points.append(evaluated)
            return radiance(points, directions, raw_frequencies, phases, contributing, **options)
        generator.radiance = counted_radiance
        self.field_macs = linear_macs(representation.sample_network)
        self.radiance_macs = linear_macs(representation.rf_network)

    def _count_field(self, module, inputs, output):
        self.field_points += inputs[0].numel() // 3

    @property
    def radiance_points(self):
        return int(sum(self._radiance_points))

    def reset(self):
        self.field_points = 0
        self._radiance_points = []

    def flops(self):
        return 2 * (self.field_points * self.field_macs + self.radiance_points * self.radiance_macs)


def synchronize(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def peak_memory_mb(device):
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_memory_mb(device):
    """Memory held now: CUDA allocated on GPU, the process's resident set on CPU (Linux /proc; elsewhere
    the peak so far, which makes differences against it a lower bound)."""
    if device.startswith('cuda'):
        return torch.cuda.memory_allocated() / 2 ** 20
    try:
        with open('/proc/self/statm', encoding='ascii') as stream:
            resident_pages = int(stream.read().split()[1])
    except OSError:
        return peak_memory_mb(device)
    return resident_pages * resource.getpagesize() / 2 ** 20


def time_calls(call, device, warmup, repeats, counter):
    """Median seconds, FLOPs and radiance points of `repeats` calls made after `warmup` calls, and the
    seconds of the very first call (it pays torch.compile's compilation and the allocator's warm-up)."""
    seconds, flops, points, first_call = [], [], [], None
    for index in range(warmup + repeats):
        counter.reset()
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        elapsed = time.perf_counter() - start
        first_call = elapsed if first_call is None else first_call
        if index >= warmup:
            seconds.append(elapsed)
            flops.append(counter.flops())
            points.append(counter.radiance_points)
    return statistics.median(seconds), statistics.median(flops), statistics.median_low(points), first_call
