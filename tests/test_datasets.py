"""Datasets: official pose conversions (gram.md §6.4, gramhd.md §10), flips, bad data messages, the sampler."""
import math
import warnings

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import configs
from datasets import (AFHQCats, CARLA, CATS, FFHQ, DatasetError, EpochSampler, build_dataset, carla_angles)
from generators.camera import origins_from_angles


def write_image(path, size=20, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def ffhq_folder(root, count, angle=(0.05, 0.2, 0.0)):
    (root / 'poses').mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_image(root / f'{i:05d}.png', seed=i)
        scipy.io.savemat(root / 'poses' / f'{i:05d}.mat', {'angle': np.array([angle])})
    return root


def test_ffhq_pose_conversion_and_flip(tmp_path):
    rx, ry = 0.05, 0.2
    dataset = FFHQ(ffhq_folder(tmp_path, 1, angle=(rx, ry, 0.3)), img_size=16)
    image, pose = dataset[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert -1 <= image.min() and image.max() <= 1
    assert pose.tolist() == pytest.approx([math.pi / 2 - (rx - 0.1), math.pi / 2 + ry], abs=1e-6)
    flipped, flipped_pose = dataset[(0, True)]
    assert torch.equal(flipped, image.flip(-1))  # mirrored horizontally (width axis)
    assert flipped_pose.tolist() == pytest.approx([math.pi / 2 - (rx - 0.1), math.pi / 2 - ry], abs=1e-6)


def test_image_values_and_lanczos_resize(tmp_path):
    (tmp_path / 'poses').mkdir()
    white = np.full((32, 32, 3), 255, np.uint8)
    white[:, :16] = 0  # left half black
    Image.fromarray(white).save(tmp_path / 'a.png')
    scipy.io.savemat(tmp_path / 'poses' / 'a.mat', {'angle': np.zeros((1, 3))})
    image, _ = FFHQ(tmp_path, img_size=8)[0]
    expected = np.asarray(Image.fromarray(white).resize((8, 8), Image.Resampling.LANCZOS), np.float32)
    assert torch.allclose(image, torch.from_numpy(expected).permute(2, 0, 1) / 127.5 - 1, atol=1e-6)
    assert image[:, :, 0].max() == -1 and image[:, :, -1].min() == 1


@pytest.mark.parametrize('cls', [CATS, AFHQCats])
def test_cat_pose_conversion_and_flip(tmp_path, cls):
    (tmp_path / 'poses').mkdir()
    write_image(tmp_path / 'cat.png')
    np.save(tmp_path / 'poses' / 'cat_pose.npy', np.array([1.5, 1.8]))
    dataset = cls(tmp_path, img_size=16)
    assert dataset[0][1].tolist() == pytest.approx([1.5 + 0.14, 1.8], abs=1e-6)
    assert dataset[(0, True)][1].tolist() == pytest.approx([1.5 + 0.14, math.pi - 1.8], abs=1e-6)


def graf_extrinsics(pitch, yaw, radius=1.3, rows=3):
    """A z-up GRAF camera-to-world matrix whose camera sits at GRAM pose (pitch, yaw)."""
    x, y, z = (radius * origins_from_angles(torch.tensor([pitch]), torch.tensor([yaw]))[0].double()).tolist()
    matrix = np.eye(4)[:rows]
    matrix[:3, 3] = [z, x, y]  # GRAM (x, y, z) = GRAF (y, z, x)
    return matrix


@pytest.mark.parametrize('rows', [3, 4])
def test_carla_pose_conversion_and_flip(tmp_path, rows):
    pitch, yaw = 0.6, 2.5
    assert carla_angles(graf_extrinsics(pitch, yaw, rows=rows)) == pytest.approx((pitch, yaw), abs=1e-6)
    (tmp_path / 'poses').mkdir()
    write_image(tmp_path / 'car.png')
    np.save(tmp_path / 'poses' / 'car_extrinsics.npy', graf_extrinsics(pitch, yaw, rows=rows))
    dataset = CARLA(tmp_path, img_size=16)
    assert dataset[0][1].tolist() == pytest.approx([pitch, yaw], abs=1e-6)
    assert dataset[(0, True)][1].tolist() == pytest.approx([pitch, math.pi - yaw], abs=1e-6)


def test_config_dataset_classes(tmp_path):
    ffhq_folder(tmp_path, 2)
    assert isinstance(build_dataset(configs.get_config('TINY_GRAM'), tmp_path), FFHQ)
    with pytest.raises(DatasetError, match='poses/<name>_extrinsics.npy'):
        build_dataset(configs.get_config('TINY_CARLA'), tmp_path)


# --- bad data -------------------------------------------------------------------------------------------

def test_images_without_poses_are_skipped_and_named(tmp_path):
    ffhq_folder(tmp_path, 3)
    write_image(tmp_path / '43079.png')
    write_image(tmp_path / '27757.png')
    with pytest.warns(UserWarning, match=r'2 of 5 images .* skipped .*27757\.png, 43079\.png'):
        dataset = FFHQ(tmp_path, img_size=16)
    assert len(dataset) == 3 and dataset.missing_poses == ['27757.png', '43079.png']
    assert all(dataset[i][1].shape == (2,) for i in range(len(dataset)))


def test_no_image_has_a_pose(tmp_path):
    (tmp_path / 'poses').mkdir()
    write_image(tmp_path / 'a.png')
    with pytest.raises(DatasetError, match=r"none of the 1 images .* expected .*poses/a\.mat"):
        FFHQ(tmp_path, img_size=16)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match=f'no images .* directly in {tmp_path}'):
        FFHQ(tmp_path, img_size=16)
    with pytest.raises(DatasetError, match='does not exist'):
        FFHQ(tmp_path / 'nowhere', img_size=16)
    write_image(tmp_path / 'a.png')
    with pytest.raises(DatasetError, match=r'pose folder .*poses does not exist'):
        CATS(tmp_path, img_size=16)


def test_corrupt_image_names_the_file(tmp_path):
    ffhq_folder(tmp_path, 1)
    (tmp_path / '00000.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    dataset = FFHQ(tmp_path, img_size=16)
    with pytest.raises(DatasetError, match=r'cannot read image .*00000\.png'):
        dataset[0]


def test_malformed_pose_files_name_file_and_key(tmp_path):
    ffhq_folder(tmp_path, 1)
    scipy.io.savemat(tmp_path / 'poses' / '00000.mat', {'angles': np.zeros((1, 3))})
    with pytest.raises(DatasetError, match=r"00000\.mat has no key 'angle' \(keys: \['angles'\]\)"):
        FFHQ(tmp_path, img_size=16)[0]
    (tmp_path / 'poses' / 'cat_pose.npy').unlink(missing_ok=True)
    write_image(tmp_path / 'cat.png')
    np.save(tmp_path / 'poses' / 'cat_pose.npy', np.zeros(3))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # 00000.png has no *_pose.npy
        cats = CATS(tmp_path, img_size=16)
    with pytest.raises(DatasetError, match=r'cat_pose\.npy holds 3 values, expected 2'):
        cats[0]


# --- sampler --------------------------------------------------------------------------------------------

def test_sampler_splits_shuffles_and_resumes():
    keys = lambda sampler: [key for batch in sampler for key in batch]  # noqa: E731
    ranks = [EpochSampler(23, 3, rank=r, world_size=2, seed=5) for r in range(2)]
    assert ranks[0].batches_per_epoch == 3  # 23 // 2 = 11 per rank -> 3 full batches of 3
    epoch0 = [keys(s) for s in ranks]
    indices = [i for rank in epoch0 for i, _ in rank]
    assert len(indices) == len(set(indices)) == 18  # disjoint across ranks
    for sampler in ranks:
        sampler.set_epoch(1)
    assert [keys(s) for s in ranks] != epoch0  # a new order every epoch
    flips = [flip for rank in epoch0 for _, flip in rank]
    assert any(flips) and not all(flips)
    ranks[0].set_epoch(0, start_batch=2)  # resume mid-epoch: the same tail, nothing re-read
    assert keys(ranks[0]) == epoch0[0][6:] and len(ranks[0]) == 1
    with pytest.raises(DatasetError, match='cannot fill one batch'):
        EpochSampler(3, 2, world_size=2)
