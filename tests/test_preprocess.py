"""preprocess_dataset.py and utils/alignment.py on synthetic raw datasets.

Raw inputs are built here from known geometry: the 3D template points are rotated, scaled and shifted
into a source image, written as landmark files and drawn as small blurred dots. After preprocessing, the
dots must sit where the template says (within 2 px at 256^2), and the poses must match the truth.
"""
import hashlib
import math
import os
import struct
import zlib

import numpy as np
import pytest
import scipy.io
import scipy.ndimage
from PIL import Image

import preprocess_dataset
from utils import alignment

SIZE = 256
PIXEL_TOLERANCE = 2.0
# Official crop constants (gram.md 7.3, 7.4), written out so a wrong constant in the code is caught.
FACE_UNIT_PIXELS_PER_SIZE = 95 / 224  # output pixels per template unit, per output pixel of size
CAT_BOX_UNITS = 30  # the cat crop box is 2 * 15 * scale source pixels wide


# -----------------------------------------------------------------------------
# Synthetic raw data

def euler_rotation(rx, ry, rz):
    """Deep3DFaceRecon's head rotation Rz @ Ry @ Rx (template -> camera, x right, y up, z to the viewer)."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def look_at_rotation(pitch, yaw, roll=0.0):
    """Rows = camera right, up, backward axes in template coordinates for a GRAM camera at (pitch, yaw)
    looking at the origin with +y up, then rolled counter-clockwise on screen by roll."""
    back = np.array([math.sin(pitch) * math.cos(yaw), math.cos(pitch), math.sin(pitch) * math.sin(yaw)])
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    rolled_right = math.cos(roll) * right - math.sin(roll) * up
    rolled_up = math.sin(roll) * right + math.cos(roll) * up
    return np.stack([rolled_right, rolled_up, back])


def project(template, rotation, scale, center_up, height, y_offset, camera_distance=None):
    """Image coordinates (x right, y down) of the rotated template. center_up is the template origin's
    position with y up; y_offset is the official flip constant (1 for faces, 0 for cats)."""
    camera_points = template @ rotation.T
    xy = scale * camera_points[:, :2]
    if camera_distance is not None:
        xy *= (camera_distance / (camera_distance - camera_points[:, 2]))[:, None]
    xy += center_up
    return np.stack([xy[:, 0], height - y_offset - xy[:, 1]], axis=1)


def dots_image(points, width, height, sigma=2.5):
    """White Gaussian dots at sub-pixel positions (pixel centres at integer coordinates) on black."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    canvas = np.zeros((height, width))
    for x, y in points:
        canvas = np.maximum(canvas, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)))
    gray = np.round(canvas * 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))


def dot_centres(path):
    """Intensity-weighted centres (x, y) of the bright blobs of an output image."""
    gray = np.asarray(Image.open(path).convert('L'), dtype=np.float64)
    labels, count = scipy.ndimage.label(gray > 40)
    centres = scipy.ndimage.center_of_mass(gray, labels, range(1, count + 1))
    return np.array([(x, y) for y, x in centres])


def assert_dots_at(path, expected, others_allowed=False):
    found = dot_centres(path)
    if not others_allowed:
        assert len(found) == len(expected), f"{path}: found {len(found)} dots, expected {len(expected)}"
    distances = np.linalg.norm(found[:, None, :] - np.asarray(expected)[None, :, :], axis=-1)
    nearest = distances.min(axis=0)  # for every expected position, the closest dot
    assert nearest.max() < PIXEL_TOLERANCE, f"dots off their expected positions by {np.round(nearest, 2)} px"


def write_lm5p(path, points):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.writelines(f"{x:.4f} {y:.4f}\n" for x, y in points)


def write_cat(path, points):
    with open(path, 'w') as handle:
        handle.write(f"{len(points)} " + ' '.join(f"{x:.3f} {y:.3f}" for x, y in points) + ' ')


def write_deep3d_pose(path, angle):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {'angle': np.array([angle], dtype=np.float32), 'trans': np.zeros((1, 3))})


