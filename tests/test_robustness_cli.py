"""Issue 16, the command-line half: no silent wrong results, no tracebacks for plausible inputs.

Every CLI refuses values that mean nothing (0, negative, NaN, empty) at parse time, seeds are checked
once, outputs are checked before rendering, eval.py keeps its metrics and its renders when something fails
late, synthetic preprocessing never mixes settings in one folder, and a bad training image is reported in
one line even from a data-loader worker.
"""
import errno
import json
import os

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import eval as eval_cli
import fid_evaluation
import inference
import preprocess_dataset
import render_multiview_images
import train as train_script
from evaluation import runner
from rendering import view_jobs
from utils.cli import error_line
from utils.images import add_watermark
from utils.seeds import MAX_SEED, parse_seeds

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def usage_error(capsys, main, argv, *fragments):
    """main(argv) must stop at argument parsing (exit 2) with one error line holding every fragment."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if 'error:' in line]
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert 'Traceback' not in lines[0] and "'" not in lines[0].split('error:')[1]
    return lines[0]


def exit_message(main, argv):
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    message = str(stop.value.code)
    assert '\n' not in message and 'Traceback' not in message
    return message


# --------------------------------------------------------------------------------------------------------
# 0 / negative / NaN / empty values are refused, not turned into defaults


@pytest.mark.parametrize('flag, value, fragment', [
    ('--total_step', '0', 'positive integer'), ('--patch_split', '0', 'positive integer'),
    ('--cpu_processes', '0', 'positive integer'), ('--save_interval', '-5', 'positive integer'),
    ('--num_workers', '-1', '>= 0'), ('--seed', '-1', 'seed'), ('--port', '0', 'port'),
])
def test_train_rejects_meaningless_numbers(capsys, tmp_path, flag, value, fragment):
    usage_error(capsys, train_script.main, ['--config', 'TINY_GRAM', '--data_dir', tmp_path, flag, value],
                flag, fragment, value)


@pytest.mark.parametrize('flag, value, fragment', [
    ('--img_size', '0', 'positive integer'), ('--img_size', '-64', 'positive integer'),
    ('--seeds', '', 'empty seed list'), ('--type', '', 'empty value'), ('--type', 'rand,', 'empty item'),
    ('--truncation', 'nan', 'finite'), ('--truncation', 'inf', 'finite'), ('--batch_size', '0', 'positive'),
    ('--seeds', '0-3,2', 'seed 2 is listed twice'), ('--seeds', str(MAX_SEED + 1), 'too large'),
    ('--early_termination', 'nan', 'finite'),
])
def test_inference_rejects_meaningless_values_before_loading(capsys, tmp_path, flag, value, fragment):
    usage_error(capsys, inference.main, ['--output_dir', tmp_path / 'out', flag, value], flag, fragment)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('main, argv, flag, fragment', [
    (eval_cli.main, ['--truncation', 'nan'], '--truncation', 'finite'),
    (eval_cli.main, ['--num_fake', '0'], '--num_fake', 'positive integer'),
    (eval_cli.main, ['--image_size', '-32'], '--image_size', 'positive integer'),
    (eval_cli.main, ['--consistency_yaw_range', 'nan'], '--consistency_yaw_range', 'finite'),
    (fid_evaluation.main, ['--num_images', '0'], '--num_images', 'positive integer'),
    (render_multiview_images.main, ['--psi', 'nan'], '--psi', 'finite'),
    (render_multiview_images.main, ['--seeds', '0,0'], '--seeds', 'seed 0 is listed twice'),
    (render_multiview_images.main, ['--img_size', '0'], '--img_size', 'positive integer'),
    (preprocess_dataset.main, ['--cate', 'synthetic', '--num_images', '0'], '--num_images', 'positive integer'),
    (preprocess_dataset.main, ['--cate', 'synthetic', '--seed', str(2 ** 64)], '--seed', 'seed'),
    (preprocess_dataset.main, ['--workers', '0'], '--workers', 'positive integer'),
])
def test_other_clis_reject_meaningless_values(capsys, main, argv, flag, fragment):
    usage_error(capsys, main, argv, flag, fragment)


def test_cuda_without_a_gpu_is_one_clear_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    line = usage_error(capsys, inference.main, ['--device', 'cuda', '--output_dir', tmp_path], '--device', 'no usable CUDA')
    assert 'cpu' in line
    usage_error(capsys, eval_cli.main, ['--device', 'cuda:1'], '--device', 'CUDA')
    usage_error(capsys, inference.main, ['--device', 'gpu0'], '--device', 'unknown device gpu0')


def test_help_texts_show_the_defaults(capsys):
    with pytest.raises(SystemExit):
        inference.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert '(default: 0.7)' in text and '(default: images)' in text and '(default: 4)' in text
    with pytest.raises(SystemExit):
        train_script.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert '(default: 500)' in text and '(default: 5000)' in text and '(default: 4)' in text


# --------------------------------------------------------------------------------------------------------
# Seeds


def test_seed_lists_refuse_repeats_and_out_of_range_seeds():
    with pytest.raises(ValueError, match='seed 2 is listed twice in 0-3,2'):
        parse_seeds('0-3,2')
    with pytest.raises(ValueError, match='seed 7 is listed twice'):
        parse_seeds('7-9,0-7')
    with pytest.raises(ValueError, match='too large'):
        parse_seeds('0,99999999999999999999999')
    with pytest.raises(ValueError, match='more than'):
        parse_seeds('0-4000000000')
    assert parse_seeds(f'5,{MAX_SEED}') == [5, MAX_SEED]
    torch.Generator().manual_seed(MAX_SEED)  # the largest seed is one torch accepts


# --------------------------------------------------------------------------------------------------------
# Outputs are checked before any rendering


def test_output_dir_that_is_a_file_fails_before_rendering(tiny_ckpt, tmp_path, monkeypatch):
    target = tmp_path / 'not_a_folder'
    target.write_text('mine')
    monkeypatch.setattr(inference, 'load_or_exit', lambda *a, **k: pytest.fail('loaded before the check'))
    message = exit_message(inference.main, ['--ckpt', tiny_ckpt, '--seeds', '0', '--output_dir', target])
    assert message == f"error: --output_dir {target} is a file; expected a folder (it is created when missing)"
    assert target.read_text() == 'mine'
    message = exit_message(render_multiview_images.main, ['--generator_file', tiny_ckpt, '--config', 'TINY_GRAM',
                                                          '--seeds', '0', '--output_dir', target / 'sub'])
    assert 'cannot be created' in message or 'not writable' in message
    message = exit_message(preprocess_dataset.main, ['--cate', 'synthetic', '--output_dir', target,
                                                     '--num_images', 1, '--size', 16])
    assert message.startswith(f"error: --output_dir {target} is a file") and target.read_text() == 'mine'


def test_a_full_disk_while_saving_is_one_line(tiny_ckpt, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / 'grid_0.png'))
    monkeypatch.setattr(view_jobs, 'save_png', full)
    message = exit_message(inference.main, ['--ckpt', tiny_ckpt, '--seeds', '0', '--output_dir', tmp_path,
                                            '--device', 'cpu'])
    assert 'No space left on device' in message and 'grid_0.png' in message


# --------------------------------------------------------------------------------------------------------
# The first picture


@pytest.mark.parametrize('size', [32, 64, 128, 256])
def test_watermark_fits_in_the_lower_right_corner(size):
    image = np.full((size, size, 3), 120, np.uint8)
    changed = (add_watermark(image) != image).any(-1)
    rows, cols = np.nonzero(changed)
    assert rows.size > 0
    # The whole word, off the centred subject: right third, bottom sixth, not clipped at the border.
    assert cols.min() >= 0.6 * size and rows.min() >= 0.8 * size
    assert cols.max() < size - 1 and rows.max() < size - 1
    assert changed.mean() < 0.06


def test_default_render_of_the_shipped_model_is_big_enough_to_see(tmp_path):
    inference.main(['--seeds', '0', '--output_dir', str(tmp_path), '--device', 'cpu'])
    grid = Image.open(tmp_path / 'grid_0.png')
    assert grid.size == (3 * view_jobs.DEMO_IMG_SIZE, view_jobs.DEMO_IMG_SIZE) and view_jobs.DEMO_IMG_SIZE >= 128


# --------------------------------------------------------------------------------------------------------
# eval.py: check early, keep the metrics, reuse the renders


def swd_folder(folder, count=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f'{index}.png')
    return folder


def count_renders(monkeypatch):
    calls = []
    original = runner.rand_sample

    def counted(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)
    monkeypatch.setattr(runner, 'rand_sample', counted)
    return calls


def test_a_mistyped_inception_path_fails_before_any_fake_is_rendered(tiny_ckpt, tmp_path, monkeypatch):
    calls = count_renders(monkeypatch)
    real = swd_folder(tmp_path / 'real')
    message = exit_message(eval_cli.main, ['--ckpt', tiny_ckpt, '--real_images_dir', real, '--num_fake', 3,
                                           '--metrics', 'fid', '--tmp_dir', tmp_path / 'cache', '--quiet',
                                           '--feature_extractor_weights', tmp_path / 'inceptoin.pth'])
    assert 'inceptoin.pth' in message and 'not found' in message
    assert calls == []


def test_unwritable_json_prints_the_metrics_and_a_retry_reuses_the_fakes(tiny_ckpt, tmp_path, monkeypatch, capsys):
    calls = count_renders(monkeypatch)
    real = swd_folder(tmp_path / 'real')
    output = tmp_path / 'result.json'
    argv = ['--ckpt', tiny_ckpt, '--real_images_dir', real, '--num_fake', 3, '--metrics', 'swd',
            '--tmp_dir', tmp_path / 'cache', '--output_json', output, '--quiet', '--device', 'cpu']
    write_json = runner._write_json

    def full_disk(payload, path):
        if os.fspath(path) == os.fspath(output):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_json(payload, path)
    monkeypatch.setattr(runner, '_write_json', full_disk)
    message = exit_message(eval_cli.main, argv)
    assert message == f"error: the metrics above were not saved: cannot write {output}: No space left on device"
    printed = capsys.readouterr().out
    assert 'SWD x1e3:' in printed and calls == [0, 1, 2]

    monkeypatch.setattr(runner, '_write_json', write_json)
    del calls[:]
    result = eval_cli.run([str(a) for a in argv])  # the retry: same fakes, not rendered again
    assert calls == [] and json.loads(output.read_text())['swd']['mean'] == result['swd']['mean']

    fake_dir = os.path.dirname(result['protocol']['swd']['fake_source'].rstrip('/') + '/x')
    with open(os.path.join(fake_dir, '00001.png'), 'r+b') as stream:  # a damaged render is never trusted
        stream.truncate(10)
    eval_cli.run([str(a) for a in argv])
    assert calls == [0, 1, 2]


# --------------------------------------------------------------------------------------------------------
# Synthetic preprocessing into an existing folder


def synthetic(folder, *extra):
    return preprocess_dataset.main(['--cate', 'synthetic', '--output_dir', str(folder), '--workers', '1',
                                    '--size', '16', '--num_images', '2', '--seed', '0'] + [str(a) for a in extra])


def test_synthetic_folder_records_its_settings_and_refuses_others(tmp_path, capsys):
    folder = tmp_path / 'heads'
    assert synthetic(folder) == 0
    manifest = json.loads((folder / 'manifest.json').read_text())
    assert {key: manifest[key] for key in ('category', 'size', 'seed', 'count')} == \
        {'category': 'synthetic', 'size': 16, 'seed': 0, 'count': 2} and 'version' in manifest
    before = {name: (folder / name).read_bytes() for name in ('00000.png', '00001.png')}
    for extra, fragment in ((['--size', 32], 'size 16 (now 32)'), (['--seed', 3], 'seed 0 (now 3)'),
                            (['--num_images', 1], 'made with 2 images')):
        message = exit_message(lambda argv: synthetic(folder, *argv), extra)
        assert message.startswith(f"error: {folder}") and fragment in message and 'new --output_dir' in message
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(folder)) == ['00000.png', '00001.png', 'manifest.json', 'poses']

    capsys.readouterr()
    assert synthetic(folder, '--num_images', 3) == 0  # same settings, more images: it continues
    assert 'synthetic: 1 images written, 2 already there' in capsys.readouterr().out
    assert {name: (folder / name).read_bytes() for name in before} == before and (folder / '00002.png').is_file()


def test_synthetic_refuses_a_folder_of_someone_elses_images(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    Image.new('RGB', (16, 16), (1, 2, 3)).save(folder / '00000.png')
    before = (folder / '00000.png').read_bytes()
    message = exit_message(lambda argv: synthetic(folder, *argv), ['--overwrite'])
    assert 'no manifest.json' in message and 'new --output_dir' in message
    assert (folder / '00000.png').read_bytes() == before and sorted(os.listdir(folder)) == ['00000.png']


# --------------------------------------------------------------------------------------------------------
# A bad training image: one line, from the first check or from a data-loader worker


def posed_folder(root, count, broken=()):
    rng = np.random.default_rng(0)
    (root / 'poses').mkdir(parents=True)
    for index in range(count):
        path = root / f'{index:05d}.png'
        if index in broken:
            path.write_bytes(b'\x89PNG\r\n\x1a\n not really')
        else:
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        scipy.io.savemat(root / 'poses' / f'{index:05d}.mat', {'angle': rng.normal(0, 0.1, (1, 3))})
    return root


def test_an_unreadable_first_image_stops_training_before_any_model_work(tmp_path, monkeypatch):
    import training.loop

    data = posed_folder(tmp_path / 'data', 4, broken={0})
    monkeypatch.setattr(training.loop, 'build_training_run', lambda *a, **k: pytest.fail('built a model first'))
    message = exit_message(train_script.main, ['--config', 'TINY_GRAM', '--data_dir', data, '--output_dir',
                                               tmp_path / 'out', '--num_workers', '0'])
    assert message.startswith(f"error: cannot read image {data / '00000.png'}")


def test_a_worker_error_is_unwrapped_to_its_own_line(tmp_path):
    from datasets import DatasetError

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise DatasetError(f"cannot read image {tmp_path}/00001.png: broken data stream. Delete it.")

    loader = torch.utils.data.DataLoader(Broken(), batch_size=2, num_workers=1)
    with pytest.raises(DatasetError) as caught:
        next(iter(loader))
    assert 'DataLoader worker' in str(caught.value)  # what torch hands over: the worker's whole traceback
    assert error_line(caught.value) == f"cannot read image {tmp_path}/00001.png: broken data stream. Delete it."


def test_training_reports_a_bad_image_found_by_a_worker_in_one_line(tmp_path):
    # Only the first and last images are checked up front; the first batch holds a broken one.
    data = posed_folder(tmp_path / 'data', 6, broken={1, 2, 3, 4})
    message = exit_message(train_script.main, ['--config', 'TINY_GRAM', '--data_dir', data, '--output_dir',
                                               tmp_path / 'out', '--num_workers', '1', '--total_step', '4',
                                               '--save_interval', '100', '--sample_interval', '100'])
    assert message.startswith(f"error: cannot read image {data}{os.sep}0000")
    assert message.endswith('Delete or replace it (and its pose file), then resume.')
    assert 'Caught' not in message and 'worker' not in message
