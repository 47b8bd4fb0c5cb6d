"""GRAM generator behaviour on small configs: fast path == plain path, batching, patches, truncation."""
import math

import pytest
import torch

from generators import build_generator


def structured_generator(name='TINY_GRAM', seed=0):
    """A random-init generator with larger head weights, so images have structure worth comparing."""
    torch.manual_seed(seed)
    generator = build_generator(name).eval()
    with torch.no_grad():
        for head in list(generator.representation.rf_network.output_sigma) + \
                list(generator.representation.rf_network.output_color):
            head.weight.mul_(40)
    return generator


def angles(*pairs):
    pitch = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    yaw = torch.tensor([y for _, y in pairs], dtype=torch.float64)
    return pitch, yaw


@pytest.mark.parametrize('name', ['TINY_GRAM', 'TINY_CARLA'])
def test_fast_path_equals_plain_path(name):
    generator = structured_generator(name)
    z = torch.randn(3, generator.z_dim)
    pitch, yaw = angles((1.5, 1.3), (1.7, 1.9), (1.2, 1.6))
    with torch.no_grad():
        plain = generator.render(z, pitch, yaw, fast=False)
        fast = generator.render(z, pitch, yaw, fast=True)
    assert plain.shape == (3, 3, 16, 16)
    assert plain.std() > 0.05
    # the fast path folds FiLM frequencies into the weights: same math, other rounding, amplified here by
    # the x40 heads (on the official fixture the two paths agree to 1e-6)
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=0)


def test_shared_camera_batch_equals_one_by_one():
    generator = structured_generator()
    z = torch.randn(3, generator.z_dim)
    pitch, yaw = angles((1.6, 1.4))
    with torch.no_grad():
        batch = generator.render(z, pitch.expand(3), yaw.expand(3))
        single = torch.cat([generator.render(z[i:i + 1], pitch, yaw) for i in range(3)])
    # heads scaled x40 amplify the float-order differences of differently sized matmuls
    torch.testing.assert_close(batch, single, atol=1e-4, rtol=0)


def test_chunked_rendering_equals_one_chunk():
    generator = structured_generator()
    z = torch.randn(2, generator.z_dim)
    pitch, yaw = angles((1.5, 1.5), (1.6, 1.7))
    with torch.no_grad():
        whole = generator.render(z, pitch, yaw)
        chunked = generator.render(z, pitch, yaw, chunk_points=2 * 24 * 10)  # 10 rays per chunk
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


def test_pixel_range_patches_assemble_the_full_image():
    generator = structured_generator()
    z = torch.randn(2, generator.z_dim)
    pitch = torch.tensor([1.5, 1.7])
    yaw = torch.tensor([1.4, 1.8])
    with torch.no_grad():
        full, poses = generator(z, pitch, yaw)
        bounds = [0, 85, 170, 256]  # 3 uneven strips
        parts = [generator(z, pitch, yaw, pixel_range=(a, b))[0] for a, b in zip(bounds[:-1], bounds[1:])]
    torch.testing.assert_close(torch.cat(parts, -1).reshape(2, 3, 16, 16), full, atol=1e-6, rtol=0)
    torch.testing.assert_close(poses, torch.stack([pitch, yaw], -1))


def test_forward_samples_poses_from_the_prior():
    generator = structured_generator()
    torch.manual_seed(1)
    images, poses = generator(torch.randn(64, generator.z_dim, ), img_size=4)
    assert images.shape == (64, 3, 4, 4) and poses.shape == (64, 2)
    assert abs(poses[:, 1].mean() - math.pi / 2) < 0.15 and abs(poses[:, 0].std() - 0.155) < 0.06


def test_truncation_zero_gives_the_mean_face_and_is_deterministic():
    generator = structured_generator()
    z = torch.randn(2, generator.z_dim)
    pitch, yaw = angles((1.57, 1.57))
    with torch.no_grad():
        mean_faces = generator.render(z, pitch.expand(2), yaw.expand(2), truncation_psi=0.0)
        again = structured_generator().render(z, pitch.expand(2), yaw.expand(2), truncation_psi=0.0)
        untruncated = generator.render(z, pitch.expand(2), yaw.expand(2))
    torch.testing.assert_close(mean_faces[0], mean_faces[1], atol=1e-6, rtol=0)
    assert torch.equal(mean_faces, again)
    assert (untruncated[0] - untruncated[1]).abs().max() > 1e-3


def test_lock_view_dependence_changes_only_colour():
    generator = structured_generator()
    z = torch.randn(1, generator.z_dim)
    pitch, yaw = angles((1.57, 1.3))
    with torch.no_grad():
        free, free_depth = generator.render(z, pitch, yaw, return_depth=True)
        locked, locked_depth = generator.render(z, pitch, yaw, lock_view_dependence=True, return_depth=True)
    assert (free - locked).abs().max() > 1e-4
    torch.testing.assert_close(free_depth, locked_depth)


def test_carla_renders_white_where_nothing_is_hit():
    generator = structured_generator('TINY_CARLA')
    with torch.no_grad():
        generator.representation.sample_network.output_layer.bias.fill_(1000.0)  # field never reaches a level
        image = generator.render(torch.randn(1, generator.z_dim), *angles((1.0, 1.57)))
    torch.testing.assert_close(image, torch.ones_like(image))


def test_mismatched_batch_is_a_clear_error():
    generator = structured_generator()
    with pytest.raises(ValueError, match='rows'):
        generator.render(torch.randn(3, generator.z_dim), torch.ones(2), torch.ones(2))
