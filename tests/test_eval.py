"""eval.py / fid_evaluation.py / evaluation.*: FID-KID-IS through torch-fidelity, caches, bad inputs, and
the reprojection consistency metric.

There is no internet here, so the Inception weights are random, built in the exact format torch-fidelity's
inception-v3-compat extractor loads. Numbers are then meaningless as quality scores but exact as checks
of the pipeline (self-FID, agreement with an independent NumPy/SciPy FID on the same features, caching).
Inception runs at 299x299 on the CPU, so every set holds only a handful of tiny images.
"""
import json
import math
import os
import time
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

import configs
import eval as eval_cli
import fid_evaluation
import inference
from evaluation import consistency, fidelity
from generators import build_generator, camera

NUM_IMAGES = 4


# ---------------------------------------------------------------------------------------------------------
# Fixtures


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def build_random_inception_weights(path, seed=0):
    """Random inception-v3-compat weights, saved as the state_dict torch-fidelity loads.

    The extractor's constructor always loads weights (a download when no path is given). With the
    downloader patched to return nothing and load_state_dict skipped, the module keeps PyTorch's random
    init, and its state_dict has exactly the keys and shapes of the real file. Convolutions are then
    re-drawn with Kaiming init: with PyTorch's default init the activations shrink layer after layer and the
    2048-d features of different images become nearly identical, so FIDs would drown in rounding.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as module

    class Unloaded(module.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    torch.manual_seed(seed)
    with mock.patch.object(module, 'load_state_dict_from_url', return_value=None):
        extractor = Unloaded('inception-v3-compat', ['2048'])
    for layer in extractor.modules():
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity='relu')
    torch.nn.init.normal_(extractor.fc.weight, std=0.05)  # logits that differ between images (IS != 1)
    torch.save(extractor.state_dict(), path)
    return path


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    return str(build_random_inception_weights(tmp_path_factory.mktemp('inception') / 'inception_random.pth'))


def pattern_image(rng, size, kind):
    """Small structured RGB images; kind selects one of two visibly different families."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        if kind == 'blobs':
            cx, cy, r = rng.uniform(0.2, 0.8, 3)
            channels.append(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.05 + 0.1 * r)))
        else:
            frequency, phase = rng.uniform(4, 12), rng.uniform(0, 2 * math.pi)
            channels.append(0.5 + 0.5 * np.sin(2 * math.pi * frequency * (x + 0.3 * y) + phase))
    return (np.stack(channels, -1) * 255).astype(np.uint8)


def write_images(folder, count, kind, size=(16, 16), seed=0, suffix='.png'):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(pattern_image(rng, size, kind)).save(folder / f'{index:05d}{suffix}')
    return folder


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('images')
    return {
        'a': write_images(root / 'a', NUM_IMAGES, 'blobs', seed=1),
        # Real images of another size and aspect: exercises the centre crop + LANCZOS resize to 16x16.
        'b': write_images(root / 'b', NUM_IMAGES, 'stripes', size=(20, 26), seed=2),
    }


@pytest.fixture(scope='module')
def shared_cache(tmp_path_factory):
    """One feature cache for the module: folders used the same way in several tests are extracted once
    (each test still passes on its own, it then computes the features itself)."""
    return tmp_path_factory.mktemp('shared_cache')


def run_eval(args, weights, tmp_dir, extra=()):
    argv = [str(a) for a in args] + ['--feature_extractor_weights', weights, '--tmp_dir', str(tmp_dir),
                                     '--device', 'cpu', '--num_workers', '0', '--quiet', *extra]
    return eval_cli.run(argv)


def load_json(path):
    with open(path) as stream:
        return json.load(stream)


# ---------------------------------------------------------------------------------------------------------
# FID / KID / IS


