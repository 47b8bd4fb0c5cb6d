"""The GPU measurement suite (issue 13): every render and training figure of README Performance in one run.

    python bench_suite.py --json gpu_suite.json           # on a CUDA machine: a few minutes on an H200
    python bench_suite.py --quick --json quick.json       # TINY_GRAM, tiny sizes: the same code end to end on CPU
    python bench_suite.py --fixture ../shared/fixtures/official/gram_ffhq --profile --json gpu_suite.json

Needs no dataset and no download: the models are built from the configs with random weights (seed 0) and
real images are random tensors, so the figures are speeds and memory, not image quality (the work per point
does not depend on the weights; the share of culled points does, a little).

Render table (FFHQ_default at 256^2): B seeds at one camera for B = 1, 8, 32, and an orbit of one seed (4
views), on each path: 'batched' (the CUDA default: culled points of all latents in one batched MLP),
'per_latent' (the CPU default: a Python loop over latents), 'plain' (every point, as the official code),
and 'fp16' (batched, radiance MLP in float16) with its max / mean |difference| from the exact batched
images, and in the full run 'fp16_compile' (the same under torch.compile; its first call compiles), timed
after the training table. Training table (bench_train.py's step): GRAM64_FFHQ at batch 8 and FFHQ_default
at batch 4 with --patch_split 4, per training path, seconds/iteration and the peak memory of the run (CUDA
max allocated).

With --fixture (an official-format GRAM FFHQ folder such as ../shared/fixtures/official/gram_ffhq, or a copy
of it) a fixture table comes first: the official checkpoint rendered on this device by each path, with the
max |difference| from the official images and whether the exact paths stay within the tolerance the CPU
tests hold them to (utils/official_tolerance.py). With
--profile, the torch profiler's busiest operations of one batched render and one default training step
come last, to show where the time of a slow row goes.

Rows are skipped, with the reason in the JSON, once the run passes --budget_s (default 330 s), so that the
suite ends within 6 minutes on a device it has not seen; a row that does not fit in memory is reported as
out of memory, a row that fails otherwise carries its error (traceback on stderr), and the run goes on;
the exit status is 1 when a row failed.
"""
import argparse
import gc
import json
import math
import pathlib
import platform
import sys
import time
import traceback

import torch

from generators import build_generator, load_generator
from training.benchmark import benchmark, prepare_step
from training.gan3d import train_step
from utils.benchmarking import PointCounter, peak_memory_mb, synchronize, time_calls
from utils.official_tolerance import OFFICIAL_ABS_TOL, OFFICIAL_MAX_TOL, OFFICIAL_SHARE, official_image_error
from utils.seeds import latent_for_seed

# (name, render options, the exact path its images are compared with)
RENDER_PATHS = (
    ('batched', dict(fast=True, radiance_path='batched'), None),
    ('per_latent', dict(fast=True, radiance_path='per_latent'), None),
    ('plain', dict(fast=False), None),
    ('fp16', dict(fast=True, radiance_path='batched', precision='fp16'), 'batched'),
    # torch.compile may fuse each FiLM layer's sine into its matmul; the first call pays the compilation
    ('fp16_compile', dict(fast=True, radiance_path='batched', precision='fp16', compile=True), 'batched'),
)
RENDER_OPTIONS = {name: options for name, options, _ in RENDER_PATHS}
# (training_path, radiance_path): the CUDA default ('fast' on the batched path) first
TRAINING_PATHS = (('fast', 'batched'), ('fast', 'per_latent'), ('low_memory', 'batched'), ('plain', 'auto'))

# (name, render options, whether the path is exact and must match the official images)
FIXTURE_PATHS = (
    ('batched', dict(fast=True, radiance_path='batched'), True),
    ('per_latent', dict(fast=True, radiance_path='per_latent'), True),
    ('plain', dict(fast=False), True),
    ('tf32', dict(fast=True, radiance_path='batched', tf32=True), False),
    ('fp16', dict(fast=True, radiance_path='batched', precision='fp16'), False),
)
PROFILE_TOP = 15  # operations listed per profiled call

