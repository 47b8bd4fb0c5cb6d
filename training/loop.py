"""The training loop of one process, top to bottom.

    train(config, options, rank, world_size, local_rank, config_name)

`options` is a plain dict (train.py's flags, see DEFAULT_OPTIONS). Per iteration: outputs for the current
step (checkpoint every save_interval, snapshot + latest files every sample_interval), then one process
step (D then G) on the next batch. Step s means s iterations done. Training stops at total_step with a
final checkpoint (the official loop never stopped), or on SIGINT/SIGTERM at the next step boundary with a
checkpoint of that step (TrainingStopped). Rank 0 holds the --output_dir lock for the whole run.
"""
import os
import time

import torch
from tqdm import tqdm

from datasets import EpochSampler, build_dataset
from utils.atomic import remove_stale_temp_files

from . import gan3d, sr_gan3d
from .checkpointing import has_checkpoint, resume, save_checkpoint
from .control import OutputDirLock, StopSignals, TrainingStopped, WorkerSignalGate
from .distributed import agree_on_stop, barrier, fingerprint, rank_fingerprints, same_on_all_ranks
from .logs import ScalarLog, fixed_latents, write_options, write_snapshots
from .state import build_training_run

# config['process']['class'] -> step function (run, real_images, real_poses, step) -> dict of floats.
PROCESS_STEPS = {'Gan3DProcess': gan3d.train_step, 'SRGan3DProcess': sr_gan3d.train_step}

# Iterations the papers trained each config for; used when --total_step is not given.
DEFAULT_TOTAL_STEPS = {'FFHQ_default': 150000, 'CATS_default': 80000, 'CARLA_default': 70000}
FALLBACK_TOTAL_STEPS = 100000

DEFAULT_OPTIONS = {
    'data_dir': None, 'output_dir': 'results', 'load_dir': None, 'set_step': None, 'total_step': None,
    'sample_interval': 500, 'save_interval': 5000, 'patch_split': None, 'seed': None, 'num_workers': 4,
    'training_path': 'fast',
}


def process_step(config):
    name = config['process']['class']
    if name not in PROCESS_STEPS:
        raise NotImplementedError(f"training process {name!r} (config['process']['class']) is not implemented; "
                                  f"available: {', '.join(PROCESS_STEPS)}")
    return PROCESS_STEPS[name]


def endless_batches(loader, sampler, start_step):
    """Batches from step `start_step` on, epoch after epoch; a resumed run starts mid-epoch exactly where
    the interrupted one was (set_epoch every epoch, which the official loop never called)."""
    epoch, start_batch = divmod(start_step, sampler.batches_per_epoch)
    while True:
        sampler.set_epoch(epoch, start_batch)
        yield from loader
        epoch, start_batch = epoch + 1, 0


def _device(local_rank):
    if torch.cuda.is_available():
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed image sizes: let cuDNN pick the fastest convs
        return device
    return torch.device('cpu')


def _short(values):
    return {'D': f"{values['d_loss']:.3f}", 'G': f"{values['g_loss']:.3f}", 'scale': f"{values['scale']:g}",
            'img/s': f"{values['images_per_s']:.2f}"}


def train(config, options, rank=0, world_size=1, local_rank=0, config_name=None, escalate_signals=True):
    """Train until total_step; returns the final step. Raises TrainingStopped after a SIGINT/SIGTERM (a
    second signal aborts at once when `escalate_signals`; a launcher's workers leave that to the launcher)."""
    options = {**DEFAULT_OPTIONS, **options}
    if not options['data_dir']:
        raise ValueError("no data folder: pass --data_dir (images + poses/, see README 'Training')")
    lock = OutputDirLock(options['output_dir']).acquire() if rank == 0 else None
    try:
        with StopSignals(escalate_signals) as stop:
            return _train(config, options, rank, world_size, local_rank, config_name, stop)
    finally:
        if lock is not None:
            lock.release()