def test_folder_against_itself_scores_zero_and_reports_the_protocol(folders, weights, shared_cache, tmp_path,
                                                                     capsys):
    output = tmp_path / 'result.json'
    run_eval(['--real_images_dir', folders['a'], '--fake_images_dir', folders['a'], '--output_json', output,
              '--use_fake_images_cache', '--use_real_images_cache'], weights, shared_cache)
    captured = capsys.readouterr()
    result = load_json(output)
    assert abs(result['fid']) < 1e-9
    assert result['kid_x100'] == pytest.approx(100 * result['kid'])
    assert result['is_mean'] > 0 and result['is_std'] >= 0
    protocol = result['protocol']
    for key in ('num_real', 'num_fake', 'image_size', 'resize_method', 'truncation', 'pose_sampling',
                'feature_extractor', 'library'):
        assert key in protocol
    assert protocol['num_real'] == protocol['num_fake'] == NUM_IMAGES
    assert protocol['image_size'] == 16
    assert 'LANCZOS' in protocol['resize_method']['real']
    assert protocol['library'].startswith('torch-fidelity ')
    assert protocol['feature_extractor']['weights']['sha256'] == fidelity.file_sha256(weights)
    assert protocol['kid']['subset_size'] == NUM_IMAGES  # shrunk from 1000, not a crash
    assert 'subset size shrinks' in captured.err and 'IS: only' in captured.err
    assert 'FID:' in captured.out and 'protocol:' in captured.out


def independent_fid(features_1, features_2):
    """The textbook formula with scipy.linalg.sqrtm, in an orthonormal basis of the span of the centred
    features: both covariances live there, so tr sqrtm(S1 S2) is unchanged, and sqrtm runs on a k x k
    matrix (k < 2 * NUM_IMAGES) instead of 2048 x 2048."""
    f1, f2 = features_1.astype(np.float64), features_2.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    basis, _ = np.linalg.qr(np.concatenate([f1 - mu1, f2 - mu2]).T)
    s1 = np.cov((f1 - mu1) @ basis, rowvar=False)
    s2 = np.cov((f2 - mu2) @ basis, rowvar=False)
    assert np.isclose(np.trace(s1), np.trace(np.cov(f1, rowvar=False)))  # nothing lost in the projection
    cross = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def extract_features(weights, images):
    # The extractor eval.py built (kept per process): torch-fidelity's class loaded from the same file.
    extractor = fidelity.create_extractor(fidelity.weights_identity(weights), 'cpu')
    assert type(extractor).__module__ == 'torch_fidelity.feature_extractor_inceptionv3'
    with torch.no_grad():
        return extractor(images)[0].numpy()


def cached(cache, name, layer='2048'):
    return torch.load(fidelity.feature_cache_file(str(cache), name), weights_only=True)['features'][layer]


@pytest.mark.parametrize('count', [6, 40])
# sqrtm of the singular S1 S2 of a small set warns about conditioning; its value is checked against two others.
@pytest.mark.filterwarnings('ignore::scipy.linalg.LinAlgWarning')
def test_frechet_distance_equals_torch_fidelity(count):
    # 16-d features keep torch-fidelity's general eigen-solver fast; 6 and 40 samples take both branches
    # (nuclear norm for n1 * n2 <= d^2, symmetric eigvalsh otherwise).
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    generator = torch.Generator().manual_seed(count)
    features_1 = torch.randn(count, 16, generator=generator, dtype=torch.float64)
    features_2 = 0.7 * torch.randn(count + 3, 16, generator=generator, dtype=torch.float64) + 0.2
    reference = fid_statistics_to_metric(fid_features_to_statistics(features_1),
                                         fid_features_to_statistics(features_2), False)['frechet_inception_distance']
    # With fewer samples than dimensions the covariances are singular and torch-fidelity's eigvals returns
    # ~1e-16 noise for the null space, whose square roots add ~1e-8 each: agreement to 1e-6 there, to 1e-9
    # when the covariances have full rank.
    tolerance = 1e-6 if count <= 16 else 1e-9
    assert fidelity.frechet_distance(features_1, features_2) == pytest.approx(reference, rel=tolerance)
    assert fidelity.frechet_distance(features_1, features_2) == pytest.approx(
        independent_fid(features_1.numpy(), features_2.numpy()), rel=1e-9)
    assert abs(fidelity.frechet_distance(features_1, features_1)) < 1e-9


def test_fid_matches_numpy_scipy_on_the_same_features(folders, weights, shared_cache):
    cache = shared_cache
    result = run_eval(['--real_images_dir', folders['b'], '--fake_images_dir', folders['a'], '--metrics', 'fid',
                       '--use_fake_images_cache'], weights, cache)
    protocol = result['protocol']
    fake = cached(cache, protocol['fake_images']['cache_name'])
    real = cached(cache, protocol['real_images']['cache_name'])
    assert fake.shape == real.shape == (NUM_IMAGES, 2048)
    expected = independent_fid(fake.numpy(), real.numpy())
    assert expected > 1e-3  # different folders: clearly non-zero
    assert result['fid'] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # The cached real features are those of the centre-cropped, LANCZOS-resized images.
    prepared = []
    for path in sorted(folders['b'].glob('*.png')):
        image = Image.open(path).convert('RGB')
        side = min(image.size)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((16, 16), Image.LANCZOS)
        prepared.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    np.testing.assert_allclose(real.numpy(), extract_features(weights, torch.stack(prepared)), rtol=1e-5, atol=1e-6)
    assert os.path.isfile(result['output_json'])


