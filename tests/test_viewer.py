"""The browser viewer without a browser: camera conversion, pose range, render modes, CLI errors."""
import math
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from generators import build_generator, camera, load_generator, surfaces
from rendering import outputs3d, views
from utils.images import to_uint8
from utils.maps import colorize_depth, depth_range
from utils.seeds import latent_for_seed

SHIPPED = REPO_ROOT / 'ckpts' / 'synthetic_heads.pt'


def rotation(wxyz):
    w, x, y, z = wxyz
    from scipy.spatial.transform import Rotation
    return Rotation.from_quat([x, y, z, w]).as_matrix()


@pytest.fixture(scope='module')
def shipped():
    return load_generator(SHIPPED)


def test_frontal_camera_in_viser_axes():
    position, wxyz = views.gram_to_viser(math.pi / 2, math.pi / 2)
    np.testing.assert_allclose(position, [0, 0, 1], atol=1e-12)
    matrix = rotation(wxyz)  # columns: OpenCV camera axes right, down, forward in the world
    np.testing.assert_allclose(matrix[:, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(matrix[:, 1], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(matrix[:, 2], [0, 0, -1], atol=1e-12)


@pytest.mark.parametrize('pitch, yaw, distance', [(math.pi / 2, math.pi / 2 + 0.3, 1.0), (1.2, 1.9, 0.6),
                                                  (2.0, 0.4, 2.2), (0.3, -2.5, 1.0)])
def test_camera_round_trip_and_agreement_with_gram_rays(pitch, yaw, distance):
    position, wxyz = views.gram_to_viser(pitch, yaw, distance)
    back = views.viser_to_gram(position, wxyz)
    assert back[0] == pytest.approx(pitch, abs=1e-9)
    assert math.remainder(back[1] - yaw, 2 * math.pi) == pytest.approx(0, abs=1e-9)
    assert back[2] == pytest.approx(distance, abs=1e-9)
    # the viser camera sits on GRAM's camera ray and its axes are GRAM's with y and z flipped
    origin = camera.origins_from_angles(torch.tensor([pitch], dtype=torch.float64),
                                        torch.tensor([yaw], dtype=torch.float64))[0].double().numpy()
    np.testing.assert_allclose(position, origin * distance, atol=1e-6)
    cam2world = camera.look_at_cam2world(torch.from_numpy(origin)[None])[0, :3, :3].numpy()
    np.testing.assert_allclose(rotation(wxyz), cam2world * [1, -1, -1], atol=1e-6)


def test_positive_yaw_offset_moves_the_camera_towards_minus_x_and_pitch_below():
    position, _ = views.gram_to_viser(math.pi / 2 + 0.2, math.pi / 2 + 0.3)
    assert position[0] < 0 and position[1] < 0


def test_viser_matches_its_own_look_at_orientation():
    viser_transforms = pytest.importorskip('viser.transforms')
    pitch, yaw = 1.3, 2.0
    position, wxyz = views.gram_to_viser(pitch, yaw)
    # viser's look-at camera: +z towards the target, +y (down) opposite to the world up +y
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0, 1, 0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    expected = viser_transforms.SO3.from_matrix(np.stack([right, down, forward], axis=1))
    np.testing.assert_allclose(viser_transforms.SO3(wxyz).as_matrix(), expected.as_matrix(), atol=1e-9)


def test_panned_camera_keeps_its_view_direction():
    position, wxyz = views.gram_to_viser(1.4, 1.8, 1.5)
    right = rotation(wxyz)[:, 0]
    pitch, yaw, distance = views.viser_to_gram(position + 0.2 * right, wxyz)
    assert (pitch, yaw, distance) == pytest.approx((1.4, 1.8, 1.5), abs=1e-9)


def test_pose_range_and_clamp(shipped):
    (pitch_low, pitch_high), (yaw_low, yaw_high) = views.pose_range(shipped)
    prior = shipped.config['generator']['kwargs']  # the shipped SYNTH_CPU_HEADS: pitch std 0.3, yaw std 0.6
    assert (prior['v_stddev'], prior['h_stddev']) == (0.3, 0.6)
    assert (pitch_low, pitch_high) == pytest.approx((math.pi / 2 - 2 * 0.3, math.pi / 2 + 2 * 0.3))
    assert (yaw_low, yaw_high) == pytest.approx((math.pi / 2 - 1.2, math.pi / 2 + 1.2))
    assert views.clamp_pose(shipped, 1.6, 1.7) == (1.6, 1.7)
    assert views.clamp_pose(shipped, 0.1, 3.0) == pytest.approx((pitch_low, yaw_high))
    # -pi/2 is the back of the head: wrapped around the range's centre it lands on one edge, not inside
    assert views.clamp_pose(shipped, math.pi / 2, 1.7 + 2 * math.pi) == pytest.approx((math.pi / 2, 1.7))
    carla = build_generator('TINY_CARLA')
    (pitch_low, pitch_high), (yaw_low, yaw_high) = views.pose_range(carla)
    assert yaw_high - yaw_low == pytest.approx(2 * math.pi)
    assert 0 < pitch_low < pitch_high < math.pi / 2 + 1e-9


def test_zoom_and_edge_fov():
    assert views.zoomed_fov(12, 1.0) == pytest.approx(12)
    assert math.tan(math.radians(views.zoomed_fov(12, 0.5)) / 2) == pytest.approx(0.5 * math.tan(math.radians(6)))
    # 3 pixels with centres at +-fov/2: the edges lie half a pixel further out
    assert math.tan(math.radians(views.edge_fov(12, 3)) / 2) == pytest.approx(1.5 * math.tan(math.radians(6)))


def test_rgb_depth_normal_modes_are_the_render_calls(shipped):
    renderer = views.ViewRenderer(shipped)
    view = views.View(seed=3, truncation=0.7, pitch=1.5, yaw=1.8, img_size=16, fov=9.0)
    z = latent_for_seed(3, shipped.z_dim)
    shipped.camera['fov'] = 9.0
    try:
        with torch.no_grad():
            image, depth = shipped.render(z, torch.tensor([1.5], dtype=torch.float64),
                                          torch.tensor([1.8], dtype=torch.float64), img_size=16,
                                          truncation_psi=0.7, lock_view_dependence=True, return_depth=True)
    finally:
        shipped.camera['fov'] = 12
    rgb, _ = renderer.render(view)
    assert shipped.camera['fov'] == 12  # the zoom is undone after the render
    np.testing.assert_array_equal(rgb, to_uint8(image)[0])
    depth = depth[0, 0].numpy()
    shown, note = renderer.render(views.View(**{**view.__dict__, 'mode': 'depth'}))
    np.testing.assert_array_equal(shown, colorize_depth(depth, *depth_range([depth])))
    assert 'depth' in note
    shown, _ = renderer.render(views.View(**{**view.__dict__, 'mode': 'normals'}))
    np.testing.assert_array_equal(shown, outputs3d.normal_tile(depth, 9.0))
    with pytest.raises(ValueError, match='render mode'):
        renderer.render(views.View(**{**view.__dict__, 'mode': 'mesh'}))


def test_alpha_mode_is_the_levels_alpha_at_its_ray_crossings(shipped):
    z = latent_for_seed(1, shipped.z_dim)
    level = 9  # an inner level: the shipped model's outer ones are not crossed from this camera
    alpha = views.level_alpha(shipped, z, 1.5, 1.7, 12, level, truncation_psi=0.7)
    origins = camera.origins_from_angles(torch.tensor([1.5], dtype=torch.float64),
                                         torch.tensor([1.7], dtype=torch.float64))
    with torch.no_grad():
        hits = shipped.ray_intersections(origins, 12)
    valid = hits['valid'][0, :, level, 0].numpy().reshape(12, 12) > 0
    assert valid.any() and (alpha[~valid] == 0).all()
    field = surfaces.LatentField.from_latent(shipped, z, 0.7)
    row, col = np.argwhere(valid)[0]
    expected = field.alpha(hits['points'][0, row * 12 + col, level][None])[0, 0].item()
    assert alpha[row, col] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    shown, note = views.ViewRenderer(shipped).render(
        views.View(seed=1, truncation=0.7, pitch=1.5, yaw=1.7, img_size=12, fov=12, mode='alpha', level=level))
    assert shown.shape == (12, 12, 3) and shown.max() == 255 and 'max' in note  # scaled to the frame's peak
    with pytest.raises(ValueError, match='level'):
        views.level_alpha(shipped, z, 1.5, 1.7, 12, shipped.num_levels)


def test_gramhd_views_reuse_textures_while_the_latent_is_unchanged(monkeypatch):
    torch.manual_seed(0)
    generator = build_generator('TINY_GRAMHD').eval()
    renderer = views.ViewRenderer(generator)
    calls = []
    original = generator.manifold_textures
    monkeypatch.setattr(generator, 'manifold_textures', lambda *a, **k: calls.append(1) or original(*a, **k))
    view = views.View(seed=2, truncation=0.7, pitch=1.6, yaw=1.5, img_size=64, fov=12)
    hr, _ = renderer.render(view)
    lr, _ = renderer.render(views.View(**{**view.__dict__, 'low_res': True, 'yaw': 1.6}))
    assert len(calls) == 1
    assert hr.shape == (64, 64, 3) and lr.shape == (16, 16, 3)
    z = latent_for_seed(2, generator.z_dim)
    with torch.no_grad():
        expected_hr, expected_lr = generator.render(z, torch.tensor([1.6], dtype=torch.float64),
                                                    torch.tensor([1.5], dtype=torch.float64), truncation_psi=0.7,
                                                    lock_view_dependence=True, return_lr=True)
    np.testing.assert_array_equal(hr, to_uint8(expected_hr)[0])
    renderer.render(views.View(**{**view.__dict__, 'seed': 5}))
    assert len(calls) == 2


def test_letterbox_centres_the_render():
    viewer = pytest.importorskip('viewer')
    image = np.full((10, 10, 3), 200, np.uint8)
    wide = viewer.letterbox(image, 1.6)
    assert wide.shape == (10, 16, 3) and (wide[:, 3:13] == 200).all() and (wide[:, :3] == viewer.GREY).all()
    tall = viewer.letterbox(image, 0.5)
    assert tall.shape == (20, 10, 3) and (tall[5:15] == 200).all()


# ---------------------------------------------------------------------------------------------------
# Command line: bad input ends with one line and an exit code, before anything is served

def run_viewer(*argv):
    return subprocess.run([sys.executable, 'viewer.py', *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)


def test_port_in_use_is_one_line():
    pytest.importorskip('viser')
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen(1)
        result = run_viewer('--port', str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'is in use' in result.stderr.strip() and len(result.stderr.strip().splitlines()) == 1


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return str(probe.getsockname()[1])


def test_bad_checkpoint_and_bad_flags(tmp_path, capsys):
    viewer = pytest.importorskip('viewer')
    pytest.importorskip('viser')
    broken = tmp_path / 'broken.pt'
    broken.write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit) as stop:
        viewer.main(['--ckpt', str(broken), '--port', free_port()])
    assert str(stop.value.code).startswith('error:') and 'broken.pt' in str(stop.value.code)
    with pytest.raises(SystemExit) as stop:
        viewer.main(['--ckpt', str(tmp_path / 'missing.pt'), '--port', free_port()])
    assert 'missing.pt' in str(stop.value.code)
    for argv in (['--port', '70000'], ['--truncation', 'nan'], ['--seed', '-1']):
        with pytest.raises(SystemExit) as stop:
            viewer.main(argv)
        assert stop.value.code == 2
    assert 'argument --port' in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU')
def test_cuda_without_a_gpu(capsys):
    viewer = pytest.importorskip('viewer')
    with pytest.raises(SystemExit) as stop:
        viewer.main(['--device', 'cuda'])
    assert stop.value.code == 2
    assert 'no usable CUDA GPU' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The page's actions without a browser (the browser test drives the camera and the seed)

@pytest.fixture
def page(shipped, tmp_path):
    viewer = pytest.importorskip('viewer')
    pytest.importorskip('viser')
    instance = viewer.Viewer(shipped, 'cpu', port=0, img_size=16, preview_size=8, output_dir=str(tmp_path / 'out'),
                             verbose=False)
    yield instance
    instance.stop()


def test_exports_call_the_3d_output_code(page, tmp_path):
    from PIL import Image

    page.seed.value = 4
    page.mode.value = 'depth'
    path = page.export_png()
    view = page.current_view(full=True)
    assert view.img_size == 16 and view.mode == 'depth'
    np.testing.assert_array_equal(np.asarray(Image.open(path)), views.ViewRenderer(page.generator).render(view)[0])
    page.mesh_resolution.value = 32
    page.mesh_level.value = 0.9999  # above the shipped model's largest alpha: no surface, and the panel says so
    mesh, note = page.latent_mesh()
    assert mesh is None and 'never reaches' in note
    page.mesh_level.value = 0.5  # the default level: the shipped model's head shell
    mesh, note = page.latent_mesh()
    assert mesh is not None and len(mesh.faces) > 0 and 'seed 4' in note
    summary = page.export_mesh()
    assert 'seed 4' in summary
    for extension in ('ply', 'obj', 'glb'):
        assert (tmp_path / 'out' / f'mesh_4.{extension}').stat().st_size > 0
    video = page.export_video()
    assert video.endswith('grid_4.mp4') and (tmp_path / 'out' / 'grid_4_depth.mp4').exists()


def test_camera_updates_are_kept_in_range_and_adapt_the_size(page):
    class Camera:  # what viser hands the callback: the browser's camera
        def __init__(self, position, wxyz):
            self.position, self.wxyz = np.asarray(position), np.asarray(wxyz)
            self.look_at, self.fov, self.image_width, self.image_height = np.zeros(3), 0.5, 800, 600

    position, wxyz = views.gram_to_viser(math.pi / 2 - 1.0, math.pi / 2 + 0.1, 1.5)
    browser = Camera(position, wxyz)
    page._on_camera(browser)
    pitch_range, _ = views.pose_range(page.generator)
    assert page.pitch == pytest.approx(pitch_range[0]) and page.yaw == pytest.approx(math.pi / 2 + 0.1)
    # the browser is sent back to the range's edge, at the same zoom, looking at the origin
    np.testing.assert_allclose(browser.position, views.gram_to_viser(page.pitch, page.yaw, 1.5)[0])
    assert browser.fov == pytest.approx(page.browser_fov())
    moving = page.current_view()
    assert moving.img_size == 8 and moving.fov == pytest.approx(views.zoomed_fov(12, 1.5))
    page.moved_at -= 10
    assert page.current_view().img_size == 16