SETTINGS = {
    'full': dict(render_config='FFHQ_default', img_size=256, batches=(1, 8, 32), frames=4, warmup=1, repeats=2,
                 # compiling takes a minute or more: measured after the training table, which must not be skipped
                 render_paths=('batched', 'per_latent', 'plain', 'fp16'), late_render_paths=('fp16_compile',),
                 training=(('GRAM64_FFHQ', 8, None), ('FFHQ_default', 4, 4)), iterations=2, fixture_views=3),
    # the same rows at CPU scale, without compiling (tens of seconds on a CPU; tests/test_inexact_render.py)
    'quick': dict(render_config='TINY_GRAM', img_size=16, batches=(1, 2), frames=2, warmup=0, repeats=1,
                  render_paths=('batched', 'per_latent', 'plain', 'fp16'), late_render_paths=(),
                  training=(('TINY_GRAM', 2, None), ('TINY_GRAM', 2, 2)), iterations=1, fixture_views=1),
}


def _reset_peak(device):
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _is_out_of_memory(error):
    return isinstance(error, torch.cuda.OutOfMemoryError) or 'out of memory' in str(error)


def measure_or_skip(row, deadline, device, measure):
    """measure() with the peak-memory counter reset, or None with the reason in the row: row['skipped'] when
    the time budget is spent or the device ran out of memory, row['error'] (its traceback printed) for any
    other error, so that one broken row does not cost the rest of a run on a GPU lent for minutes; main()
    then ends with status 1."""
    if time.perf_counter() > deadline:
        row['skipped'] = 'time budget spent'
        return None
    _reset_peak(device)
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 -- recorded in the row and turned into the exit status
        if _is_out_of_memory(error):
            row['skipped'] = f'out of memory: {str(error).splitlines()[0]}'
        else:
            traceback.print_exc()
            row['error'] = f'{type(error).__name__}: {error}'
        return None


def unmeasured(row):
    """Why a row has no figures ('skipped: ...' or 'ERROR ...'), or None."""
    if 'error' in row:
        return f"ERROR {row['error']}"
    return f"skipped: {row['skipped']}" if 'skipped' in row else None


def fixture_rows(folder, settings, device, deadline, paths=None):
    """The official GRAM checkpoint in `folder` (generator.pth + ema.pth + expected.pt) rendered on `device`
    by each FIXTURE_PATHS path (or those named in `paths`): both seeds of a view in one call, as
    tests/test_gram_fixture.py does."""
    expected = torch.load(folder / 'expected.pt', map_location='cpu', weights_only=True)
    generator = load_generator(folder / 'generator.pth', config='FFHQ_default', device=device)
    angles = expected['camera_angles_phi_theta']
    views = range(min(settings['fixture_views'], angles.shape[0]))
    reference = expected['images'][:, :len(views)]  # [seeds, views, 3, H, W]
    z = expected['z'].to(device)
    rows = []
    for name, options, exact in FIXTURE_PATHS:
        if paths is not None and name not in paths:
            continue
        row = {'table': 'fixture', 'fixture': str(folder), 'path': name, 'options': options, 'exact': exact,
               'views': len(views), 'seeds': z.shape[0], 'img_size': reference.shape[-1]}
        rows.append(row)

        def render(options=options):
            with torch.no_grad():
                return torch.stack([generator.render(z, angles[v, 0].expand(z.shape[0]),
                                                     angles[v, 1].expand(z.shape[0]),
                                                     img_size=reference.shape[-1], **options).cpu()
                                    for v in views], 1)
        images = measure_or_skip(row, deadline, device, render)
        if images is not None:
            row.update(official_image_error(images, reference))
    return rows