def test_cache_is_reused_only_for_unchanged_content(folders, weights, shared_cache, tmp_path):
    real = tmp_path / 'real'
    write_images(real, 2, 'stripes', seed=3)  # the smallest valid set: Inception runs on the CPU here
    cache = shared_cache
    args = ['--real_images_dir', real, '--fake_images_dir', folders['a'], '--metrics', 'fid',
            '--use_real_images_cache', '--use_fake_images_cache']
    first = run_eval(args, weights, cache)
    name = first['protocol']['real_images']['cache_name']
    assert first['protocol']['real_images']['features'] == 'computed'
    features = cached(cache, name)

    second = run_eval(args, weights, cache)  # same content: the cache is read
    assert second['protocol']['real_images']['cache_name'] == name
    assert second['protocol']['real_images']['features'] == 'reused'
    assert second['protocol']['fake_images']['features'] == 'reused'
    assert second['fid'] == first['fid']

    time.sleep(0.01)
    Image.fromarray(pattern_image(np.random.default_rng(99), (16, 16), 'blobs')).save(real / '00001.png')
    third = run_eval(args, weights, cache)  # one changed file: new key, fresh features
    assert third['protocol']['real_images']['cache_name'] != name
    assert third['protocol']['real_images']['features'] == 'computed'
    assert not torch.equal(cached(cache, third['protocol']['real_images']['cache_name']), features)
    assert abs(third['fid'] - first['fid']) > 1e-6 * max(1.0, abs(first['fid']))

    # Without --use_real_images_cache the features are recomputed even when a matching cache exists.
    fourth = run_eval(args[:-2] + ['--use_fake_images_cache'], weights, cache)
    assert fourth['protocol']['real_images']['cache_name'] == third['protocol']['real_images']['cache_name']
    assert fourth['protocol']['real_images']['features'] == 'computed'
    assert fourth['protocol']['fake_images']['features'] == 'reused'
    assert fourth['fid'] == pytest.approx(third['fid'], rel=1e-9)


def test_a_cache_entry_with_other_fields_is_not_trusted(folders, tmp_path):
    # The name hashes the fields; a file under that name holding other fields (a hash-prefix collision, or a
    # hand-copied file) is recomputed. Checked without Inception: a stub extractor counts the calls.
    image_set = fidelity.fake_image_set(str(folders['a']), cache_name='a', reuse_cache=True)
    key = {'image_size': 16}
    calls = []

    def stub(batch):
        calls.append(len(batch))
        return torch.zeros(len(batch), 2048), torch.zeros(len(batch), 1008)

    def run():
        return fidelity.cached_features(image_set, 16, key, lambda: stub, 'cpu', 8, 0, str(tmp_path), False)[2]

    assert run() == 'computed' and run() == 'reused'
    path = fidelity.feature_cache_file(str(tmp_path), image_set.cache_name(key))
    payload = torch.load(path, weights_only=True)
    payload['fields']['fingerprint'] = 'another folder'
    torch.save(payload, path)
    assert run() == 'computed' and calls == [NUM_IMAGES, NUM_IMAGES]


def test_subset_selection_is_seeded_and_recorded(folders, weights, shared_cache):
    result = run_eval(['--real_images_dir', folders['b'], '--fake_images_dir', folders['a'], '--metrics', 'kid',
                       '--num_real', 2, '--num_fake', NUM_IMAGES, '--use_fake_images_cache'], weights, shared_cache)
    protocol = result['protocol']
    assert protocol['num_real'] == 2 and protocol['num_fake'] == NUM_IMAGES
    assert protocol['kid']['subset_size'] == 2
    assert 'default_rng(0)' in protocol['real_images']['selection']
    assert 'fid' not in result and 'is_mean' not in result and 'kid_x100' in result