def _train(config, options, rank, world_size, local_rank, config_name, stop):
    is_main = rank == 0
    log = print if is_main else (lambda *args, **kwargs: None)
    output_dir = options['output_dir']
    os.makedirs(output_dir, exist_ok=True)
    if is_main:
        removed = remove_stale_temp_files(output_dir)
        if removed:
            log(f"removed {removed} temporary file(s) that an interrupted run left in {output_dir}")
    total_step = options['total_step'] or DEFAULT_TOTAL_STEPS.get(config_name, FALLBACK_TOTAL_STEPS)
    save_interval, sample_interval = int(options['save_interval']), int(options['sample_interval'])
    if save_interval < 1 or sample_interval < 1:
        raise ValueError(f"--save_interval and --sample_interval must be >= 1, got {save_interval}, {sample_interval}")
    step_function = process_step(config)
    if options['patch_split']:
        gan3d.strip_ranges(config['generator']['kwargs']['img_size'], options['patch_split'])
    dataset = build_dataset(config, options['data_dir'], warn=is_main)  # bad data fails before any model work
    sr_gan3d.check_stage2_start(config, dataset, bool(options['load_dir']) or has_checkpoint(output_dir))

    # --- models, optimizers, EMAs; resume ----------------------------------------------------------------
    run = build_training_run(config, config_name, _device(local_rank), rank, world_size,
                             seed=options['seed'] or 0, patch_split=options['patch_split'],
                             training_path=options['training_path'])
    load_dir = options['load_dir']
    if not load_dir and has_checkpoint(output_dir):
        load_dir = output_dir  # re-running the same command continues the run (preemptible jobs)
    start_step = 0
    if load_dir:
        resumed = resume(run, load_dir, options['set_step'], log=log)
        if resumed is None:
            raise FileNotFoundError(f"--load_dir {load_dir} holds no complete checkpoint (7 files "
                                    "step%06d_{generator,ema,ema2,discriminator,optimizer_G,optimizer_D,scaler}.pth)")
        start_step = resumed.step
        if options['seed'] is None and resumed.seed is not None:
            run.seed = resumed.seed  # same random streams and data order as the interrupted run
        log(f"resumed from {resumed.label} at step {start_step}")
    elif options['set_step'] is not None:
        raise ValueError("--set_step needs --load_dir (or checkpoints in --output_dir)")

    if start_step >= total_step:
        log(f"already at step {start_step} >= --total_step {total_step}: nothing to do")
        return start_step

    def weights():
        return (list(run.generator.state_dict().values()) + list(run.discriminator.state_dict().values())
                + run.ema.shadow + run.ema2.shadow)

    # Every rank must start from the same state and see the same files (several machines need a shared
    # filesystem for --data_dir and --output_dir / --load_dir).
    if world_size > 1:
        same_on_all_ranks((start_step, run.seed, len(dataset), fingerprint(weights())),
                          '(start step, seed, images, weights fingerprint)', world_size,
                          '; every machine must see the same --data_dir and --output_dir/--load_dir')

    # --- data (batches are placed after the resume: their order depends on the run's seed and step) ------
    batch_size = int(config['global']['batch_size'])
    sampler = EpochSampler(len(dataset), batch_size, rank, world_size, seed=run.seed)
    workers = int(options['num_workers'])
    worker_gate = WorkerSignalGate()
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=run.device.type == 'cuda', persistent_workers=workers > 0,
                                         worker_init_fn=worker_gate if workers > 0 else None)
    batches = endless_batches(loader, sampler, start_step)

    # --- rank-0 bookkeeping --------------------------------------------------------------------------
    scalars, progress = None, None
    latents = fixed_latents(run.generator.z_dim)
    if is_main:
        write_options(output_dir, config, config_name, options, world_size, start_step)
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        log(f"G {count(run.generator):,} parameters, D {count(run.discriminator):,}; {len(dataset)} images, "
            f"{sampler.batches_per_epoch} steps/epoch; batch {batch_size} x {world_size} process(es) on "
            f"{run.device.type}{' with AMP' if run.amp else ''}")
        scalars = ScalarLog(output_dir)
        progress = tqdm(total=total_step, initial=start_step, desc='train', dynamic_ncols=True)

    def outputs(step, final=False):
        """Checkpoint / snapshot / latest files of `step` (all ranks call: the fingerprint is a collective)."""
        if step % save_interval == 0 or final:
            fingerprints = rank_fingerprints(weights(), world_size)
            if is_main:
                save_checkpoint(run, output_dir, step)
                scalars.write(step, {'rank_fingerprints': fingerprints})
        if is_main and (step % sample_interval == 0 or final):
            write_snapshots(run, output_dir, step, latents)
            save_checkpoint(run, output_dir, step, latest=True)

    # --- loop ----------------------------------------------------------------------------------------
    step = start_step
    try:
        while step < total_step:
            if step > start_step or start_step == 0:  # a resumed step's files are already on disk
                outputs(step)
            signum = agree_on_stop(stop.signum, world_size, run.device)
            if signum:
                if is_main and step != start_step and step % sample_interval != 0:  # else it is on disk
                    save_checkpoint(run, output_dir, step, latest=True)
                raise TrainingStopped(step, signum, rank)
            started = time.perf_counter()
            real_images, real_poses = next(batches)
            values = step_function(run, real_images, real_poses, step)
            step += 1
            seconds = time.perf_counter() - started
            values.update(epoch=sampler.epoch, seconds_per_step=seconds,
                          images_per_s=batch_size * world_size / seconds)
            if is_main:
                scalars.write(step, values)
                progress.set_postfix(_short(values), refresh=False)
                progress.update(1)
        outputs(step, final=True)
        barrier(world_size)
    finally:
        worker_gate.open()
        if is_main:
            progress.close()
            scalars.close()
    log(f"done: step {step}, outputs in {output_dir}")
    return step
