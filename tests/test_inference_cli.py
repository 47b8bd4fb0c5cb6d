"""inference.py and render_multiview_images.py end to end on a small config."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import inference
import render_multiview_images
from conftest import REPO_ROOT
from generators import build_generator


def run(argv):
    inference.main([str(a) for a in argv] + ['--device', 'cpu'])


def test_multiview_grids(tiny_ckpt, tmp_path):
    run(['--ckpt', tiny_ckpt, '--seeds', '0,2-3', '--type', 'multiview3x7', '--output_dir', tmp_path,
         '--batch_size', '2'])
    for seed in (0, 2, 3):
        grid = np.asarray(Image.open(tmp_path / f'grid_{seed}.png'))
        assert grid.shape == (3 * 16, 7 * 16, 3)
    assert not (tmp_path / 'grid_1.png').exists()


def test_batching_does_not_change_pixels(tiny_ckpt, tmp_path):
    run(['--ckpt', tiny_ckpt, '--seeds', '0-2', '--output_dir', tmp_path / 'a', '--batch_size', '3',
         '--no_watermark'])
    run(['--ckpt', tiny_ckpt, '--seeds', '1', '--output_dir', tmp_path / 'b', '--batch_size', '1',
         '--no_watermark'])
    a = np.asarray(Image.open(tmp_path / 'a' / 'grid_1.png')).astype(int)
    b = np.asarray(Image.open(tmp_path / 'b' / 'grid_1.png')).astype(int)
    assert np.abs(a - b).max() <= 1


def test_watermark_is_on_by_default_and_can_be_removed(tiny_ckpt, tmp_path):
    run(['--ckpt', tiny_ckpt, '--seeds', '0', '--img_size', '64', '--output_dir', tmp_path / 'marked'])
    run(['--ckpt', tiny_ckpt, '--seeds', '0', '--img_size', '64', '--output_dir', tmp_path / 'clean',
         '--no_watermark'])
    marked = np.asarray(Image.open(tmp_path / 'marked' / 'grid_0.png')).astype(int)
    clean = np.asarray(Image.open(tmp_path / 'clean' / 'grid_0.png')).astype(int)
    assert marked.shape == clean.shape == (64, 192, 3)
    changed = np.abs(marked - clean).max(-1) > 30
    assert changed[:32].sum() == 0 and changed[32:].sum() > 50   # a visible mark in the lower part only


def test_video_and_rand(tiny_ckpt, tmp_path):
    import imageio.v2 as imageio
    run(['--ckpt', tiny_ckpt, '--seeds', '4', '--type', 'video', '--output_dir', tmp_path])
    frames = imageio.mimread(tmp_path / 'grid_4.mp4', memtest=False)
    assert len(frames) == 60 and frames[0].shape == (16, 16, 3)
    run(['--ckpt', tiny_ckpt, '--seeds', '10-12', '--type', 'rand', '--output_dir', tmp_path / 'rand'])
    names = sorted(p.name for p in (tmp_path / 'rand').iterdir())
    assert names == ['00000.png', '00001.png', '00002.png']


def test_rand_is_deterministic_per_seed(tiny_ckpt, tmp_path):
    run(['--ckpt', tiny_ckpt, '--seeds', '5,6', '--type', 'rand', '--output_dir', tmp_path / 'a'])
    run(['--ckpt', tiny_ckpt, '--seeds', '6', '--type', 'rand', '--output_dir', tmp_path / 'b'])
    a = np.asarray(Image.open(tmp_path / 'a' / '00001.png'))
    b = np.asarray(Image.open(tmp_path / 'b' / '00000.png'))
    assert np.array_equal(a, b)


def test_bad_seeds_and_missing_config_are_clear_errors(tiny_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit):  # refused by argparse, before the checkpoint is read
        run(['--ckpt', tiny_ckpt, '--seeds', '3-1', '--output_dir', tmp_path])
    assert 'argument --seeds: bad seed range 3-1' in capsys.readouterr().err
    torch.save(build_generator('TINY_GRAM').state_dict(), tmp_path / 'generator.pth')
    with pytest.raises(SystemExit, match='pass config='):
        run(['--ckpt', tmp_path / 'generator.pth', '--output_dir', tmp_path])


def test_gram_multiview_script_writes_frames_and_gif(tiny_ckpt, tmp_path):
    render_multiview_images.main(['--generator_file', str(tiny_ckpt), '--config', 'TINY_GRAM', '--seeds', '1',
                                  '--frames', '6', '--psi', '0.5', '--output_dir', str(tmp_path),
                                  '--device', 'cpu'])
    for index in range(6):
        assert (tmp_path / f'grid_1_{index}.png').exists()
    gif = Image.open(tmp_path / 'grid_1.gif')
    assert gif.n_frames == 6


def test_command_line_entry_point(tiny_ckpt, tmp_path):
    result = subprocess.run([sys.executable, 'inference.py', '--ckpt', str(tiny_ckpt), '--seeds', '0',
                             '--output_dir', str(tmp_path), '--device', 'cpu'], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'grid_0.png').exists()


def test_inexact_options_render_close_to_the_exact_images(one_thread, tiny_ckpt, tmp_path):
    run(['--ckpt', tiny_ckpt, '--seeds', '0', '--output_dir', tmp_path / 'exact', '--no_watermark'])
    run(['--ckpt', tiny_ckpt, '--seeds', '0', '--output_dir', tmp_path / 'inexact', '--no_watermark',
         '--precision', 'fp16', '--early_termination', '0.01', '--tf32'])
    exact = np.asarray(Image.open(tmp_path / 'exact' / 'grid_0.png')).astype(int)
    inexact = np.asarray(Image.open(tmp_path / 'inexact' / 'grid_0.png')).astype(int)
    # fp16 moves this model's pixels by < 0.003 of the [-1, 1] range: at most 1 uint8 level
    assert exact.shape == inexact.shape and np.abs(exact - inexact).max() <= 1


def test_inexact_options_bad_values_and_gramhd_are_clear_errors(tiny_ckpt, tmp_path):
    with pytest.raises(SystemExit, match="'fp17'"):
        run(['--ckpt', tiny_ckpt, '--seeds', '0', '--output_dir', tmp_path, '--precision', 'fp17'])
    with pytest.raises(SystemExit, match='early_termination.*1.5'):
        run(['--ckpt', tiny_ckpt, '--seeds', '0', '--output_dir', tmp_path, '--early_termination', '1.5'])
    with pytest.raises(SystemExit, match='GRAM-HD'):
        run(['--untrained', '--config', 'TINY_GRAMHD', '--seeds', '0', '--output_dir', tmp_path, '--compile'])
    assert not any(tmp_path.iterdir())