def expect_error(argv, weights, tmp_path, *fragments):
    with pytest.raises(SystemExit) as excinfo:
        run_eval(argv, weights, tmp_path / 'cache')
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_inputs_give_clear_errors(folders, weights, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('not an image')
    expect_error(['--real_images_dir', folders['b'], '--fake_images_dir', empty], weights, tmp_path,
                 'no fake images (*.png)', str(empty), 'notes.txt')
    expect_error(['--real_images_dir', empty, '--fake_images_dir', folders['a']], weights, tmp_path,
                 'no real images', str(empty))
    expect_error(['--real_images_dir', tmp_path / 'missing', '--fake_images_dir', folders['a']], weights, tmp_path,
                 'real images folder not found', 'missing')

    mixed = write_images(tmp_path / 'mixed', 2, 'blobs')
    Image.fromarray(pattern_image(np.random.default_rng(0), (32, 32), 'blobs')).save(mixed / 'zz_big.png')
    expect_error(['--real_images_dir', folders['b'], '--fake_images_dir', mixed], weights, tmp_path,
                 'mixed sizes', 'zz_big.png', '32x32', '16x16')
    expect_error(['--real_images_dir', folders['b'], '--fake_images_dir', folders['a'], '--image_size', 32],
                 weights, tmp_path, '--image_size is 32', '16x16', '00000.png')
    expect_error(['--fake_images_dir', folders['a'], '--metrics', 'fid'], weights, tmp_path, '--real_images_dir')
    expect_error(['--real_images_dir', folders['b'], '--fake_images_dir', folders['a'], '--metrics', 'fid,psnr'],
                 weights, tmp_path, "unknown metric 'psnr'")
    expect_error(['--real_images_dir', folders['b'], '--fake_images_dir', folders['a'], '--num_real', 50],
                 weights, tmp_path, '--num_real 50', f'only {NUM_IMAGES} real')
    single = write_images(tmp_path / 'single', 1, 'blobs')
    expect_error(['--real_images_dir', folders['b'], '--fake_images_dir', single], weights, tmp_path,
                 'at least 2 fake images')

    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit, match='not a readable PyTorch state_dict'):
        eval_cli.run(['--real_images_dir', str(folders['b']), '--fake_images_dir', str(folders['a']),
                      '--feature_extractor_weights', str(broken), '--tmp_dir', str(tmp_path / 'cache'), '--quiet'])
    wrong = tmp_path / 'wrong.pth'
    torch.save({'fc.weight': torch.zeros(10, 10)}, wrong)
    with pytest.raises(SystemExit, match='not an inception-v3-compat state_dict'):
        eval_cli.run(['--real_images_dir', str(folders['b']), '--fake_images_dir', str(folders['a']),
                      '--feature_extractor_weights', str(wrong), '--tmp_dir', str(tmp_path / 'cache'), '--quiet'])

    corrupt = write_images(tmp_path / 'corrupt_real', 2, 'stripes')
    (corrupt / 'bad.jpg').write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(fidelity.EvaluationError, match='cannot read real image .*bad.jpg'):
        fidelity.RealImages([str(corrupt / 'bad.jpg')], 16)[0]


def test_fakes_rendered_from_a_checkpoint_equal_inference_rand(tiny_ckpt, weights, tmp_path):
    cache = tmp_path / 'cache'
    args = ['--ckpt', tiny_ckpt, '--num_fake', 2, '--metrics', 'is', '--use_fake_images_cache']
    result = run_eval(args, weights, cache)
    protocol = result['protocol']
    assert protocol['num_fake'] == 2 and protocol['num_real'] is None
    assert protocol['truncation'] == 1.0 and 'prior' in protocol['pose_sampling']
    assert protocol['fake_images']['checkpoint']['sha256'] == fidelity.file_sha256(tiny_ckpt)
    rendered = protocol['fake_images']['source']
    inference.main(['--ckpt', str(tiny_ckpt), '--type', 'rand', '--seeds', '0-1', '--truncation', '1.0',
                    '--output_dir', str(tmp_path / 'rand'), '--device', 'cpu'])
    for index in range(2):
        ours = np.asarray(Image.open(os.path.join(rendered, f'{index:05d}.png')))
        theirs = np.asarray(Image.open(tmp_path / 'rand' / f'{index:05d}.png'))
        assert np.array_equal(ours, theirs)
    stamp = os.stat(os.path.join(rendered, '00000.png')).st_mtime_ns
    again = run_eval(args, weights, cache)  # same checkpoint and protocol: renders and features reused
    assert os.stat(os.path.join(rendered, '00000.png')).st_mtime_ns == stamp
    assert again['is_mean'] == pytest.approx(result['is_mean'], rel=1e-12)
    expect_error(['--ckpt', tiny_ckpt, '--metrics', 'is', '--image_size', 32], weights, tmp_path,
                 '--image_size 32', 'renders 16x16')