def render_rows(settings, device, deadline, paths):
    """Render-table rows of the RENDER_PATHS named in `paths`. A path compared with an exact path that is
    not among them (timed in another pass) renders that path's images once, untimed, before its timing."""
    torch.manual_seed(0)
    generator = build_generator(settings['render_config']).to(device).eval()
    counter = PointCounter(generator)
    size = settings['img_size']
    frontal = math.pi / 2
    cases = [(f'{batch} seeds, one camera', batch, [frontal] * batch) for batch in settings['batches']]
    cases.append((f"orbit, 1 seed, {settings['frames']} views", 1,
                  (torch.linspace(-0.3, 0.3, settings['frames'], dtype=torch.float64) + frontal).tolist()))
    rows = []
    for case, seeds, yaws in cases:
        z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in range(seeds)]).to(device)
        images_per_call = len(yaws) if seeds == 1 else seeds
        exact_images = {}

        def render(options, z=z, yaws=yaws, seeds=seeds):
            with torch.no_grad():
                if seeds > 1:  # seeds at one camera: one call
                    pitch = torch.full((seeds,), frontal, dtype=torch.float64)
                    return generator.render(z, pitch, pitch, img_size=size, **options)
                return torch.cat([generator.render(z, torch.tensor([frontal], dtype=torch.float64),
                                                   torch.tensor([yaw], dtype=torch.float64), img_size=size,
                                                   **options) for yaw in yaws])

        for name, options, compare_with in RENDER_PATHS:
            if name not in paths:
                continue
            row = {'table': 'render', 'config': settings['render_config'], 'img_size': size, 'case': case,
                   'path': name, 'options': options, 'images': images_per_call}
            rows.append(row)

            def measure(options=options, compare_with=compare_with):
                reference = None
                if compare_with is not None and compare_with not in paths and compare_with not in exact_images:
                    # its path is timed in another pass: its images once, untimed
                    reference = render(RENDER_OPTIONS[compare_with])
                    _reset_peak(device)
                timing = time_calls(lambda: render(options), device, settings['warmup'], settings['repeats'],
                                    counter)
                return timing, render(options), reference
            measured = measure_or_skip(row, deadline, device, measure)
            if measured is None:
                continue
            (seconds, flops, points, first_call), images, reference = measured
            row.update(ms_per_image=1000 * seconds / images_per_call, images_per_s=images_per_call / seconds,
                       gflop_per_s=flops / seconds / 1e9, radiance_points=points, first_call_s=first_call,
                       peak_memory_mb=peak_memory_mb(device))
            if compare_with is None:
                exact_images[name] = images
                continue
            if reference is not None:
                exact_images[compare_with] = reference
            if compare_with in exact_images:
                difference = (images - exact_images[compare_with]).abs()
                row.update(max_abs_diff_vs_exact=difference.max().item(),
                           mean_abs_diff_vs_exact=difference.mean().item())
        del exact_images
    return rows


def training_rows(settings, device, deadline):
    rows = []
    for config, batch, patch_split in settings['training']:
        for training_path, radiance_path in TRAINING_PATHS:
            row = {'table': 'training', 'config': config, 'batch_size': batch, 'patch_split': patch_split,
                   'training_path': training_path,
                   'radiance_path': '-' if training_path == 'plain' else radiance_path}
            rows.append(row)
            result = measure_or_skip(row, deadline, device, lambda: benchmark(
                config, settings['iterations'], batch, patch_split, device, training_path=training_path,
                radiance_path=radiance_path))
            if result is None:
                continue
            row.update({key: result[key] for key in ('seconds_per_iteration', 'first_iteration_s', 'images_per_s',
                                                     'peak_memory_mb', 'peak_memory_kind', 'amp', 'batch_split')})
    return rows


