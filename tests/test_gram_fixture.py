"""The official GRAM fixture: our generator renders the official checkpoint to the official pixels.

../shared/fixtures/official/gram_ffhq holds a GRAM `FFHQ_default` checkpoint in the official on-disk
formats (raw `generator.pth` + pickled torch_ema `ema.pth`) and the images the official code rendered from
it. Rendering must use the EMA weights; raw weights differ by up to 0.39.
"""
import pytest
import torch

from conftest import official_fixture
from generators import camera, load_generator
from utils.official_tolerance import official_image_error
from utils.seeds import latent_for_seed

@pytest.fixture(scope='module')
def case():
    folder = official_fixture('gram_ffhq')
    expected = torch.load(folder / 'expected.pt', map_location='cpu', weights_only=True)
    generator = load_generator(folder / 'generator.pth', config='FFHQ_default')
    return folder, expected, generator


@pytest.fixture(scope='module')
def fast_renders(case):
    _, expected, generator = case
    angles = expected['camera_angles_phi_theta']
    with torch.no_grad():
        # Both seeds of a view in one batch: the shared-camera path computes the field once.
        return [generator.render(expected['z'], angles[v, 0].expand(2), angles[v, 1].expand(2), img_size=64)
                for v in range(angles.shape[0])]


def assert_close_to_official(image, reference):
    """Within the fixture tolerance (utils/official_tolerance.py, which the GPU suite checks on its device too)."""
    error = official_image_error(image, reference)
    assert error['within_tolerance'], error


def test_latents_follow_the_official_seed_rule(case):
    _, expected, generator = case
    for row, seed in enumerate(expected['seeds'].tolist()):
        assert torch.equal(latent_for_seed(seed, generator.z_dim)[0], expected['z'][row])


def test_camera_origins_match_the_official_float64_rule(case):
    _, expected, _ = case
    angles = expected['camera_angles_phi_theta']
    origins = camera.origins_from_angles(angles[:, 0], angles[:, 1])
    assert torch.equal(origins, expected['camera_origins'])


def test_intersections_match_official_debug_tensors(case):
    _, expected, generator = case
    angles = expected['camera_angles_phi_theta']
    origins = camera.origins_from_angles(angles[:1, 0], angles[:1, 1])
    with torch.no_grad():
        hits = generator.ray_intersections(origins, 64)
    levels = generator.num_levels
    assert torch.equal(generator.levels('cpu'), expected['debug_levels'])
    assert torch.equal(hits['valid'][0, :, :levels], expected['debug_is_valid_unsorted'])
    torch.testing.assert_close(hits['points'][0, :, :levels], expected['debug_intersections_unsorted'],
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize('view', [0, 1, 2], ids=['frontal', 'yaw+0.3', 'yaw-0.3_pitch+0.2'])
def test_images_match_official_render(fast_renders, case, view):
    _, expected, _ = case
    assert_close_to_official(fast_renders[view], expected['images'][:, view])


def test_plain_reference_path_matches_too(case, fast_renders):
    """fast=False evaluates every intersection of every latent, as the official code does."""
    _, expected, generator = case
    angles = expected['camera_angles_phi_theta']
    with torch.no_grad():
        plain = generator.render(expected['z'][:1], angles[2:3, 0], angles[2:3, 1], img_size=64, fast=False)
    assert_close_to_official(plain, expected['images'][:1, 2])
    torch.testing.assert_close(plain, fast_renders[2][:1], atol=1e-5, rtol=0)


def test_depth_matches_official_debug_depth(case):
    _, expected, generator = case
    angles = expected['camera_angles_phi_theta']
    with torch.no_grad():
        image, depth = generator.render(expected['z'][:1], angles[:1, 0], angles[:1, 1], img_size=64,
                                        return_depth=True)
    torch.testing.assert_close(depth[0, 0], expected['debug_depth'], atol=1e-4, rtol=0)
    assert_close_to_official(image[0], expected['debug_experiment_image'])


def test_raw_weights_alone_do_not_match(case, tmp_path):
    """Guards the EMA rule: without the sibling ema.pth the raw weights are far from the official images."""
    folder, expected, _ = case
    lonely = tmp_path / 'generator.pth'
    lonely.write_bytes((folder / 'generator.pth').read_bytes())
    raw = load_generator(lonely, config='FFHQ_default')
    angles = expected['camera_angles_phi_theta']
    with torch.no_grad():
        image = raw.render(expected['z'][:1], angles[:1, 0], angles[:1, 1], img_size=64)
    assert (image - expected['images'][:1, 0]).abs().max() > 0.05


def test_official_ema_file_loads_directly(case):
    folder, expected, _ = case
    generator = load_generator(folder / 'ema.pth', config='FFHQ_default')
    angles = expected['camera_angles_phi_theta']
    with torch.no_grad():
        image = generator.render(expected['z'][1:], angles[1:2, 0], angles[1:2, 1], img_size=64)
    assert_close_to_official(image, expected['images'][1:, 1])
