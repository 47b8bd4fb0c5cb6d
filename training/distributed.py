"""Process-group setup and the few collectives the loop needs (gradient averaging, a divergence check).

Gradients are averaged with one all-reduce per optimizer step instead of wrapping the models in DDP:
a GRAM step runs several backward passes per optimizer step (batch_split chunks, patch strips, R1's
double backward), which DDP would reduce once each (the official code paid one all-reduce per strip) and
which needs find_unused_parameters. Averaging equals DDP's gradient semantics.
"""
import os

import torch
import torch.distributed as dist

from utils.checkpoints import tensor_sha256


def init_process_group(rank, world_size, backend, port=None):
    """Join the group. Under torchrun MASTER_ADDR/PORT come from the environment; mp.spawn sets them."""
    if port is not None:
        os.environ.setdefault('MASTER_ADDR', 'localhost')
        os.environ['MASTER_PORT'] = str(port)
    dist.init_process_group(backend, rank=rank, world_size=world_size)


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def all_reduce_gradients(parameters, world_size):
    """Average .grad over ranks in one flat all-reduce. Missing grads count as zeros (every rank must
    contribute the same buffer layout)."""
    if world_size <= 1:
        return
    params = list(parameters)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(reduced)


def fingerprint(tensors):
    """sha256 (hex, 16 chars) of the bytes of the given tensors, in order."""
    return tensor_sha256(tensors)[:16]


def same_on_all_ranks(value, what, world_size, hint=''):
    """All ranks' `value` (a list in rank order); raises naming `what` when they differ."""
    if world_size <= 1:
        return [value]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, value)
    if any(other != gathered[0] for other in gathered):
        raise RuntimeError(f"{what} differs across ranks: {gathered}{hint}")
    return gathered


def rank_fingerprints(tensors, world_size):
    """Weight fingerprints of all ranks (rank order). Raises if the ranks hold different weights, which
    would mean a rank missed a gradient average."""
    return same_on_all_ranks(fingerprint(tensors), 'weights fingerprint', world_size,
                             '; training state diverged across processes')


def barrier(world_size):
    if world_size > 1:
        dist.barrier()


def destroy_process_group():
    if is_distributed():
        dist.destroy_process_group()


def agree_on_stop(signum, world_size, device):
    """The stop signal any rank received (0: none), the same on every rank, so all ranks stop at the same
    step; a rank that stopped alone would leave the others waiting in the next all-reduce."""
    if world_size <= 1:
        return signum
    flag = torch.tensor([signum], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())
