"""Issue 16 (files): outputs follow the umask, stale temporary files of killed writers are removed (and
nothing else), checkpoints carry a checksum that catches flipped bits, resuming skips damaged sets, and a
full disk is reported as one line that leaves the previous checkpoint intact."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import configs
import preprocess_dataset
from training.checkpointing import has_checkpoint, latest_paths, resume, save_checkpoint, step_paths
from training.logs import write_options
from training.state import build_training_run
from utils import atomic
from utils.atomic import DiskWriteError, atomic_open, remove_stale_temp_files, temp_name_for
from utils.checkpoints import CheckpointError, atomic_save, load_file, make_checkpoint
from utils.images import save_gif, save_png, save_video

pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_config():
    config = configs.get_config('TINY_GRAM')
    config['discriminator']['kwargs'] = {'img_size': 16, 'max_channels': 32}
    return config


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def write_every_kind(folder):
    """One file through each writer that renames a temporary file into place; returns their paths."""
    image = np.zeros((8, 8, 3), np.uint8)
    paths = {name: os.path.join(folder, name) for name in
             ('a.png', 'a.gif', 'a.mp4', 'ckpt.pth', 'dataset.png', 'eval.json')}
    save_png(image, paths['a.png'])
    save_gif([image, image], paths['a.gif'])
    save_video([image] * 2, paths['a.mp4'], fps=2)
    atomic_save(make_checkpoint('generator', {}, 0, {'state_dict': {'w': torch.ones(2)}}), paths['ckpt.pth'])
    preprocess_dataset.save_png(Image.fromarray(image), paths['dataset.png'])
    with atomic_open(paths['eval.json'], 'w') as stream:
        json.dump({'fid': 1.0}, stream)
    write_options(folder, {}, 'X', {}, 1, 0)
    paths['options.json'] = os.path.join(folder, 'options.json')
    return paths


def test_written_files_follow_the_umask_like_open(tmp_path, umask):
    for mask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        umask(mask)
        folder = tmp_path / f'mask{mask:03o}'
        for name, path in write_every_kind(str(folder)).items():
            assert mode(path) == expected, (name, oct(mode(path)), oct(mask))
        assert sorted(os.listdir(folder)) == sorted(write_every_kind(str(folder)))  # no temporary file left
    # A file the user restricted keeps its mode when it is rewritten, as with open(path, 'w').
    umask(0o022)
    target = tmp_path / 'kept.png'
    save_png(np.zeros((4, 4, 3), np.uint8), target)
    os.chmod(target, 0o640)
    save_png(np.ones((4, 4, 3), np.uint8), target)
    assert mode(target) == 0o640


def dead_pid():
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_only_stale_temporary_files_of_ours_are_removed(tmp_path):
    gone = dead_pid()
    stale = [f'.step000002_generator.pth.{gone}.0123abcd.partial', f'.grid_0.mp4.{gone}.89abcdef.partial.mp4',
             '.step000004_ema.pth.k2j4_x9a.tmp', '.tmp_ab12cd34.mp4', '.tmp_ab12cd34.partial', '.face.png.12345.partial']
    alive = [f'.generator.pth.{os.getpid()}.0123abcd.partial']  # a live writer's file stays
    users = ['.hidden', 'notes.tmp', '.notes.tmp', 'x.partial', '.tmp_notes.mp4', 'generator.pth', '.a.b.partial']
    for name in stale + alive + users:
        (tmp_path / name).write_bytes(b'x')
    assert remove_stale_temp_files(tmp_path) == len(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(alive + users)
    # our writer's names are the ones the sweep knows
    assert atomic.is_stale_temp_file(os.path.basename(temp_name_for(tmp_path / 'x.pth'))) is False
    assert os.path.basename(temp_name_for(tmp_path / 'v.mp4', keep_extension=True)).endswith('.partial.mp4')


def test_first_write_into_a_folder_removes_what_a_killed_writer_left(tmp_path):
    folder = tmp_path / 'renders'
    folder.mkdir()
    left = folder / f'.grid_3.mp4.{dead_pid()}.0011aabb.partial.mp4'
    left.write_bytes(b'half a video')
    save_png(np.zeros((4, 4, 3), np.uint8), folder / 'grid_0.png')
    assert sorted(os.listdir(folder)) == ['grid_0.png']


def find_and_flip(path, needle):
    data = bytearray(open(path, 'rb').read())
    at = data.find(needle)
    assert at >= 0
    data[at + 5] ^= 0x01
    open(path, 'wb').write(bytes(data))


def test_a_flipped_bit_in_a_checkpoint_is_reported(tmp_path):
    weights = torch.arange(256, dtype=torch.float32) + 0.5
    path = tmp_path / 'generator.pth'
    atomic_save(make_checkpoint('generator', {}, 3, {'state_dict': {'w': weights}}), path)
    assert torch.equal(load_file(path)['state_dict']['w'], weights)
    find_and_flip(path, weights.numpy().tobytes())
    with pytest.raises(CheckpointError, match=f'{path} is corrupt: its tensors do not match the sha256'):
        load_file(path)


def test_files_without_a_checksum_still_load(tmp_path):
    old = make_checkpoint('generator', {}, 3, {'state_dict': {'w': torch.ones(3)}})
    torch.save(old, tmp_path / 'old.pth')  # as written before checksums existed
    torch.save({'w': torch.ones(3)}, tmp_path / 'official.pth')  # official: a raw state_dict
    assert torch.equal(load_file(tmp_path / 'old.pth')['state_dict']['w'], torch.ones(3))
    assert torch.equal(load_file(tmp_path / 'official.pth')['w'], torch.ones(3))


@pytest.fixture
def saved_run(tmp_path):
    """Step sets 2 and 4 and the latest files at step 4, each set with different weights."""
    run = build_training_run(tiny_config(), 'TINY_GRAM')
    save_checkpoint(run, tmp_path, 2)
    with torch.no_grad():
        next(run.generator.parameters()).add_(1.0)
    save_checkpoint(run, tmp_path, 4)
    save_checkpoint(run, tmp_path, 4, latest=True)
    return run, str(tmp_path)


def corrupt(path):
    """Flip one bit inside the largest tensor of a checkpoint file."""
    payload = torch.load(path, weights_only=True)
    tensor = max(payload['state_dict'].values(), key=lambda t: t.numel() if torch.is_tensor(t) else 0)
    find_and_flip(path, tensor.numpy().tobytes()[:64])


def test_resume_skips_a_corrupt_latest_generator(saved_run, capsys):
    run, folder = saved_run
    corrupt(latest_paths(folder)['generator'])
    assert has_checkpoint(folder)
    fresh = build_training_run(tiny_config(), 'TINY_GRAM')
    resumed = resume(fresh, folder)
    assert resumed.step == 4 and 'step 000004 files' in resumed.label
    assert 'skipping the latest files' in capsys.readouterr().out
    assert torch.equal(next(fresh.generator.parameters()), next(run.generator.parameters()))
    # --set_step 4 uses the step-4 set, not the (damaged) rolling one
    assert resume(build_training_run(tiny_config(), 'TINY_GRAM'), folder, set_step=4).step == 4


def test_resume_falls_back_past_a_corrupt_step_set_and_set_step_says_what_to_do(saved_run, capsys):
    run, folder = saved_run
    corrupt(step_paths(folder, 4)['discriminator'])
    corrupt(latest_paths(folder)['discriminator'])
    resumed = resume(build_training_run(tiny_config(), 'TINY_GRAM'), folder)
    assert resumed.step == 2 and 'step 000002 files' in resumed.label
    path = step_paths(folder, 4)['discriminator']
    with pytest.raises(CheckpointError) as error:
        resume(build_training_run(tiny_config(), 'TINY_GRAM'), folder, set_step=4)
    message = str(error.value)
    assert f'{path} is corrupt' in message and 'resume from it with --set_step 2' in message
    assert '\n' not in message


def test_a_folder_of_damaged_sets_is_not_overwritten_by_a_fresh_start(saved_run):
    run, folder = saved_run
    for step in (2, 4):
        corrupt(step_paths(folder, step)['generator'])
    corrupt(latest_paths(folder)['generator'])
    assert has_checkpoint(folder)  # so train() resumes (and fails) instead of starting over at step 0
    with pytest.raises(CheckpointError, match='no intact checkpoint set in .*move the damaged files'):
        resume(build_training_run(tiny_config(), 'TINY_GRAM'), folder)


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(saved_run, monkeypatch):
    run, folder = saved_run
    before = {kind: open(path, 'rb').read() for kind, path in step_paths(folder, 4).items()}
    real_save = torch.save

    def disk_full(obj, stream):  # what torch's zip writer raises when write() comes up short
        stream.write(b'PK' + b'\0' * 100)
        raise RuntimeError('[enforce fail at inline_container.cc:603] . unexpected pos 128 vs 102')

    monkeypatch.setattr(torch, 'save', disk_full)
    monkeypatch.setattr(atomic.shutil, 'disk_usage', lambda folder: type('Usage', (), {'free': 4096})())
    with pytest.raises(DiskWriteError) as error:
        save_checkpoint(run, folder, 4)
    monkeypatch.setattr(torch, 'save', real_save)
    message = str(error.value)
    path = step_paths(folder, 4)['generator']
    assert message.startswith(f'cannot write {path}: ') and 'the disk may be full' in message
    assert '0.0 MiB free' in message and '\n' not in message
    assert {kind: open(path, 'rb').read() for kind, path in step_paths(folder, 4).items()} == before
    assert not [name for name in os.listdir(folder) if name.startswith('.') and 'partial' in name]
    assert load_file(path)['step'] == 4


def test_the_shipped_model_loads_and_our_writer_checksums_it(tmp_path):
    from inference import DEMO_CHECKPOINT

    shipped = load_file(DEMO_CHECKPOINT)
    copy = tmp_path / 'copy.pt'
    atomic_save(shipped, copy)
    again = load_file(copy)
    assert again['checksum']['algorithm'] == 'sha256'
    assert all(torch.equal(again['state_dict'][k], v) for k, v in shipped['state_dict'].items())
