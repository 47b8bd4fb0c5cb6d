"""The batched radiance path (issue 13, the CUDA default) against the plain reference path and the per-latent
path (the CPU default): same images, same gradients; forced on the CPU here."""
import pytest
import torch
import torch.nn.functional as F

import configs
from conftest import official_fixture
from generators import build_generator, load_generator
from generators.gram import compact_rows, resolve_radiance_path
from generators.radiance import RadianceNetwork
from test_generator import angles, structured_generator
from test_gram_fixture import assert_close_to_official


def test_compact_rows_packs_each_row_in_order():
    mask = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 1]], dtype=torch.bool)
    index, slot = compact_rows(mask)
    assert index.shape == (3, 3)
    assert index[0].tolist() == [1, 2, 4] and index[2, :2].tolist() == [0, 4]
    assert slot.tolist() == [[3, 0, 1, 3, 2], [3] * 5, [0, 3, 3, 3, 1]]
    values = torch.arange(9.0).reshape(3, 3, 1) + 1
    read_back = torch.gather(torch.cat([values, torch.zeros(3, 1, 1)], 1), 1, slot.unsqueeze(-1))[..., 0]
    assert read_back.tolist() == [[0, 1, 2, 0, 3], [0] * 5, [7, 0, 0, 0, 8]]
    empty_index, empty_slot = compact_rows(torch.zeros(2, 4, dtype=torch.bool))
    assert empty_index.shape == (2, 0) and (empty_slot == 0).all()


def test_auto_is_batched_on_cuda_and_per_latent_elsewhere():
    assert resolve_radiance_path('auto', 'cuda') == 'batched'
    assert resolve_radiance_path('auto', torch.device('cuda', 1)) == 'batched'
    assert resolve_radiance_path('auto', 'cpu') == 'per_latent'
    assert resolve_radiance_path('batched', 'cpu') == 'batched'
    with pytest.raises(ValueError, match="radiance_path must be one of .*'fastest'"):
        resolve_radiance_path('fastest', 'cpu')
    generator = build_generator('TINY_GRAM')
    with pytest.raises(ValueError, match='radiance_path'):
        generator.render(torch.randn(1, generator.z_dim), 1.5, 1.5, radiance_path='fastest')


def _network(feature_dim=0):
    torch.manual_seed(0)
    return RadianceNetwork(z_dim=16, hidden_dim=16, feature_dim=feature_dim).double()