def test_fid_evaluation_cli_with_gram_flags(tiny_ckpt, folders, weights, shared_cache, tmp_path):
    output = tmp_path / 'fid_out'
    output.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(output / '99999.png')  # stale file of an older run
    fid_evaluation.main(['--generator_file', str(tiny_ckpt), '--config', 'TINY_GRAM', '--output_dir', str(output),
                         '--real_images_dir', str(folders['a']), '--num_real_images', str(NUM_IMAGES),
                         '--num_images', '2', '--feature_extractor_weights', weights, '--tmp_dir', str(shared_cache),
                         '--device', 'cpu', '--num_workers', '1', '--quiet'])
    assert sorted(p.name for p in output.glob('0*.png')) == ['00000.png', '00001.png']
    result = load_json(output / 'metrics.json')
    assert result['protocol']['num_fake'] == 2 and result['protocol']['num_real'] == NUM_IMAGES  # stale file ignored
    assert {'fid', 'kid', 'kid_x100', 'is_mean', 'is_std'} <= set(result)
    assert 'fid' in (output / 'metrics.txt').read_text()
    with pytest.raises(SystemExit, match='--num_real_images 40'):
        fid_evaluation.main(['--generator_file', str(tiny_ckpt), '--output_dir', str(tmp_path / 'x'),
                             '--real_images_dir', str(folders['a']), '--num_real_images', '40', '--num_images', '2',
                             '--feature_extractor_weights', weights, '--tmp_dir', str(tmp_path / 'cache'),
                             '--device', 'cpu', '--quiet'])


# ---------------------------------------------------------------------------------------------------------
# 3D consistency


def test_unproject_and_project_are_inverse():
    origins = camera.origins_from_angles(torch.tensor([1.4, 1.7]), torch.tensor([1.3, 1.9]))
    depth = torch.rand(2, 1, 8, 8) * 0.2 + 0.9
    points = camera.unproject_depth(origins, depth, 12)
    _, ray_origins, ray_directions = camera.world_rays(origins, 8, 12)
    assert torch.allclose(points.reshape(2, -1, 3), ray_origins + ray_directions * depth.reshape(2, -1, 1), atol=1e-6)
    ndc, distance, in_front = camera.project_points(origins, points.reshape(2, -1, 3), 12)
    grid = torch.linspace(-1, 1, 8)
    assert in_front.all()
    assert torch.allclose(distance, depth.reshape(2, -1), atol=1e-6)
    assert torch.allclose(ndc[0, :8, 0], grid, atol=1e-5)        # first row: x runs left to right
    assert torch.allclose(ndc[0, ::8, 1], grid.flip(0), atol=1e-5)  # first column: y runs top (+1) down


def textured_scene(pitch, yaw, size, fov=12):
    """Ray-traced views of a textured sphere in front of a textured plane: exact images and depths."""
    origins = camera.origins_from_angles(pitch, yaw)
    _, ray_origins, ray_directions = camera.world_rays(origins, size, fov)
    ray_origins, ray_directions = ray_origins.double(), ray_directions.double()
    t_plane = (-0.12 - ray_origins[..., 2]) / ray_directions[..., 2]
    centre = torch.tensor([0.01, 0.0, -0.02], dtype=torch.float64)
    offset = ray_origins - centre
    b = (offset * ray_directions).sum(-1)
    discriminant = b * b - ((offset * offset).sum(-1) - 0.06 ** 2)
    t_sphere = -b - torch.sqrt(discriminant.clamp_min(0))
    t = torch.where(discriminant > 0, torch.minimum(t_sphere, t_plane), t_plane)
    x, y, z = (ray_origins + ray_directions * t.unsqueeze(-1)).unbind(-1)
    colour = torch.stack([0.5 + 0.25 * torch.sin(45 * x + 10 * z) + 0.2 * torch.cos(60 * y),
                          0.5 + 0.3 * torch.sin(35 * y - 30 * x + 1.0),
                          0.5 + 0.3 * torch.cos(50 * z + 25 * x) * torch.sin(20 * y)], -1).clamp(0, 1)
    images = (colour * 2 - 1).reshape(-1, size, size, 3).permute(0, 3, 1, 2)
    return images, t.reshape(-1, 1, size, size)


