"""Start the training processes: one per visible GPU, torchrun's, or N CPU processes.

- torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment, any number of machines): this process is
  one rank; the group is joined through torchrun's MASTER_ADDR / MASTER_PORT.
- Otherwise on a CUDA machine: one process per visible GPU (NCCL).
  CUDA_VISIBLE_DEVICES is respected and never rewritten (the official train.py overwrote it with
  0..N-1, so `CUDA_VISIBLE_DEVICES=2,3` trained on GPUs 0 and 1).
- Otherwise on CPU: `cpu_processes` processes (gloo); 1 runs in this process without a process group.

Several processes are started and watched here rather than by mp.spawn, so that they cannot outlive
this launcher (they get SIGKILL when it dies), a SIGINT/SIGTERM to it reaches them (they stop cleanly at
the next step; a second signal kills them), and a failed rank takes the others down at once instead of
leaving them blocked in a collective. Their errors come back as the original exception.
"""
import errno
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback

import torch
import torch.multiprocessing as mp

from .control import STOP_SIGNALS, TrainingStopped, check_output_dir_free, die_with_parent
from .distributed import destroy_process_group, init_process_group
from .loop import train


class RemoteTraceback(Exception):
    """The traceback of a worker process, chained to the exception re-raised in the launcher."""

    def __str__(self):
        return self.args[0]


def _port_error(port, chosen):
    how = ("pass --port with a free port, or leave --port out to use any free one" if chosen
           else "try again (the port was free a moment ago)")
    return ValueError(f"--port {port} is already in use on this machine (by another training run, or by workers "
                      f"of a killed one); {how}")


def resolve_port(port):
    """`port` when it is free here, or any free port for None; a clear ValueError when it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(('', int(port or 0)))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise _port_error(port, True) from None
            raise
        return probe.getsockname()[1]


def _worker(local_rank, world_size, config, options, config_name, port, rank_offset=0, local_world_size=None,
            escalate_signals=True):
    rank = rank_offset + local_rank
    cuda = torch.cuda.is_available()
    if world_size > 1:
        if not cuda:
            # Several CPU processes on one machine: split the cores instead of oversubscribing them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // (local_world_size or world_size)))
        try:
            init_process_group(rank, world_size, 'nccl' if cuda else 'gloo', port)
        except (RuntimeError, OSError) as error:
            if port is not None and ('EADDRINUSE' in str(error) or 'address already in use' in str(error).lower()):
                raise _port_error(port, bool(options.get('port'))) from error
            raise
    try:
        return train(config, options, rank=rank, world_size=world_size, local_rank=local_rank,
                     config_name=config_name, escalate_signals=escalate_signals)
    finally:
        destroy_process_group()


def _spawned_worker(local_rank, world_size, config, options, config_name, port, launcher_pid, results):
    die_with_parent(launcher_pid)
    try:
        value = _worker(local_rank, world_size, config, options, config_name, port, escalate_signals=False)
        results.put((local_rank, 'done', value, None))
    except BaseException as error:  # every outcome goes back to the launcher, which decides what to show
        text = traceback.format_exc()
        try:
            pickle.loads(pickle.dumps(error))  # the launcher must be able to rebuild it
        except Exception:  # it does not pickle: its traceback still goes back
            error = None
        results.put((local_rank, 'error', error, text))
        sys.exit(1)


def _stop_all(workers):
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    for worker in workers:
        worker.join()


def _raise_worker_error(rank, error, text):
    if error is None:
        raise RuntimeError(f"training process {rank} failed:\n{text}")
    raise error from RemoteTraceback(f"\n(training process {rank})\n{text}")


def _stopped_early(signum):
    # A worker that was still starting (no handler yet) dies of the signal instead of stopping at a step.
    print("training processes stopped before they could save; run the same command to resume from the last "
          "checkpoint", file=sys.stderr)
    raise SystemExit(128 + signum)


def _run_processes(processes, config, options, config_name, port):
    context = mp.get_context('spawn')
    results = context.SimpleQueue()
    workers = [context.Process(target=_spawned_worker, name=f'train-rank{rank}',
                               args=(rank, processes, config, options, config_name, port, os.getpid(), results))
               for rank in range(processes)]
    requested = []

    def on_signal(signum, frame):
        if requested:  # a second signal: do not wait for the step to finish
            _stop_all(workers)
            print("training processes killed; nothing was saved since the last checkpoint", file=sys.stderr)
            raise SystemExit(128 + signum)
        requested.append(signum)
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    received = {}
    try:
        for worker in workers:
            worker.start()
        while True:
            exited = [worker.exitcode is not None for worker in workers]  # before draining: results come first
            while not results.empty():
                rank, status, value, text = results.get()
                received[rank] = (status, value, text)
            for rank, (status, value, text) in sorted(received.items()):
                if status == 'error' and not isinstance(value, TrainingStopped):
                    _stop_all(workers)
                    if requested:
                        _stopped_early(requested[0])
                    _raise_worker_error(rank, value, text)
            for rank, gone in enumerate(exited):
                if gone and rank not in received:
                    _stop_all(workers)
                    if requested:
                        _stopped_early(requested[0])
                    code = workers[rank].exitcode
                    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                    raise RuntimeError(f"training process {rank} {how} without reporting an error")
            if len(received) == processes:
                break
            time.sleep(0.1)
        for worker in workers:
            worker.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    status, value, _ = received[0]
    if status == 'error':
        raise value  # TrainingStopped of rank 0: its step has been saved
    return value


def launch(config, options, config_name=None):
    """Run training with `options` (a dict of train.py's flags) on whatever this machine / torchrun offers."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ:
        world_size = int(os.environ['WORLD_SIZE'])
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        rank_offset = int(os.environ['RANK']) - local_rank
        # torchrun forwards a signal to its workers as well as the terminal does: only it escalates.
        return _worker(local_rank, world_size, config, options, config_name, port=None, rank_offset=rank_offset,
                       local_world_size=int(os.environ.get('LOCAL_WORLD_SIZE', world_size)), escalate_signals=False)
    if torch.cuda.is_available():
        processes = torch.cuda.device_count()
    else:
        processes = int(options.get('cpu_processes') or 1)
    if processes < 1:
        raise ValueError(f"need at least 1 process, got {processes}")
    if processes == 1:
        return _worker(0, 1, config, options, config_name, port=None)
    if options.get('output_dir'):
        check_output_dir_free(options['output_dir'])  # before any worker starts: one clear line
    port = resolve_port(options.get('port'))
    return _run_processes(processes, config, options, config_name, port)