@pytest.mark.parametrize('shared_direction', [False, True])
@pytest.mark.parametrize('feature_dim', [0, 4])
def test_batched_folded_network_equals_one_latent_at_a_time(shared_direction, feature_dim):
    network = _network(feature_dim)
    points = torch.randn(3, 40, 3, dtype=torch.float64) * 0.1
    directions = F.normalize(torch.randn(3, 40, 3, dtype=torch.float64), dim=-1)
    directions = directions[0, 0] if shared_direction else directions
    raw_frequencies, phases = network.mapping_network(torch.randn(3, 16, dtype=torch.float64))
    batched = network.forward_folded(points, directions, raw_frequencies, phases, with_features=bool(feature_dim))
    for b in range(3):
        single = network.forward_folded(points[b], directions if shared_direction else directions[b],
                                        raw_frequencies[b], phases[b], with_features=bool(feature_dim))
        for got, want in zip(batched if feature_dim else (batched,), single if feature_dim else (single,)):
            torch.testing.assert_close(got[b], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize('recompute', [False, True])
def test_batched_fused_network_gives_the_per_latent_gradients(recompute):
    network = _network(feature_dim=4)
    points = (torch.randn(3, 40, 3, dtype=torch.float64) * 0.1).requires_grad_()
    directions = F.normalize(torch.randn(3, 40, 3, dtype=torch.float64), dim=-1)
    z = torch.randn(3, 16, dtype=torch.float64)
    upstream = torch.randn(3, 40, 8, dtype=torch.float64)

    def evaluate(batched):
        network.zero_grad(set_to_none=True)
        points.grad = None
        raw_frequencies, phases = network.mapping_network(z)
        if batched:
            out, features = network.forward_fused(points, directions, raw_frequencies, phases, with_features=True,
                                                  recompute=recompute)
            outputs = torch.cat([out, features], -1)
        else:
            outputs = torch.stack([torch.cat(network.forward_fused(points[b], directions[b], raw_frequencies[b],
                                                                   phases[b], with_features=True,
                                                                   recompute=recompute), -1) for b in range(3)])
        (outputs * upstream).sum().backward()
        return outputs.detach(), {n: p.grad.clone() for n, p in network.named_parameters()}, points.grad.clone()

    per_latent = evaluate(False)
    batched = evaluate(True)
    torch.testing.assert_close(batched[0], per_latent[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(batched[2], per_latent[2], rtol=1e-9, atol=1e-12)
    for name, grad in per_latent[1].items():
        torch.testing.assert_close(batched[1][name], grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize('name', ['TINY_GRAM', 'TINY_CARLA'])
@pytest.mark.parametrize('lock_view_dependence', [False, True])
def test_batched_render_equals_plain_and_per_latent(name, lock_view_dependence, one_thread):
    generator = structured_generator(name)
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(0))
    for pitch, yaw in (angles((1.5, 1.3), (1.7, 1.9), (1.2, 1.6)), angles((1.6, 1.4), (1.6, 1.4), (1.6, 1.4))):
        with torch.no_grad():
            options = dict(lock_view_dependence=lock_view_dependence)
            plain = generator.render(z, pitch, yaw, fast=False, **options)
            per_latent = generator.render(z, pitch, yaw, radiance_path='per_latent', **options)
            batched = generator.render(z, pitch, yaw, radiance_path='batched', **options)
        assert plain.std() > 0.05
        torch.testing.assert_close(batched, plain, atol=1e-4, rtol=0)  # as the per-latent path (test_generator)
        torch.testing.assert_close(batched, per_latent, atol=1e-6, rtol=0)


def test_batched_render_with_the_inexact_options(one_thread):
    generator = structured_generator()
    z = torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(0))
    pitch, yaw = angles((1.5, 1.4), (1.7, 1.8))
    with torch.no_grad():
        exact = generator.render(z, pitch, yaw, radiance_path='batched')
        for options in (dict(precision='fp16'), dict(precision='bf16'), dict(early_termination=0.01)):
            per_latent = generator.render(z, pitch, yaw, radiance_path='per_latent', **options)
            batched = generator.render(z, pitch, yaw, radiance_path='batched', **options)
            torch.testing.assert_close(batched, per_latent, atol=1e-3, rtol=0, msg=str(options))
        fp16 = generator.render(z, pitch, yaw, radiance_path='batched', precision='fp16')
    # half precision changes the pixels, a little (the x40 heads of this generator amplify it)
    assert 0 < (fp16 - exact).abs().max() < 0.2 and (fp16 - exact).abs().mean() < 0.01


@pytest.mark.parametrize('training_path', ['fast', 'low_memory'])
def test_batched_training_path_gives_the_plain_gradient(training_path, one_thread):
    torch.manual_seed(0)
    generator = build_generator(configs.get_config('TINY_GRAM')).train()
    z = torch.randn(3, generator.z_dim)
    pitch, yaw = generator.sample_poses(3, 'cpu', generator=torch.Generator().manual_seed(1))
    upstream = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))

    def images_and_grads(path, radiance_path):
        generator.training_path, generator.radiance_path = path, radiance_path
        generator.zero_grad(set_to_none=True)
        try:
            images, _ = generator(z, pitch, yaw)
            (images * upstream).sum().backward()
        finally:
            generator.training_path, generator.radiance_path = 'fast', 'auto'
        return images.detach(), {n: p.grad.clone() for n, p in generator.named_parameters()}

    plain_images, plain_grads = images_and_grads('plain', 'auto')
    images, grads = images_and_grads(training_path, 'batched')
    torch.testing.assert_close(images, plain_images, rtol=0, atol=1e-5)
    for name, plain_grad in plain_grads.items():
        scale = plain_grad.abs().max().item()
        assert (grads[name] - plain_grad).abs().max().item() <= 1e-4 * scale + 1e-9, name