def busiest_operations(call, device):
    """(figures, text) of the torch profiler's PROFILE_TOP operations by their own device time (CPU time on a
    CPU) while `call()` runs once, with counts of the aten operations dispatched, the kernel launches and the
    scalar reads (aten::_local_scalar_dense: every `.item()`, also of CPU tensors such as the optimizers'
    step counters, so an upper bound on the host syncs)."""
    cuda = device.startswith('cuda')
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as profiler:
        call()
        synchronize(device)
    averages = profiler.key_averages()
    sort_by = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    ranked = sorted(averages, key=lambda event: getattr(event, sort_by), reverse=True)[:PROFILE_TOP]
    rows = [{'name': event.key, 'calls': event.count, 'self_ms': getattr(event, sort_by) / 1e3} for event in ranked]
    scalar_reads = sum(event.count for event in averages if event.key == 'aten::_local_scalar_dense')
    launches = sum(event.count for event in averages if event.key in ('cudaLaunchKernel', 'cuLaunchKernel',
                                                                        'cudaLaunchKernelExC'))
    text = averages.table(sort_by=sort_by, row_limit=PROFILE_TOP, max_name_column_width=60)
    return {'operations': rows, 'scalar_reads': scalar_reads, 'kernel_launches': launches,
            'ops_dispatched': sum(event.count for event in averages if event.key.startswith('aten::'))}, text


