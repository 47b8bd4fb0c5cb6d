"""Issue 27, first part: invert.py fits GRAM's FiLM parameters to a photo; its latent file renders in
inference.py in place of a seed; bad input is one line with nothing written."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

import inference
import invert
from generators import build_generator
from rendering import inversion
from rendering.views import frontal_angles
from utils.images import to_uint8
from utils.seeds import latent_for_seed

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return build_generator('TINY_GRAM').eval()


def frontal(pitch=0.0, yaw=0.0):
    return frontal_angles(pitch, yaw)


def test_fit_recovers_a_latents_render(tiny):
    pitch, yaw = frontal(0.0, 0.2)
    with torch.no_grad():
        target = tiny.render(latent_for_seed(3, tiny.z_dim), pitch, yaw, lock_view_dependence=True)
    styles, history, (fitted_pitch, fitted_yaw) = inversion.fit_latent(tiny, target, pitch, yaw, steps=60, lr=0.05)
    assert torch.equal(fitted_pitch, pitch) and torch.equal(fitted_yaw, yaw)  # no pose_lr: the camera is kept
    start, end = inversion.psnr_from_mse(history[0]), inversion.psnr_from_mse(history[-1])
    with torch.no_grad():
        fitted = tiny.render(None, pitch, yaw, lock_view_dependence=True, styles=styles)
    achieved = inversion.psnr_from_mse(float(((fitted - target) ** 2).mean()))
    assert achieved > start + 6 and achieved > 25, (start, end, achieved)
    assert all(param.requires_grad for param in tiny.parameters())  # the generator is left as it was


def test_mirror_view_is_the_flipped_photo_from_the_mirrored_camera(tiny):
    pitch, yaw = frontal(0.05, 0.25)
    with torch.no_grad():
        target = tiny.render(latent_for_seed(4, tiny.z_dim), pitch, yaw, lock_view_dependence=True)
    plain, plain_history, _ = inversion.fit_latent(tiny, target, pitch, yaw, steps=40, lr=0.05, noise=0)
    mirrored, history, _ = inversion.fit_latent(tiny, target, pitch, yaw, steps=40, lr=0.05, noise=0,
                                                mirror_weight=1.0)

    def error(styles, yaw_there, image):
        with torch.no_grad():
            return float(((tiny.render(None, pitch, yaw_there, lock_view_dependence=True, styles=styles)
                           - image) ** 2).mean())
    # the mirror fit explains the flipped photo at yaw pi - yaw, which the plain fit never saw
    flipped = torch.flip(target, dims=[-1])
    assert error(mirrored, math.pi - yaw, flipped) < 0.7 * error(plain, math.pi - yaw, flipped)
    # and its history is the photo's own error (both fits start at the mean latent, so the same first value)
    assert history[0] == pytest.approx(plain_history[0], rel=1e-6)
    assert history[-1] == pytest.approx(error(mirrored, yaw, target), rel=0.05)


def test_finetuning_goes_past_the_latent_and_the_regulariser_holds_the_geometry(tiny):
    pitch, yaw = frontal(0.0, 0.2)
    with torch.no_grad():
        # a target the latent cannot express: a render with a stripe painted on it
        target = tiny.render(latent_for_seed(5, tiny.z_dim), pitch, yaw, lock_view_dependence=True)
        target[..., 10:14, :] = 0.8
    styles, history, _ = inversion.fit_latent(tiny, target, pitch, yaw, steps=30, lr=0.05)
    before = {name: param.clone() for name, param in tiny.named_parameters()}
    views = tiny.sample_poses(4, 'cpu', generator=torch.Generator().manual_seed(9))

    def depth_change(model):
        with torch.no_grad():
            args = dict(lock_view_dependence=True, return_depth=True, styles=tuple(s.expand(4, -1) for s in styles))
            return float((model.render(None, *views, **args)[1] - tiny.render(None, *views, **args)[1]).abs().mean())
    free, free_history = inversion.finetune_radiance(tiny, styles, target, pitch, yaw, 40, lr=1e-3,
                                                     geometry_weight=0.0)
    held, held_history = inversion.finetune_radiance(tiny, styles, target, pitch, yaw, 40, lr=1e-3,
                                                     geometry_weight=10.0)
    assert held_history[-1] < 0.7 * history[-1] and free_history[-1] < 0.7 * history[-1]  # past the latent fit
    assert depth_change(held) < 0.5 * depth_change(free)
    # the manifold network is frozen, and the model given is not changed
    for name, param in held.named_parameters():
        if name.startswith('representation.sample_network.'):
            assert torch.equal(param, before[name]), name
    assert all(torch.equal(param, before[name]) for name, param in tiny.named_parameters())


def test_parabola_vertex_refines_a_grid_minimum():
    values = torch.tensor([-0.4, -0.2, 0.0, 0.2, 0.4], dtype=torch.float64)
    losses = [float((v - 0.07) ** 2) for v in values]
    assert abs(inversion._parabola_vertex(values, losses, 2) - 0.07) < 1e-9
    assert inversion._parabola_vertex(values, losses[::-1], 0) == -0.4  # an end stays where it is


def test_pose_refinement_and_search_find_the_camera_of_a_render():
    from conftest import REPO_ROOT
    from generators import load_generator

    generator = load_generator(str(REPO_ROOT / 'ckpts' / 'synthetic_heads.pt'))
    true_pitch, true_yaw = 0.05, 0.32
    with torch.no_grad():
        target = generator.render(latent_for_seed(7, generator.z_dim), *frontal(true_pitch, true_yaw),
                                  lock_view_dependence=True)
    # refinement from a camera 0.12 rad off in yaw moves it towards the truth
    _, _, (_, yaw) = inversion.fit_latent(generator, target, *frontal(true_pitch, true_yaw - 0.12), steps=60,
                                          pose_lr=inversion.DEFAULT_POSE_LR)
    assert abs(float(yaw[0]) - math.pi / 2 - true_yaw) < 0.08
    # the search alone lands within one candidate spacing (0.2 rad in yaw, 0.15 in pitch) of the truth
    pitch_offset, yaw_offset = inversion.estimate_pose(generator, target)
    assert abs(yaw_offset - true_yaw) < 0.1 and abs(pitch_offset - true_pitch) < 0.15, (pitch_offset, yaw_offset)


def test_styles_of_the_mapping_render_like_z(tiny):
    z = latent_for_seed(1, tiny.z_dim)
    pitch, yaw = frontal(0.1, -0.2)
    with torch.no_grad():
        by_z = tiny.render(z, pitch, yaw, truncation_psi=0.7)
        by_styles = tiny.render(None, pitch, yaw, styles=tiny.mapping(z, 0.7))
    torch.testing.assert_close(by_styles, by_z, rtol=0, atol=0)


def write_png(path, image):
    Image.fromarray(image).save(path)
    return path


def test_invert_then_render_the_latent_in_inference(tiny_ckpt, tmp_path):
    from generators import load_generator

    generator = load_generator(tiny_ckpt)
    pitch, yaw = frontal(0.0, 0.1)
    with torch.no_grad():
        target = generator.render(latent_for_seed(2, generator.z_dim), pitch, yaw, lock_view_dependence=True)
    photo = write_png(tmp_path / 'photo.png', to_uint8(target)[0])
    out = tmp_path / 'inv'
    invert.main(['--image', str(photo), '--pose', '0,0.1', '--ckpt', str(tiny_ckpt), '--steps', '30',
                 '--mesh_resolution', '16', '--output_dir', str(out), '--device', 'cpu'])
    for name in ('fit.png', 'latent.pt', 'grid_latent.png', 'grid_latent_depth.png', 'grid_latent_depth.json',
                 'mesh_latent.ply'):
        assert (out / name).stat().st_size > 0, name
    styles, record = inversion.load_latent(str(out / 'latent.pt'), generator, str(tiny_ckpt))
    assert record['pose_offset'] == [0.0, 0.1]
    rendered = tmp_path / 'rendered'
    inference.main(['--ckpt', str(tiny_ckpt), '--latent', str(out / 'latent.pt'), '--type', 'multiview1x3',
                    '--no_watermark', '--output_dir', str(rendered), '--device', 'cpu'])
    grid = np.asarray(Image.open(rendered / 'grid_latent.png'))
    with torch.no_grad():
        views = [generator.render(None, *frontal(0.0, offset), lock_view_dependence=True, styles=styles)
                 for offset in (-0.3, 0.0, 0.3)]
    expected = np.concatenate([to_uint8(view)[0] for view in views], axis=1)
    np.testing.assert_array_equal(grid, expected)
    import extract_mesh
    extract_mesh.main(['--ckpt', str(tiny_ckpt), '--latent', str(out / 'latent.pt'), '--resolution', '16',
                       '--output_dir', str(tmp_path / 'meshes'), '--device', 'cpu'])
    assert (tmp_path / 'meshes' / 'mesh_latent.ply').read_bytes() == (out / 'mesh_latent.ply').read_bytes()


def test_invert_without_a_pose_estimates_the_camera(tiny_ckpt, tmp_path, capsys):
    from generators import load_generator

    generator = load_generator(tiny_ckpt)
    with torch.no_grad():
        target = generator.render(latent_for_seed(2, generator.z_dim), *frontal(0.0, 0.2),
                                  lock_view_dependence=True)
    photo = write_png(tmp_path / 'photo.png', to_uint8(target)[0])
    out = tmp_path / 'inv'
    invert.main(['--image', str(photo), '--ckpt', str(tiny_ckpt), '--steps', '5', '--no_mesh',
                 '--finetune_steps', '3', '--output_dir', str(out), '--device', 'cpu'])
    assert 'camera (pitch,yaw offsets, rad): estimated' in capsys.readouterr().out
    # the latent belongs to the fine-tuned generator, which inference.py renders it with
    tuned = load_generator(str(out / 'generator_finetuned.pt'))
    styles, record = inversion.load_latent(str(out / 'latent.pt'), tuned, str(out / 'generator_finetuned.pt'))
    assert record['checkpoint'] == str(out / 'generator_finetuned.pt')
    assert not all(torch.equal(a, b) for a, b in zip(tuned.parameters(), generator.parameters()))
    inference.main(['--ckpt', str(out / 'generator_finetuned.pt'), '--latent', str(out / 'latent.pt'),
                    '--type', 'multiview1x3', '--no_watermark', '--output_dir', str(tmp_path / 'views'),
                    '--device', 'cpu'])
    with torch.no_grad():
        frontal_view = tuned.render(None, *frontal(0.0, 0.0), lock_view_dependence=True, styles=styles)
    grid = np.asarray(Image.open(tmp_path / 'views' / 'grid_latent.png'))
    np.testing.assert_array_equal(grid[:, grid.shape[1] // 3:2 * grid.shape[1] // 3], to_uint8(frontal_view)[0])
    _, record = inversion.load_latent(str(out / 'latent.pt'), generator, str(tiny_ckpt))
    pitch_offset, yaw_offset = record['pose_offset']
    assert abs(pitch_offset) < 1 and abs(yaw_offset) < 1 and record['pose_offset'] != [0.0, 0.0]


def test_landmarks_crop_and_pose_a_raw_photo_as_preprocessing_does(tiny_ckpt, tmp_path):
    import datasets
    import preprocess_dataset
    from test_preprocess import euler_rotation, make_face

    raw = tmp_path / 'raw'
    (raw / 'lm5p').mkdir(parents=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    make_face(raw, 'me', euler_rotation(0.1, -0.25, 0.05), pose=None, image=photo)
    assert preprocess_dataset.main(['--raw_dataset_path', str(raw), '--output_dir', str(tmp_path / 'prep'),
                                    '--cate', 'faces', '--workers', '1']) == 0
    aligned, (pitch_offset, yaw_offset) = inversion.align_photo(str(raw / 'me.png'), str(raw / 'lm5p' / 'me.txt'))
    # the same crop, byte for byte, and the camera label the FFHQ reader gives it
    np.testing.assert_array_equal(np.asarray(aligned), np.asarray(Image.open(tmp_path / 'prep' / 'me.png')))
    reader = datasets.FFHQ.__new__(datasets.FFHQ)
    pitch, yaw = reader.read_pose(str(tmp_path / 'prep' / 'poses' / 'me.mat'))
    assert (pitch_offset, yaw_offset) == pytest.approx((pitch - math.pi / 2, yaw - math.pi / 2), abs=1e-12)
    out = tmp_path / 'inv'
    invert.main(['--image', str(raw / 'me.png'), '--landmarks', str(raw / 'lm5p' / 'me.txt'), '--ckpt',
                 str(tiny_ckpt), '--steps', '3', '--no_mesh', '--output_dir', str(out), '--device', 'cpu'])
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'aligned.png')), np.asarray(aligned))
    with pytest.raises(SystemExit, match='pass one of them'):
        invert.main(['--image', str(raw / 'me.png'), '--landmarks', str(raw / 'lm5p' / 'me.txt'), '--pose', '0,0',
                     '--ckpt', str(tiny_ckpt), '--output_dir', str(tmp_path / 'both'), '--device', 'cpu'])
    assert not (tmp_path / 'both').exists()
    (raw / 'four.txt').write_text('1 2\n3 4\n5 6\n7 8\n')
    with pytest.raises(SystemExit, match='expected 5 landmarks'):
        invert.main(['--image', str(raw / 'me.png'), '--landmarks', str(raw / 'four.txt'), '--ckpt', str(tiny_ckpt),
                     '--output_dir', str(tmp_path / 'four'), '--device', 'cpu'])
    assert not (tmp_path / 'four').exists()


def test_gramhd_inversion_fits_film_and_sr_styles_and_renders_in_inference(tmp_path, capsys):
    from conftest import untrained_checkpoint
    from generators import load_generator

    ckpt = str(untrained_checkpoint('TINY_GRAMHD', tmp_path / 'tiny_hd.pt'))
    generator = load_generator(ckpt)
    with torch.no_grad():  # the untrained background SR's last conv is zero: make the SR styles matter
        for parameter in generator.super_resolution_bg.conv_last.parameters():
            parameter.normal_(0, 0.05)
    pitch, yaw = frontal(0.0, 0.15)
    z = latent_for_seed(6, generator.z_dim)
    with torch.no_grad():
        target = generator.render(z, pitch, yaw, lock_view_dependence=True)
        by_parameters = generator.render(None, pitch, yaw, lock_view_dependence=True,
                                         styles=generator.latent_parameters(z))
    torch.testing.assert_close(by_parameters, target, rtol=0, atol=0)
    styles, history, _ = inversion.fit_latent(generator, target, pitch, yaw, steps=40, lr=0.05)
    assert len(styles) == 3 and styles[2].shape == generator.latent_center('cpu')[2].shape
    assert inversion.psnr_from_mse(history[-1]) > inversion.psnr_from_mse(history[0]) + 3
    # the CLI: the latent file carries the SR styles and inference.py renders HR and LR grids from it
    photo = write_png(tmp_path / 'photo.png', to_uint8(target)[0])
    out = tmp_path / 'inv'
    invert.main(['--image', str(photo), '--pose', '0,0.15', '--ckpt', ckpt, '--steps', '5', '--no_mesh',
                 '--output_dir', str(out), '--device', 'cpu'])
    loaded, _ = inversion.load_latent(str(out / 'latent.pt'), load_generator(ckpt), ckpt)
    assert len(loaded) == 3
    inference.main(['--ckpt', ckpt, '--latent', str(out / 'latent.pt'), '--type', 'multiview1x3',
                    '--output_dir', str(tmp_path / 'views'), '--device', 'cpu'])
    assert (tmp_path / 'views' / 'grid_latent.png').is_file() and (tmp_path / 'views' / 'grid_latent_lr.png').is_file()
    # a GRAM latent does not go into a GRAM-HD model (nor the other way)
    gram_latent = tmp_path / 'gram.pt'
    inversion.save_latent(str(gram_latent), styles[:2], ckpt, 0, 0, 'x.png', [1.0])
    with pytest.raises(SystemExit, match='fitted with a GRAM model'):
        inference.main(['--ckpt', ckpt, '--latent', str(gram_latent), '--output_dir', str(tmp_path / 'no'),
                        '--device', 'cpu'])
    assert not (tmp_path / 'no').exists()


@pytest.mark.parametrize('case, fragment', [
    ('missing', 'does not exist'), ('not_an_image', 'cannot read --image'), ('not_square', 'expected a square'),
    ('pose_range', 'outside the model\'s camera range'), ('pose_text', 'expected PITCH,YAW'),
])
def test_bad_input_is_one_line_and_writes_nothing(case, fragment, tiny_ckpt, tmp_path, capsys):
    photo = tmp_path / 'photo.png'
    Image.new('RGB', (32, 32), (120, 80, 60)).save(photo)
    pose = '0,0'
    if case == 'missing':
        photo = tmp_path / 'missing.png'
    elif case == 'not_an_image':
        photo.write_text('not an image')
    elif case == 'not_square':
        Image.new('RGB', (40, 32)).save(photo)
    elif case == 'pose_range':
        pose = '0,3'
    elif case == 'pose_text':
        pose = 'frontal'
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as stop:
        invert.main(['--image', str(photo), '--pose', pose, '--ckpt', str(tiny_ckpt), '--output_dir', str(out),
                     '--steps', '2', '--device', 'cpu'])
    message = str(stop.value.code) if stop.value.code != 2 else capsys.readouterr().err.strip().splitlines()[-1]
    assert fragment in message and '\n' not in message, message
    assert not out.exists()


def test_a_latent_of_another_width_is_refused(tiny_ckpt, tmp_path):
    path = tmp_path / 'wide.pt'
    inversion.save_latent(str(path), (torch.zeros(1, 7), torch.zeros(1, 7)), str(tiny_ckpt), 0, 0, 'x.png', [1.0])
    with pytest.raises(SystemExit) as stop:
        inference.main(['--ckpt', str(tiny_ckpt), '--latent', str(path), '--output_dir', str(tmp_path / 'o'),
                        '--device', 'cpu'])
    assert 'holds 7 FiLM parameters' in str(stop.value.code)
    assert not (tmp_path / 'o').exists()


def test_inversion_metric_scores_novel_views_against_the_truth(tmp_path, capsys):
    import json

    import eval as eval_cli
    from conftest import REPO_ROOT

    output = tmp_path / 'inversion.json'
    eval_cli.main(['--ckpt', str(REPO_ROOT / 'ckpts' / 'synthetic_heads.pt'), '--metrics', 'inversion',
                   '--inversion_num', '1', '--inversion_steps', '40', '--inversion_ceiling_steps', '3',
                   '--inversion_estimate_pose', '--inversion_mirror', '0.5', '--inversion_finetune_steps', '5',
                   '--tmp_dir', str(tmp_path), '--output_json', str(output), '--quiet', '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert 'side input (yaw +0.3), far side' in printed and 'side input, pose estimated' in printed
    result = json.loads(output.read_text())['inversion']
    mean = result['mean']
    assert result['protocol']['estimate_pose'] and 'mirror view weight 0.5' in result['protocol']['fit']
    # the camera search lands within a candidate spacing of the true camera, and the fit still carries over
    assert mean['side_estimated']['pose_error'] < 0.2 and mean['frontal_estimated']['pose_error'] < 0.2
    assert mean['side_estimated']['psnr'] > mean['floor_far']['psnr'] + 3
    # five fine-tuning steps move the input view past the latent fit's
    assert 'frontal input, fine-tuned' in printed and result['protocol']['finetune_steps'] == 5
    assert mean['frontal_finetuned']['input_psnr'] > mean['frontal']['input_psnr']
    # the fit explains its input and carries over to views it never saw; the mean latent does neither
    assert mean['frontal']['input_psnr'] > mean['floor']['psnr'] + 10
    assert mean['frontal']['psnr'] > mean['floor']['psnr'] + 5
    assert mean['side']['psnr'] > mean['floor_far']['psnr'] + 3
    assert 0 < mean['frontal']['depth_l1'] < 0.05


def test_inversion_metric_refuses_gramhd(tmp_path):
    import eval as eval_cli
    from conftest import untrained_checkpoint

    path = untrained_checkpoint('TINY_GRAMHD', tmp_path / 'tiny_hd.pt')
    with pytest.raises(SystemExit) as stop:
        eval_cli.main(['--ckpt', str(path), '--metrics', 'inversion', '--inversion_num', '1',
                       '--tmp_dir', str(tmp_path / 'cache'), '--quiet', '--device', 'cpu'])
    assert 'inversion' in str(stop.value.code) and 'GRAM-HD' in str(stop.value.code)
    assert not (tmp_path / 'cache').exists()


def test_the_viewer_shows_and_exports_an_inverted_latent(tmp_path):
    viewer = pytest.importorskip('viewer')
    pytest.importorskip('viser')
    from conftest import REPO_ROOT
    from generators import load_generator
    from rendering import views

    generator = load_generator(REPO_ROOT / 'ckpts' / 'synthetic_heads.pt')
    styles = generator.mapping(latent_for_seed(7, generator.z_dim), 0.5)
    page = viewer.Viewer(generator, 'cpu', port=0, img_size=16, preview_size=8, output_dir=str(tmp_path / 'out'),
                         verbose=False, styles=styles)
    try:
        page.seed.value = 3  # the seed does not matter: the latent is shown
        view = page.current_view(full=True)
        image, _ = page.renderer.render(view)
        pitch, yaw = torch.tensor([view.pitch], dtype=torch.float64), torch.tensor([view.yaw], dtype=torch.float64)
        with torch.no_grad(), views.camera_fov(generator, view.fov):
            expected = generator.render(latent_for_seed(7, generator.z_dim), pitch, yaw, img_size=16,
                                        truncation_psi=0.5, lock_view_dependence=True)
        np.testing.assert_array_equal(image, to_uint8(expected)[0])
        assert 'view_latent_rgb' in page.export_png()
        page.mesh_resolution.value, page.mesh_level.value = 16, 0.5
        page.export_mesh()
        assert (tmp_path / 'out' / 'mesh_latent.ply').stat().st_size > 0
    finally:
        page.stop()