def write_png16_rgb(path, samples):
    """A 48-bit RGB PNG (PIL cannot write one): IHDR, one zlib IDAT of unfiltered rows, IEND."""
    height, width, _ = samples.shape

    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))
    rows = b''.join(b'\x00' + samples[y].astype('>u2').tobytes() for y in range(height))
    with open(path, 'wb') as handle:
        handle.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def run(raw, output, cate, *extra):
    return preprocess_dataset.main(['--raw_dataset_path', str(raw), '--output_dir', str(output), '--cate', cate,
                                    '--workers', '1', *extra])


def skipped_reasons(output):
    with open(output / 'skipped.txt') as handle:
        entries = [line.rstrip('\n').split('\t') for line in handle if line.strip()]
    return {os.path.basename(image): reason for image, reason in entries}


def tree_fingerprint(folder):
    """Content hash and mtime of every file below folder."""
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as handle:
                result[path] = (hashlib.sha256(handle.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return result


# A face spanning a 512^2 source, scaled so the crop halves it: zoom = 95 * 256 / (224 * scale) = 0.5.
FACE_SCALE = FACE_UNIT_PIXELS_PER_SIZE * SIZE / 0.5
FACE_CENTER_UP = np.array([270.0, 250.0])


def make_face(raw, name, rotation, source=512, pose=(0.1, -0.2, 0.0), image=None, landmarks=None):
    """One ffhq/faces raw item: <name>.png with dots at the landmarks, lm5p/<name>.txt, poses/<name>.mat."""
    points = project(alignment.FACE_TEMPLATE, rotation, FACE_SCALE, FACE_CENTER_UP, source, y_offset=1)
    if image is None:
        image = dots_image(points, source, source)
    image.save(raw / f'{name}.png')
    write_lm5p(str(raw / 'lm5p' / f'{name}.txt'), points if landmarks is None else landmarks)
    if pose is not None:
        write_deep3d_pose(str(raw / 'poses' / f'{name}.mat'), pose)
    return points


def expected_face_positions(rotation, size=SIZE):
    """Where the template lands after GRAM's FFHQ crop: a template unit is 95 * size / 224 pixels."""
    projected = alignment.FACE_TEMPLATE @ rotation.T
    unit = FACE_UNIT_PIXELS_PER_SIZE * size
    return np.stack([size / 2 + unit * projected[:, 0], size / 2 - unit * projected[:, 1]], axis=1)


# -----------------------------------------------------------------------------
# Templates and geometry helpers

def test_templates_match_the_reference_values():
    face = [(-0.3115, 0.0904, 0.1338), (0.3098, 0.0897, 0.1318), (0.0033, -0.2462, 0.5524),
            (-0.2522, -0.5813, 0.2241), (0.2485, -0.5813, 0.2224)]
    np.testing.assert_allclose(alignment.FACE_TEMPLATE, face, atol=5.1e-5)
    eye, mouth, ear = (4.893, 0.256, 3.936), (0, -5.859, 8.948), [(11.580, 3.353, -6.677), (12.896, 15.930, -4.882),
                                                                 (5.203, 9.292, -3.133)]
    mirror = np.array([-1, 1, 1])
    cat = [eye * mirror, eye, mouth] + [np.multiply(p, mirror) for p in ear] + ear[::-1]
    np.testing.assert_array_equal(alignment.CAT_TEMPLATE, np.array(cat, dtype=float))
    np.testing.assert_array_equal(alignment.CAT_WEIGHTS, [4, 4, 2, 0.5, 0.2, 0.2, 0.2, 0.2, 0.5])


def test_reflect_indices_match_numpy_pad():
    for length in (1, 2, 5, 17):
        values = np.arange(length)
        pad = 3 * length + 4  # several reflections deep
        padded = np.pad(values, pad, mode='reflect') if length > 1 else np.zeros(length + 2 * pad, int)
        mapped = alignment.reflect_indices(np.arange(-pad, length + pad), length)
        np.testing.assert_array_equal(values[mapped], padded)


def test_crop_resized_window_matches_full_resize_pad_and_crop():
    rng = np.random.default_rng(0)
    source = Image.fromarray((rng.random((83, 97, 3)) * 255).astype(np.uint8))
    resized_size, size = (61, 52), 40
    full = np.asarray(source.resize(resized_size, Image.LANCZOS)).astype(int)
    for left, top in ((5, 4), (-9, 30), (40, -20)):
        pad = 60
        padded = np.pad(full, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
        reference = padded[top + pad:top + pad + size, left + pad:left + pad + size]
        window = np.asarray(alignment.crop_resized_window(source, resized_size, left, top, size)).astype(int)
        assert np.abs(window - reference).max() <= 1


# -----------------------------------------------------------------------------
# FFHQ

@pytest.mark.parametrize('rx, ry, rz', [(0.0, 0.0, 0.0), (0.15, 0.4, 0.05)])
def test_ffhq_landmarks_land_on_template_and_pose_is_copied(tmp_path, rx, ry, rz):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    rotation = euler_rotation(rx, ry, rz)
    make_face(raw, 'face', rotation)
    assert run(raw, output, 'ffhq') == 0
    with Image.open(output / 'face.png') as result:
        assert result.size == (SIZE, SIZE) and result.mode == 'RGB'
    assert_dots_at(output / 'face.png', expected_face_positions(rotation))
    with open(raw / 'poses' / 'face.mat', 'rb') as a, open(output / 'poses' / 'face.mat', 'rb') as b:
        assert a.read() == b.read()
    assert skipped_reasons(output) == {}


def test_ffhq_crop_scales_with_size(tmp_path):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    make_face(raw, 'face', np.eye(3))
    run(raw, output, 'ffhq', '--size', '384')
    found = dot_centres(output / 'face.png')
    expected = expected_face_positions(np.eye(3), size=384)
    assert len(found) == 5
    assert np.linalg.norm(found[:, None] - expected[None], axis=-1).min(axis=0).max() < 1.5 * PIXEL_TOLERANCE


def test_face_far_outside_the_photo_is_reflect_padded(tmp_path):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    points = project(alignment.FACE_TEMPLATE, np.eye(3), 120.0, np.array([20.0, 30.0]), 200, y_offset=1)
    make_face(raw, 'edge', np.eye(3), source=200, image=Image.new('RGB', (200, 200), (10, 200, 30)),
              landmarks=points)
    run(raw, output, 'ffhq')
    pixels = np.asarray(Image.open(output / 'edge.png'))
    assert pixels.shape == (SIZE, SIZE, 3) and np.abs(pixels.astype(int) - (10, 200, 30)).max() <= 1


# -----------------------------------------------------------------------------
# Faces: poses estimated from the landmarks

def reader_pose(mat_path):
    """GRAM's FFHQ reader (gram.md 6.4): pitch = pi/2 - (rx - 0.1), yaw = pi/2 + ry."""
    angle = scipy.io.loadmat(mat_path)['angle']
    assert angle.shape == (1, 3)
    return math.pi / 2 - (angle[0, 0] - 0.1), math.pi / 2 + angle[0, 1]


@pytest.mark.parametrize('camera_distance, noise', [(10.0, 0.5), (None, 0.0)])
def test_faces_recovers_pose_within_0_05_rad(tmp_path, camera_distance, noise):
    """15 poses, |yaw| <= 0.5, |pitch| <= 0.2 on 256^2 photos (eye distance 93 px), seen by a perspective
    camera 10 template units away (Deep3DFaceRecon's) with 0.5 px landmark noise, or exactly by a
    weak-perspective camera (the estimator assumes the former, so the latter is its worst exact case)."""
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    rng = np.random.default_rng(1)
    truth = {}
    for i, (rx, ry) in enumerate((rx, ry) for rx in (-0.2, 0.0, 0.2) for ry in (-0.5, -0.25, 0.0, 0.25, 0.5)):
        rz = 0.1 if i % 2 else -0.05
        points = project(alignment.FACE_TEMPLATE, euler_rotation(rx, ry, rz), 150.0, np.array([130.0, 120.0]),
                         256, y_offset=1, camera_distance=camera_distance)
        points += rng.normal(0, noise, points.shape)
        name = f'photo{i:02d}'
        Image.new('RGB', (256, 256), (90, 90, 90)).save(raw / f'{name}.jpg')
        write_lm5p(str(raw / 'lm5p' / f'{name}.txt'), points)
        truth[name] = (math.pi / 2 - (rx - 0.1), math.pi / 2 + ry)
    assert run(raw, output, 'faces') == 0
    errors = []
    for name, (pitch, yaw) in truth.items():
        found_pitch, found_yaw = reader_pose(output / 'poses' / f'{name}.mat')
        errors.append(max(abs(found_pitch - pitch), abs(found_yaw - yaw)))
        assert (output / f'{name}.png').is_file()
    assert max(errors) < 0.05, f"pose errors {np.round(errors, 3)}"


@pytest.mark.parametrize('pitch, yaw', [(math.pi / 2 - 0.2, math.pi / 2 + 0.3),
                                        (math.pi / 2 + 0.15, math.pi / 2 - 0.4)])
def test_faces_pose_signs_follow_the_gram_camera(tmp_path, pitch, yaw):
    """A GRAM look-at camera at (pitch, yaw) must be labelled (pitch + 0.1, yaw): the FFHQ reader's offset.

    The reader reads Euler angles as spherical ones, which is exact only to first order, hence 0.05.
    """
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    make_face(raw, 'view', look_at_rotation(pitch, yaw), pose=None)
    run(raw, output, 'faces')
    found_pitch, found_yaw = reader_pose(output / 'poses' / 'view.mat')
    assert abs(found_pitch - (pitch + 0.1)) < 0.05 and abs(found_yaw - yaw) < 0.05


# -----------------------------------------------------------------------------
# Cats and AFHQ

CAT_SCALE = 10.0  # source pixels per template unit; the crop box is 30 units wide
CAT_CENTER_UP = np.array([260.0, 250.0])


def official_cat_roll(landmarks_up, camera_roll):
    """gram.md 7.4 with exact landmarks: roll1 is the camera roll, roll2 the eye-line angle."""
    eye_line = landmarks_up[1] - landmarks_up[0]
    roll2 = math.degrees(math.atan2(eye_line[1], eye_line[0]))
    difference = math.degrees(camera_roll) - roll2
    return math.radians(roll2 + math.copysign(max(math.log(abs(difference)), 0.0), difference)
                        if abs(difference) > 1e-9 else roll2)


@pytest.mark.parametrize('pitch, yaw, roll', [(math.pi / 2, math.pi / 2, 0.3),
                                              (math.pi / 2 - 0.2, math.pi / 2 + 0.4, 0.2)])
def test_cats_alignment_removes_roll_and_writes_pose(tmp_path, pitch, yaw, roll):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    (raw / 'CAT_00').mkdir(parents=True)  # the CAT archive's subfolders are searched
    rotation = look_at_rotation(pitch, yaw, roll)
    points = project(alignment.CAT_TEMPLATE, rotation, CAT_SCALE, CAT_CENTER_UP, 512, y_offset=0)
    dots_image(points, 512, 512).save(raw / 'CAT_00' / '00000001_000.jpg', quality=98)
    write_cat(str(raw / 'CAT_00' / '00000001_000.jpg.cat'), points)
    assert run(raw, output, 'cats') == 0

    pose = np.load(output / 'poses' / '00000001_000_pose.npy')
    assert pose.dtype == np.float64 and pose.shape == (2,)
    np.testing.assert_allclose(pose, [pitch, yaw], atol=1e-3)
    # Expected dots: the projected template, turned back by the official roll, 30 units -> SIZE pixels.
    projected = CAT_SCALE * (alignment.CAT_TEMPLATE @ rotation[:2].T)
    unroll = -official_cat_roll(projected, roll)
    turn = np.array([[math.cos(unroll), -math.sin(unroll)], [math.sin(unroll), math.cos(unroll)]])
    levelled = projected @ turn.T * SIZE / (CAT_BOX_UNITS * CAT_SCALE)
    expected = np.stack([SIZE / 2 + levelled[:, 0], SIZE / 2 - levelled[:, 1]], axis=1)
    if roll == 0.3:  # frontal: the roll is fully removed and the dots sit on the template itself
        template = alignment.CAT_TEMPLATE[:, :2] * SIZE / CAT_BOX_UNITS
        np.testing.assert_allclose(expected, np.stack([SIZE / 2 + template[:, 0], SIZE / 2 - template[:, 1]], 1),
                                   atol=1e-6)
    inside = np.all((expected > 4) & (expected < SIZE - 4), axis=1)  # the tight crop cuts the ear tips
    assert inside.sum() >= 6
    assert_dots_at(output / '00000001_000.png', expected[inside])


def test_cat_box_size_weights_the_horizontal_scale_more(tmp_path):
    """scale = 0.75 |R1| + 0.25 |R2|: seen through a 12:8 horizontal stretch, the box is 30 * 11 px wide."""
    stretch = np.diag([12.0, 8.0])
    points_up = alignment.CAT_TEMPLATE[:, :2] @ stretch + CAT_CENTER_UP
    points = np.stack([points_up[:, 0], 512 - points_up[:, 1]], axis=1)
    aligned, _, _ = alignment.align_cat(dots_image(points, 512, 512), points, SIZE)
    aligned.save(tmp_path / 'stretched.png')
    expected = alignment.CAT_TEMPLATE[:3, :2] @ stretch * SIZE / (CAT_BOX_UNITS * 11.0)
    expected = np.stack([SIZE / 2 + expected[:, 0], SIZE / 2 - expected[:, 1]], axis=1)
    assert_dots_at(tmp_path / 'stretched.png', expected, others_allowed=True)  # eyes and mouth; ears vary


def test_afhq_reads_cat_format_and_skips_bad_landmarks(tmp_path, capsys):
    raw = tmp_path / 'raw'
    output = raw / 'processed'  # inside the raw folder: must not be searched for raw images
    (raw / 'cat').mkdir(parents=True)
    points = project(alignment.CAT_TEMPLATE, look_at_rotation(math.pi / 2, math.pi / 2 + 0.2), CAT_SCALE,
                     CAT_CENTER_UP, 512, y_offset=0)
    image = Image.new('RGB', (512, 512), (200, 120, 40))
    for name in ('flickr_cat_000001', 'flickr_cat_000002', 'wrong_count', 'nan_point', 'no_landmarks'):
        image.save(raw / 'cat' / f'{name}.png')
    write_cat(str(raw / 'cat' / 'flickr_cat_000001.png.cat'), points)
    write_cat(str(raw / 'cat' / 'flickr_cat_000002.cat'), points)  # '<stem>.cat' is accepted too
    (raw / 'more').mkdir()
    image.save(raw / 'more' / 'flickr_cat_000001.jpg')  # would also become flickr_cat_000001.png
    write_cat(str(raw / 'cat' / 'wrong_count.png.cat'), points[:8])
    bad = points.copy()
    bad[4, 1] = np.nan
    write_cat(str(raw / 'cat' / 'nan_point.png.cat'), bad)
    assert run(raw, output, 'afhq', '--size', '128') == 0
    for name in ('flickr_cat_000001', 'flickr_cat_000002'):
        assert Image.open(output / f'{name}.png').size == (128, 128)
        np.testing.assert_allclose(np.load(output / 'poses' / f'{name}_pose.npy'),
                                   [math.pi / 2, math.pi / 2 + 0.2], atol=1e-3)
    reasons = skipped_reasons(output)
    assert set(reasons) == {'wrong_count.png', 'nan_point.png', 'no_landmarks.png', 'flickr_cat_000001.jpg'}
    assert reasons['flickr_cat_000001.jpg'].startswith('duplicate name: ')
    assert '8 (x, y) pairs' in reasons['wrong_count.png']
    assert 'not finite' in reasons['nan_point.png']
    assert 'landmark file missing' in reasons['no_landmarks.png']
    capsys.readouterr()
    run(raw, output, 'afhq', '--size', '128')
    assert 'afhq: 0 written, 2 already done, 4 skipped' in capsys.readouterr().out


# -----------------------------------------------------------------------------
# CARLA

def test_carla_resizes_and_copies_extrinsics(tmp_path):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    (raw / 'poses').mkdir(parents=True)
    gradient = np.linspace(0, 255, 300)[None, :, None] * np.ones((300, 1, 3))
    source = Image.fromarray(gradient.astype(np.uint8))
    source.save(raw / 'car_0000.png')
    extrinsics = np.eye(4)[:3] + 0.1
    np.save(raw / 'poses' / 'car_0000_extrinsics.npy', extrinsics)
    Image.new('RGB', (300, 300)).save(raw / 'car_0001.png')  # its pose is missing
    assert run(raw, output, 'carla') == 0
    result = np.asarray(Image.open(output / 'car_0000.png'))
    np.testing.assert_array_equal(result, np.asarray(source.resize((128, 128), Image.LANCZOS)))
    with open(raw / 'poses' / 'car_0000_extrinsics.npy', 'rb') as a:
        with open(output / 'poses' / 'car_0000_extrinsics.npy', 'rb') as b:
            assert a.read() == b.read()
    assert 'pose file missing' in skipped_reasons(output)['car_0001.png']


# -----------------------------------------------------------------------------
# Bad inputs, re-runs, interruptions

def test_bad_inputs_are_skipped_with_reasons_in_parallel(tmp_path, capsys):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    rotation = np.eye(3)
    points = make_face(raw, 'good', rotation)
    for name in ('truncated', 'corrupt', 'wrong_count', 'nan_landmark', 'no_pose', 'no_landmarks', 'bad_pose'):
        make_face(raw, name, rotation)
    with open(raw / 'truncated.png', 'rb') as handle:
        data = handle.read()
    with open(raw / 'truncated.png', 'wb') as handle:
        handle.write(data[:len(data) // 2])
    with open(raw / 'corrupt.png', 'wb') as handle:
        handle.write(b'this is not a png file' * 20)
    write_lm5p(str(raw / 'lm5p' / 'wrong_count.txt'), points[:4])
    nan_points = points.copy()
    nan_points[2, 0] = np.nan
    write_lm5p(str(raw / 'lm5p' / 'nan_landmark.txt'), nan_points)
    os.remove(raw / 'poses' / 'no_pose.mat')
    os.remove(raw / 'lm5p' / 'no_landmarks.txt')
    scipy.io.savemat(str(raw / 'poses' / 'bad_pose.mat'), {'rotation': np.zeros((1, 3))})
    before = tree_fingerprint(raw)

    code = preprocess_dataset.main(['--raw_dataset_path', str(raw), '--output_dir', str(output),
                                    '--cate', 'ffhq', '--workers', '2'])
    assert code == 0
    assert tree_fingerprint(raw) == before, "source files were modified"
    assert sorted(p.name for p in output.glob('*.png')) == ['good.png']
    assert sorted(p.name for p in (output / 'poses').iterdir()) == ['good.mat']
    reasons = skipped_reasons(output)
    assert set(reasons) == {'truncated.png', 'corrupt.png', 'wrong_count.png', 'nan_landmark.png', 'no_pose.png',
                            'no_landmarks.png', 'bad_pose.png'}
    assert 'truncated' in reasons['truncated.png']
    assert 'cannot identify image file' in reasons['corrupt.png']
    assert 'found 8 numbers, expected 5 landmarks' in reasons['wrong_count.png']
    assert 'not finite' in reasons['nan_landmark.png']
    assert 'pose file missing' in reasons['no_pose.png']
    assert 'landmark file missing' in reasons['no_landmarks.png']
    assert "no 'angle' key" in reasons['bad_pose.png']
    assert 'ffhq: 1 written, 0 already done, 7 skipped' in capsys.readouterr().out


def test_unusual_pixel_formats_are_converted_to_rgb(tmp_path):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    points = project(alignment.FACE_TEMPLATE, np.eye(3), 100.0, np.array([100.0, 100.0]), 200, y_offset=1)
    images = {
        'gray.png': (Image.new('L', (200, 200), 77), (77, 77, 77)),
        'cmyk.jpg': (Image.new('CMYK', (200, 200), (0, 255, 255, 0)), (255, 0, 0)),
        'rgba.png': (Image.new('RGBA', (200, 200), (0, 0, 255, 128)), (127, 127, 255)),
        'gray16.png': (Image.fromarray(np.full((200, 200), 0x8080, np.uint16)), (128, 128, 128)),
        'rgb16.png': (None, (64, 128, 192)),
    }
    for filename, (image, _) in images.items():
        if image is None:
            write_png16_rgb(raw / filename, np.full((200, 200, 3), (0x4000, 0x8000, 0xC0FF), np.uint16))
        else:
            image.save(raw / filename, **({'quality': 100} if filename.endswith('.jpg') else {}))
        write_lm5p(str(raw / 'lm5p' / (os.path.splitext(filename)[0] + '.txt')), points)
    assert Image.open(raw / 'gray16.png').mode.startswith('I')
    assert run(raw, output, 'faces') == 0
    assert skipped_reasons(output) == {}
    for filename, (_, colour) in images.items():
        with Image.open(output / (os.path.splitext(filename)[0] + '.png')) as result:
            assert result.mode == 'RGB' and result.size == (SIZE, SIZE)
            assert np.abs(np.asarray(result).astype(int) - colour).max() <= 3, filename


def test_rerun_skips_done_images_and_overwrite_redoes_them(tmp_path, capsys):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    for name in ('a', 'b'):
        make_face(raw, name, np.eye(3))
    run(raw, output, 'ffhq')
    first = tree_fingerprint(output / 'poses') | {'a': os.stat(output / 'a.png').st_mtime_ns}
    capsys.readouterr()
    run(raw, output, 'ffhq')
    assert 'ffhq: 0 written, 2 already done, 0 skipped' in capsys.readouterr().out
    assert tree_fingerprint(output / 'poses') | {'a': os.stat(output / 'a.png').st_mtime_ns} == first
    os.remove(output / 'b.png')
    run(raw, output, 'ffhq')
    assert 'ffhq: 1 written, 1 already done' in capsys.readouterr().out
    run(raw, output, 'ffhq', '--overwrite')
    assert 'ffhq: 2 written, 0 already done' in capsys.readouterr().out
    run(raw, output, 'ffhq', '--size', '128')  # a different size is not "done"
    assert 'ffhq: 2 written' in capsys.readouterr().out
    assert Image.open(output / 'a.png').size == (128, 128)


def test_interrupted_run_leaves_no_partial_image(tmp_path, monkeypatch, capsys):
    raw, output = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    make_face(raw, 'face', np.eye(3))
    original_save = Image.Image.save

    def save_half_then_die(image, handle, *args, **kwargs):
        handle.write(b'\x89PNG\r\n\x1a\n half of an image')
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the PNG was being written

    monkeypatch.setattr(Image.Image, 'save', save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(raw, output, 'ffhq')
    assert not (output / 'face.png').exists()
    assert [p.name for p in output.iterdir() if p.is_file()] == []

    # A SIGKILLed run cannot clean up: its temporary file is removed by the next run.
    monkeypatch.setattr(Image.Image, 'save', original_save)
    stale = output / '.face.png.12345.partial'  # the temporary name of earlier versions
    stale.write_bytes(b'partial')
    capsys.readouterr()
    run(raw, output, 'ffhq')
    assert not stale.exists() and (output / 'face.png').is_file()
    assert 'removed 1 temporary file' in capsys.readouterr().out


# -----------------------------------------------------------------------------
# Command-line errors

def test_missing_or_empty_raw_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / 'nowhere'
    with pytest.raises(SystemExit) as error:
        run(missing, tmp_path / 'out', 'ffhq')
    assert str(missing) in str(error.value.code) and 'lm5p' in str(error.value.code)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(SystemExit) as error:
        run(empty, tmp_path / 'out', 'cats')
    assert f"no images found in {empty}" in str(error.value.code) and '.jpg.cat' in str(error.value.code)


def test_all_images_bad_exits_non_zero(tmp_path):
    raw = tmp_path / 'raw'
    raw.mkdir()
    (raw / 'broken.png').write_bytes(b'nope')
    with pytest.raises(SystemExit) as error:
        run(raw, tmp_path / 'out', 'carla')
    assert 'none of the 1 images could be processed' in str(error.value.code)
    assert 'broken.png' in (tmp_path / 'out' / 'skipped.txt').read_text()


def test_output_dir_must_differ_from_raw(tmp_path):
    with pytest.raises(SystemExit) as error:
        run(tmp_path, tmp_path, 'ffhq')
    assert 'would replace the source images' in str(error.value.code)


def test_synthetic_category_writes_an_ffhq_style_folder(tmp_path):
    out = tmp_path / 'synthetic'
    assert preprocess_dataset.main(['--cate', 'synthetic', '--output_dir', str(out), '--num_images', '5',
                                    '--size', '32', '--seed', '1', '--workers', '1']) == 0
    assert sorted(p.name for p in out.glob('*.png')) == [f'{i:05d}.png' for i in range(5)]
    assert sorted(p.name for p in (out / 'poses').iterdir()) == [f'{i:05d}.mat' for i in range(5)]
    assert Image.open(out / '00003.png').size == (32, 32)