def degraded(images, seed=0):
    """(per-view 2D shift, per-view noise) versions of a sweep: content that no longer follows the geometry."""
    shifted = torch.stack([torch.roll(view, shifts=(index % 3) - 1, dims=-1) for index, view in enumerate(images)])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(images.dtype)
    return shifted, images + 0.1 * noise


def test_consistency_of_an_exact_scene_and_its_2d_degradations():
    prior = dict(h_mean=math.pi / 2, v_mean=math.pi / 2, h_stddev=0.3, v_stddev=0.155, mode='gaussian')
    pitch, yaw = consistency.sweep_angles(prior, 7, 0.3)
    images, depths = textured_scene(pitch, yaw, 32)
    exact = consistency.reprojection_scores(images, depths, pitch, yaw, 12)
    assert exact['psnr'] > 45 and exact['l1'] < 0.005 and 0.5 < exact['covisible'] < 1
    shifted, noisy = degraded(images)
    for bad in (shifted, noisy):
        scores = consistency.reprojection_scores(bad, depths, pitch, yaw, 12)
        assert scores['psnr'] < exact['psnr'] - 15 and scores['l1'] > 5 * exact['l1']
    # Depth of another resolution (GRAM-HD's low-resolution manifolds) is resampled to the image grid.
    _, coarse_depths = textured_scene(pitch, yaw, 16)
    assert consistency.reprojection_scores(images, coarse_depths, pitch, yaw, 12)['psnr'] > 25


def structured_gram(img_size=32):
    """A TINY_GRAM whose renders have structure.

    At random init GRAM renders near-grey, semi-transparent layers, on which any warp (or any shift) looks
    "consistent". Three edits make the test meaningful without training: larger colour heads (colours
    that vary over 3D space), a smaller first-layer frequency (texture band-limited at 32x32, so bilinear
    resampling is accurate) and large sigma biases (an opaque first manifold, so the rendered depth is
    a real surface). Geometry and rendering are GRAM's own code paths.
    """
    config = configs.get_config('TINY_GRAM')
    config['generator']['kwargs']['img_size'] = img_size
    torch.manual_seed(0)
    generator = build_generator(config).eval()
    radiance = generator.representation.rf_network
    with torch.no_grad():
        radiance.network[0].layer.weight.mul_(0.05)
        for head in radiance.output_color:
            head.weight.mul_(30)
        for head in radiance.output_sigma:
            head.bias.fill_(20.0)
    return generator


def test_gram_renders_score_near_perfect_and_2d_degradations_do_not():
    generator = structured_gram()
    pitch, yaw = consistency.sweep_angles(generator.prior, 7, 0.3)
    images, depths = consistency.render_sweep(generator, 0, pitch, yaw)
    assert images.std() > 0.3  # structured, not grey
    fov = generator.camera['fov']
    exact = consistency.reprojection_scores(images, depths, pitch, yaw, fov)
    assert exact['psnr'] > 38 and exact['covisible'] > 0.5
    shifted, noisy = degraded(images)
    for bad in (shifted, noisy):
        assert consistency.reprojection_scores(bad, depths, pitch, yaw, fov)['psnr'] < exact['psnr'] - 10


def test_consistency_from_the_command_line(tiny_ckpt, tmp_path, capsys):
    output = tmp_path / 'consistency.json'
    eval_cli.run(['--ckpt', str(tiny_ckpt), '--metrics', 'consistency', '--consistency_seeds', '0-1',
                  '--consistency_views', '3', '--device', 'cpu', '--tmp_dir', str(tmp_path / 'cache'),
                  '--output_json', str(output), '--quiet'])
    result = load_json(output)
    scores = result['consistency']
    assert set(scores) >= {'psnr_mean', 'psnr_std', 'l1_mean', 'l1_std', 'covisible_mean', 'per_seed', 'protocol'}
    assert [entry['seed'] for entry in scores['per_seed']] == [0, 1]
    assert scores['protocol']['num_views'] == 3 and scores['protocol']['image_size'] == 16
    assert result['protocol']['consistency']['depth_tolerance'] == consistency.DEFAULT_DEPTH_TOLERANCE
    assert 'fid' not in result
    assert 'consistency: PSNR' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='pass --ckpt'):
        eval_cli.run(['--metrics', 'consistency', '--quiet'])
    with pytest.raises(SystemExit, match='at least 2 views'):
        eval_cli.run(['--ckpt', str(tiny_ckpt), '--metrics', 'consistency', '--consistency_views', '1',
                      '--device', 'cpu', '--tmp_dir', str(tmp_path / 'cache'), '--quiet'])
