"""The procedural head dataset: deterministic, poses round-trip through the FFHQ pose format."""
import math

import numpy as np
import scipy.io
import torch
from PIL import Image

import synthetic_data


def ffhq_pose_from_mat(path):
    # the official FFHQ conversion (gram.md 6.4): pitch = pi/2 - (rx - 0.1), yaw = pi/2 + ry
    angle = scipy.io.loadmat(path)['angle']
    return math.pi / 2 - (angle[0, 0] - 0.1), math.pi / 2 + angle[0, 1]


def test_dataset_is_deterministic_and_resumable(tmp_path):
    synthetic_data.write_synthetic_dataset(tmp_path / 'a', num_images=20, size=32, seed=3)
    first = np.asarray(Image.open(tmp_path / 'a' / '00017.png'))
    assert first.shape == (32, 32, 3) and first.std() > 10
    # a second run over a partly deleted folder re-renders only what is missing, with the same pixels
    (tmp_path / 'a' / '00017.png').unlink()
    mtime = (tmp_path / 'a' / '00001.png').stat().st_mtime_ns
    synthetic_data.write_synthetic_dataset(tmp_path / 'a', num_images=20, size=32, seed=3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'a' / '00017.png')), first)
    assert (tmp_path / 'a' / '00001.png').stat().st_mtime_ns == mtime
    # image i depends only on (seed, i): parallel workers give the same pixels
    synthetic_data.write_synthetic_dataset(tmp_path / 'b', num_images=20, size=32, seed=3, workers=2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'b' / '00017.png')), first)
    other = synthetic_data.render_chunk(4, 17, 1, 32)[0][0]
    assert not np.array_equal(other, first)


def test_poses_round_trip_and_follow_the_face_prior(tmp_path):
    synthetic_data.write_synthetic_dataset(tmp_path, num_images=3, size=16, seed=0)
    _, poses = synthetic_data.render_chunk(0, 0, 3, 16)
    for index, (pitch, yaw) in enumerate(poses):
        read_pitch, read_yaw = ffhq_pose_from_mat(tmp_path / 'poses' / f'{index:05d}.mat')
        assert abs(read_pitch - pitch) < 1e-6 and abs(read_yaw - yaw) < 1e-6
    rng = torch.Generator().manual_seed(0)
    pitch, yaw = synthetic_data.sample_poses(4000, rng)
    assert abs(yaw.std() - 0.3) < 0.02 and abs(pitch.std() - 0.155) < 0.01


def test_objects_stay_inside_the_ray_range():
    rng = torch.Generator().manual_seed(1)
    heads = synthetic_data.random_heads(200, rng)
    directions = torch.nn.functional.normalize(torch.randn(500, 3, generator=rng), dim=-1)
    for part in synthetic_data.PARTS:
        center, radii = heads[part]
        surface = center[:, None] + radii[:, None] * directions[None]  # points on each ellipsoid
        # |p| < 0.12 keeps every point inside the 0.88-1.12 ray range of any camera on the unit sphere
        assert surface.norm(dim=-1).max() < 0.12, part


def test_the_object_turns_with_the_camera():
    """Yawing the camera moves the nose: the pose is readable from the image."""
    rng = torch.Generator().manual_seed(2)
    heads = synthetic_data.random_heads(1, rng)
    pitch = torch.tensor([math.pi / 2], dtype=torch.float64)
    left = synthetic_data.render_heads(heads, pitch, pitch + 0.4, 32)
    right = synthetic_data.render_heads(heads, pitch, pitch - 0.4, 32)
    mirrored = torch.flip(right, dims=[-1])
    assert (left - right).abs().mean() > 0.02
    # a symmetric object seen from mirrored yaws gives roughly mirrored images
    assert (left - mirrored).abs().mean() < (left - right).abs().mean()
