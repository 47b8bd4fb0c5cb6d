"""CPU guard for GPU speed (issue 13): the batched radiance path dispatches as many operations for 8
latents as for 1, so on a GPU its kernel launches and host syncs do not grow with the batch.

Every aten operation a render dispatches is counted with a TorchDispatchMode (views are left out: they
launch no kernel). The per-latent path, the CPU default, loops over latents in Python; its count grows with
the batch, which is why it is not the default on CUDA.
"""
import math
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import configs
from generators import build_generator

# Operations that make the host wait for the device: reading a value (.item(), bool()) or producing a
# data-dependent shape (nonzero, boolean-mask indexing, masked assignment).
SYNC_OPS = {'_local_scalar_dense', 'item', 'is_nonzero', 'nonzero', 'masked_select', 'index', 'index_put',
            'index_put_', 'unique', '_unique2'}


class OperationCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.operations = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.operations[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    def total(self):
        return sum(self.operations.values())

    def syncs(self):
        return sum(count for name, count in self.operations.items() if name in SYNC_OPS)


@pytest.fixture(scope='module')
def generator():
    torch.manual_seed(0)
    return build_generator(configs.get_config('TINY_GRAM')).eval()


def count_render(generator, batch, radiance_path, shared_camera, training=False, **render_options):
    z = torch.randn(batch, generator.z_dim, generator=torch.Generator().manual_seed(0))
    pitch = torch.full((batch,), math.pi / 2, dtype=torch.float64)
    yaw = pitch.clone() if shared_camera else torch.linspace(1.3, 1.8, batch, dtype=torch.float64)

    def render():
        if training:  # the G step: fused FiLM-sine autograd on the culled points, forward and backward
            generator.radiance_path = radiance_path
            try:
                images, _ = generator(z, pitch.float(), yaw.float())
                images.sum().backward()
            finally:
                generator.radiance_path = 'auto'
        else:
            with torch.no_grad():
                generator.render(z, pitch, yaw, radiance_path=radiance_path, **render_options)

    render()  # caches (levels, ray directions) are filled by the first call, not counted
    with OperationCounter() as counter:
        render()
    return counter


# A batch of one takes a few copies fewer: reshaping a tensor whose batch dimension has size 1 never needs
# a copy, whatever its strides (the manifold field's samples of per-latent cameras are such a tensor).
SIZE_ONE_LAYOUT_SLACK = 4


@pytest.mark.parametrize('shared_camera', [True, False], ids=['one_camera', 'per_latent_cameras'])
def test_batched_render_dispatches_the_same_operations_at_any_batch(generator, shared_camera, one_thread):
    one, two, eight = (count_render(generator, batch, 'batched', shared_camera) for batch in (1, 2, 8))
    assert eight.operations == two.operations, (eight.operations - two.operations)
    assert 0 <= eight.total() - one.total() <= SIZE_ONE_LAYOUT_SLACK, (eight.operations - one.operations)
    # the compaction's size read and the camera check: a few syncs per chunk, none per latent
    assert eight.syncs() == one.syncs() <= 3


@pytest.mark.parametrize('options', [dict(precision='fp16', lock_view_dependence=True), dict(early_termination=0.01)],
                         ids=['fp16_locked_view', 'early_termination'])
def test_batched_render_options_do_not_grow_with_the_batch(generator, options, one_thread):
    two, eight = (count_render(generator, batch, 'batched', False, **options) for batch in (2, 8))
    assert eight.operations == two.operations, (eight.operations - two.operations)


def test_batched_training_forward_and_backward_do_not_grow_with_the_batch(generator, one_thread):
    generator.train()
    try:
        one, two, eight = (count_render(generator, batch, 'batched', False, training=True) for batch in (1, 2, 8))
    finally:
        generator.eval()
    assert eight.operations == two.operations, (eight.operations - two.operations)
    assert 0 <= eight.total() - one.total() <= SIZE_ONE_LAYOUT_SLACK, (eight.operations - one.operations)
    assert eight.syncs() == one.syncs()


def test_per_latent_path_grows_with_the_batch(generator, one_thread):
    """Documents why 'per_latent' is the CPU default only: a loop of masked packs, one sync each."""
    one = count_render(generator, 1, 'per_latent', True)
    eight = count_render(generator, 8, 'per_latent', True)
    assert eight.total() > one.total() + 7 * 10
    assert eight.syncs() >= one.syncs() + 7