def test_batched_training_under_autocast(one_thread):
    """CPU float16 autocast standing in for CUDA AMP: the batched matmuls compute in half precision and the
    parameters get float32 gradients, close to the per-latent path's under the same autocast."""
    torch.manual_seed(0)
    generator = build_generator(configs.get_config('TINY_GRAM')).train()
    z = torch.randn(2, generator.z_dim)
    pitch, yaw = generator.sample_poses(2, 'cpu', generator=torch.Generator().manual_seed(1))

    def run(radiance_path):
        generator.radiance_path = radiance_path
        generator.zero_grad(set_to_none=True)
        try:
            with torch.autocast('cpu', dtype=torch.float16):
                images, _ = generator(z, pitch, yaw)
            images.float().sum().backward()
        finally:
            generator.radiance_path = 'auto'
        return images.float().detach(), {n: p.grad for n, p in generator.named_parameters()}

    per_latent_images, per_latent_grads = run('per_latent')
    images, grads = run('batched')
    assert (images - per_latent_images).abs().max() < 0.01
    for name, grad in grads.items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        scale = per_latent_grads[name].abs().max().item()
        assert (grad - per_latent_grads[name]).abs().max().item() <= 0.05 * scale + 1e-6, name


def test_batched_gramhd_keeps_its_renders(one_thread):
    """GRAM-HD keeps the official operation order: batched, its LR radiance runs the stock forward over
    all latents' compacted points at once."""
    torch.manual_seed(0)
    generator = build_generator('TINY_GRAMHD').eval()
    z = torch.randn(2, generator.z_dim)
    pitch, yaw = angles((1.5, 1.4), (1.7, 1.8))
    with torch.no_grad():
        per_latent = generator.render(z, pitch, yaw, return_lr=True)
        generator.radiance_path = 'batched'
        batched = generator.render(z, pitch, yaw, return_lr=True)
    for got, want in zip(batched, per_latent):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_batched_render_of_the_official_fixture(one_thread):
    folder = official_fixture('gram_ffhq')
    expected = torch.load(folder / 'expected.pt', map_location='cpu', weights_only=True)
    generator = load_generator(folder / 'generator.pth', config='FFHQ_default')
    angles_ = expected['camera_angles_phi_theta']
    view = 1
    with torch.no_grad():
        image = generator.render(expected['z'], angles_[view, 0].expand(2), angles_[view, 1].expand(2), img_size=64,
                                 radiance_path='batched')
    assert_close_to_official(image, expected['images'][:, view])


def test_chunk_sizes(monkeypatch):
    generator = build_generator('FFHQ_default')
    rays = 256 * 256
    # CPU: the fixed bound of 2**19 field samples per chunk, as before
    assert generator.rays_per_chunk(4, rays, 'cpu') == 2 ** 19 // (4 * 64)
    assert generator.rays_per_chunk(4, rays, 'cpu', chunk_points=64 * 4 * 10) == 10
    # CUDA: from the free memory (faked here; nothing is allocated)
    free = {'bytes': 130 * 2 ** 30}
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device=None: (free['bytes'], 141 * 2 ** 30))
    assert generator.rays_per_chunk(1, rays, 'cuda') == rays  # one 256^2 image at once on a large GPU
    assert generator.rays_per_chunk(8, rays, 'cuda', shared_camera=True) == rays
    batch_32 = generator.rays_per_chunk(32, rays, 'cuda', shared_camera=True)
    assert rays // 8 < batch_32 < rays
    assert generator.rays_per_chunk(32, rays, 'cuda', shared_camera=True, precision='fp16') > batch_32
    assert generator.rays_per_chunk(32, rays, 'cuda', shared_camera=False) < batch_32
    assert generator.rays_per_chunk(32, rays, 'cuda', shared_camera=True, fast=False) < batch_32
    free['bytes'] = 2 ** 30
    assert generator.rays_per_chunk(32, rays, 'cuda') < batch_32 // 50
    free['bytes'] = 0
    assert generator.rays_per_chunk(32, rays, 'cuda') == 1
    assert generator.rays_per_chunk(32, rays, 'cuda', chunk_points=64 * 32 * 10) == 10  # explicit wins
