"""Start the training processes: one per visible GPU, torchrun's, or N CPU processes.

- torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment, any number of machines): this process is
  one rank; the group is joined through torchrun's MASTER_ADDR / MASTER_PORT.
- Otherwise on a CUDA machine: one process per visible GPU via torch.multiprocessing (NCCL).
  CUDA_VISIBLE_DEVICES is respected and never rewritten (the official train.py overwrote it with
  0..N-1, so `CUDA_VISIBLE_DEVICES=2,3` trained on GPUs 0 and 1).
- Otherwise on CPU: `cpu_processes` processes (gloo); 1 runs in this process without a process group.
"""
import os

import torch
import torch.multiprocessing as mp

from .distributed import destroy_process_group, init_process_group
from .loop import train


def _worker(local_rank, world_size, config, options, config_name, port, rank_offset=0, local_world_size=None):
    rank = rank_offset + local_rank
    cuda = torch.cuda.is_available()
    if world_size > 1:
        if not cuda:
            # Several CPU processes on one machine: split the cores instead of oversubscribing them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // (local_world_size or world_size)))
        init_process_group(rank, world_size, 'nccl' if cuda else 'gloo', port)
    try:
        return train(config, options, rank=rank, world_size=world_size, local_rank=local_rank,
                     config_name=config_name)
    finally:
        destroy_process_group()


def launch(config, options, config_name=None):
    """Run training with `options` (a dict of train.py's flags) on whatever this machine / torchrun offers."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ:
        world_size = int(os.environ['WORLD_SIZE'])
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        rank_offset = int(os.environ['RANK']) - local_rank
        return _worker(local_rank, world_size, config, options, config_name, port=None, rank_offset=rank_offset,
                       local_world_size=int(os.environ.get('LOCAL_WORLD_SIZE', world_size)))
    if torch.cuda.is_available():
        processes = torch.cuda.device_count()
    else:
        processes = int(options.get('cpu_processes') or 1)
    if processes < 1:
        raise ValueError(f"need at least 1 process, got {processes}")
    if processes == 1:
        return _worker(0, 1, config, options, config_name, port=None)
    mp.spawn(_worker, args=(processes, config, options, config_name, options.get('port', 12355)), nprocs=processes,
             join=True)
    return None