def profile_rows(settings, device, deadline):
    """Where the time goes: one batched render of the middle batch at one camera and one training step of
    the first training setting on its CUDA default path, each after a warm-up call."""
    rows = []
    batch = settings['batches'][len(settings['batches']) // 2]
    row = {'table': 'profile', 'case': f"render, {batch} seeds, one camera, batched",
           'config': settings['render_config'], 'img_size': settings['img_size']}
    rows.append(row)

    def profile_render():
        torch.manual_seed(0)
        generator = build_generator(settings['render_config']).to(device).eval()
        z = torch.cat([latent_for_seed(seed, generator.z_dim) for seed in range(batch)]).to(device)
        frontal = torch.full((batch,), math.pi / 2, dtype=torch.float64)

        def render():
            with torch.no_grad():
                generator.render(z, frontal, frontal, img_size=settings['img_size'], radiance_path='batched')
        render()
        return busiest_operations(render, device)
    measured = measure_or_skip(row, deadline, device, profile_render)
    if measured is not None:
        row.update(measured[0], text=measured[1])

    config, batch_size, patch_split = settings['training'][0]
    row = {'table': 'profile', 'case': f"training step, {config} batch {batch_size}, fast / batched",
           'config': config}
    rows.append(row)

    def profile_training():
        run, real_images, real_poses = prepare_step(config, batch_size, patch_split, device, training_path='fast',
                                                    radiance_path='batched')
        train_step(run, real_images, real_poses, 0)
        return busiest_operations(lambda: train_step(run, real_images, real_poses, 1), device)
    measured = measure_or_skip(row, deadline, device, profile_training)
    if measured is not None:
        row.update(measured[0], text=measured[1])
    return rows


def print_tables(rows):
    fixture = [r for r in rows if r['table'] == 'fixture']
    if fixture:
        print(f"\nofficial fixture on this device ({fixture[0]['seeds']} seeds x {fixture[0]['views']} views, "
              f"{fixture[0]['img_size']}^2; exact paths must keep {OFFICIAL_SHARE:.1%} of the values within "
              f"{OFFICIAL_ABS_TOL:g} and none beyond {OFFICIAL_MAX_TOL:g})")
        for row in fixture:
            if unmeasured(row):
                print(f"{row['path']:<11} {unmeasured(row)}")
                continue
            verdict = ('within tolerance' if row['within_tolerance'] else 'OUTSIDE TOLERANCE') if row['exact'] \
                else 'inexact option'
            print(f"{row['path']:<11} max|diff| {row['max_abs_diff']:.3g}  within {OFFICIAL_ABS_TOL:g}: "
                  f"{row['share_within_abs_tol']:.4%}  {verdict}")
    print('\nrender (ms/image; fp16: max / mean |diff| from the exact batched images)')
    print(f"{'case':<28} {'path':<12} {'ms/image':>10} {'img/s':>8} {'GFLOP/s':>9} {'peak MB':>9}  note")
    for row in (r for r in rows if r['table'] == 'render'):
        if unmeasured(row):
            print(f"{row['case']:<28} {row['path']:<12} {unmeasured(row)}")
            continue
        note = (f"max|diff| {row['max_abs_diff_vs_exact']:.2g} mean {row['mean_abs_diff_vs_exact']:.2g}"
                if 'max_abs_diff_vs_exact' in row else '')
        print(f"{row['case']:<28} {row['path']:<12} {row['ms_per_image']:10.1f} {row['images_per_s']:8.2f} "
              f"{row['gflop_per_s']:9.1f} {row['peak_memory_mb']:9.0f}  {note}")
    print('\ntraining (one D step + one G step)')
    print(f"{'config':<14} {'batch':>5} {'patch':>5} {'training path':<14} {'radiance':<11} {'s/it':>8} "
          f"{'img/s':>7} {'peak MB':>9}")
    for row in (r for r in rows if r['table'] == 'training'):
        head = (f"{row['config']:<14} {row['batch_size']:>5} {str(row['patch_split'] or '-'):>5} "
                f"{row['training_path']:<14} {row['radiance_path']:<11}")
        if unmeasured(row):
            print(f"{head} {unmeasured(row)}")
            continue
        print(f"{head} {row['seconds_per_iteration']:8.3f} {row['images_per_s']:7.2f} {row['peak_memory_mb']:9.0f}")
    for row in (r for r in rows if r['table'] == 'profile'):
        print(f"\nprofile: {row['case']}")
        if unmeasured(row):
            print(unmeasured(row))
            continue
        print(f"{row['ops_dispatched']} aten operations, {row['scalar_reads']} scalar reads, "
              f"{row['kernel_launches']} kernel launches")
        print(row['text'])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='TINY_GRAM at tiny sizes: the whole suite in seconds')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--budget_s', type=float, default=330.0,
                        help='rows starting after this many seconds are skipped (reported in the JSON)')
    parser.add_argument('--json', default=None, help='write the environment and all rows here')
    parser.add_argument('--fixture', type=pathlib.Path, default=None,
                        help='an official GRAM FFHQ fixture folder (generator.pth, ema.pth, expected.pt): first, '
                             'check its renders on this device by each path')
    parser.add_argument('--profile', action='store_true',
                        help="last, the profiler's busiest operations of a batched render and a training step")
    args = parser.parse_args(argv)
    if args.fixture is not None:
        missing = [name for name in ('generator.pth', 'ema.pth', 'expected.pt') if not (args.fixture / name).is_file()]
        if missing:
            parser.error(f"--fixture {args.fixture}: missing {', '.join(missing)} (an official-format GRAM FFHQ "
                         "fixture folder such as ../shared/fixtures/official/gram_ffhq)")
    settings = SETTINGS['quick' if args.quick else 'full']
    started = time.perf_counter()
    deadline = started + args.budget_s
    environment = {'device': args.device, 'torch': torch.__version__, 'cuda': torch.version.cuda,
                   'gpu': torch.cuda.get_device_name() if args.device.startswith('cuda') else None,
                   'cpu': platform.processor() or platform.machine(), 'threads': torch.get_num_threads(),
                   'settings': 'quick' if args.quick else 'full', 'weights': 'random (seed 0), no checkpoint',
                   'peak_memory': 'CUDA max allocated' if args.device.startswith('cuda') else 'process peak RSS'}
    print(json.dumps(environment))
    rows = fixture_rows(args.fixture, settings, args.device, deadline) if args.fixture is not None else []
    rows += render_rows(settings, args.device, deadline, settings['render_paths'])
    rows += training_rows(settings, args.device, deadline)
    rows += render_rows(settings, args.device, deadline, settings['late_render_paths'])
    if args.profile:
        rows += profile_rows(settings, args.device, deadline)
    environment['total_s'] = time.perf_counter() - started
    print_tables(rows)
    print(f"\ntotal {environment['total_s']:.0f} s")
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump({'environment': environment, 'rows': rows}, stream, indent=1)
    return rows


if __name__ == '__main__':
    sys.exit(1 if any('error' in row for row in main()) else 0)
