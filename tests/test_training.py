"""Training: a few steps end to end, exact resume after a kill, interrupted saves, official folders, patch_split,
R1, pose loss, EMA warm-up, two gloo processes, NaN stop, CLI errors. TINY_GRAM at 16x16, CPU."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import configs
import train as train_script
from generators import build_generator, load_generator
from training import checkpointing, gan3d
from training.checkpointing import KINDS, find_candidates, resume, save_checkpoint, step_paths
from training.ema import EMA
from training.launch import launch
from training.loop import PROCESS_STEPS, train
from training.losses import TrainingDiverged, pose_loss, r1_penalty
from training.state import build_training_run, generator_param_groups
from utils.checkpoints import CheckpointError, OfficialEMA, load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


# The official ladder gives 400 channels at 16x16 (6x the step time of everything else here).
DISCRIMINATOR_KWARGS = {'img_size': 16, 'max_channels': 32}


def tiny_config():
    config = configs.get_config('TINY_GRAM')
    config['discriminator']['kwargs'] = dict(DISCRIMINATOR_KWARGS)
    return config


def data_folder(root, count=8, without_pose=()):
    rng = np.random.default_rng(0)
    (root / 'poses').mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f'{i:05d}.png')
        if i not in without_pose:
            scipy.io.savemat(root / 'poses' / f'{i:05d}.mat', {'angle': rng.normal(0, 0.1, (1, 3))})
    return str(root)


def options(data_dir, output_dir, **overrides):
    base = dict(data_dir=data_dir, output_dir=str(output_dir), total_step=4, save_interval=2, sample_interval=1000,
                num_workers=0)
    base.update(overrides)
    return base


def scalar_records(output_dir):
    with open(os.path.join(output_dir, 'scalars.jsonl')) as stream:
        return [json.loads(line) for line in stream]


def same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_optimizer_state(a, b):
    return all(same_tensors(sa, sb) for sa, sb in zip(a['state'].values(), b['state'].values()))


def assert_same_checkpoint(folder_a, folder_b, step):
    for kind in KINDS:
        a = load_file(step_paths(folder_a, step)[kind])
        b = load_file(step_paths(folder_b, step)[kind])
        if kind.startswith('optimizer'):
            assert same_optimizer_state(a['state_dict'], b['state_dict']), kind
        elif kind != 'scaler':
            assert same_tensors(a['state_dict'], b['state_dict']), kind


def test_few_steps_write_all_outputs(tmp_path):
    data = data_folder(tmp_path / 'data', without_pose=(3,))
    out = tmp_path / 'run'
    with pytest.warns(UserWarning, match=r'1 of 8 images .* skipped .*00003\.png'):
        assert train(tiny_config(), options(data, out, total_step=3, sample_interval=2), config_name='TINY_GRAM') == 3
    records = [r for r in scalar_records(out) if 'd_loss' in r]
    assert [r['step'] for r in records] == [1, 2, 3]
    for record in records:
        for key in ('d_loss', 'g_loss', 'r1', 'd_real', 'd_fake', 'd_pose_fake', 'd_pose_real', 'g_adv', 'g_pose'):
            assert math.isfinite(record[key]), key
    for step in (0, 2, 3):  # every save_interval, and the final step
        assert all(os.path.isfile(p) for p in step_paths(out, step).values())
        assert load_file(step_paths(out, step)['generator'])['step'] == step
    assert not os.path.exists(step_paths(out, 1)['generator'])
    assert all((out / f'{kind}.pth').is_file() for kind in KINDS)  # latest files
    for name in ('000000_fixed.png', '000002_tilted.png', '000003_fixed.png'):
        assert Image.open(out / name).size == (80, 80)  # 5x5 grid of 16x16
    saved = json.loads((out / 'options.json').read_text())
    assert saved['config_name'] == 'TINY_GRAM' and saved['options']['total_step'] == 3
    # A generator file renders with the EMA weights of its sibling; EMA files load as generators.
    ema = load_file(step_paths(out, 3)['ema'])
    assert ema['kind'] == 'ema' and ema['num_updates'] == 3 and ema['decay'] == 0.999
    assert same_tensors(load_generator(step_paths(out, 3)['generator']).state_dict(), ema['state_dict'])
    assert load_generator(step_paths(out, 3)['ema2']).img_size == 16


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    data = data_folder(tmp_path / 'data')
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    train(tiny_config(), options(data, straight), config_name='TINY_GRAM')

    # The same run in another process, killed (SIGKILL) once its step-2 checkpoint is complete.
    code = (f"import sys, torch; sys.path.insert(0, {REPO!r}); torch.set_num_threads(1)\n"
            "import configs\n"
            "from training.loop import train\n"
            f"config = configs.get_config('TINY_GRAM'); config['discriminator']['kwargs'] = {DISCRIMINATOR_KWARGS!r}\n"
            f"train(config, {options(data, killed, total_step=1000)!r}, config_name='TINY_GRAM')\n")
    log = open(tmp_path / 'killed.log', 'w')
    process = subprocess.Popen([sys.executable, '-c', code], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                               env=dict(os.environ, OMP_NUM_THREADS='1'))
    deadline = time.time() + 120
    while not all(os.path.isfile(p) for p in step_paths(killed, 2).values()):
        assert process.poll() is None, (tmp_path / 'killed.log').read_text()
        assert time.time() < deadline, 'the step-2 checkpoint never appeared'
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()

    train(tiny_config(), options(data, killed, set_step=2), config_name='TINY_GRAM')  # resumes from --output_dir
    assert_same_checkpoint(straight, killed, 4)


def test_interrupted_save_is_skipped(tmp_path, monkeypatch, capsys):
    run = build_training_run(tiny_config(), 'TINY_GRAM')
    save_checkpoint(run, tmp_path, 2)
    save_checkpoint(run, tmp_path, 2, latest=True)
    written = []
    real_save = checkpointing.atomic_save

    def killed_after_three(obj, path):
        if len(written) == 3:
            raise KeyboardInterrupt('killed')
        written.append(path)
        real_save(obj, path)

    monkeypatch.setattr(checkpointing, 'atomic_save', killed_after_three)
    with torch.no_grad():
        next(run.generator.parameters()).add_(1.0)
    for latest in (False, True):  # step-4 files: 3 of 7; latest files: 3 at step 4, 4 still at step 2
        written.clear()
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(run, tmp_path, 4, latest=latest)
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
    candidates, incomplete = find_candidates(str(tmp_path))
    assert incomplete == [4] and [c.step for c in candidates] == [4, 2]  # the mixed latest set claims 4

    fresh = build_training_run(tiny_config(), 'TINY_GRAM')
    resumed = resume(fresh, str(tmp_path))
    assert resumed.step == 2 and 'step 000002 files' in resumed.label
    assert 'skipping the latest files' in capsys.readouterr().out
    assert not torch.equal(next(fresh.generator.parameters()), next(run.generator.parameters()))
    with pytest.raises(CheckpointError, match=r'no complete checkpoint of step 4 .* incomplete .*: \[4\]'):
        resume(fresh, str(tmp_path), set_step=4)


def save_official_folder(run, folder, step):
    """The files of an official training folder: raw state_dicts and torch_ema pickles."""
    module = types.ModuleType('torch_ema.ema')
    module.ExponentialMovingAverage = OfficialEMA  # pickle looks the class up by its official name
    sys.modules['torch_ema'], sys.modules['torch_ema.ema'] = types.ModuleType('torch_ema'), module
    try:
        for kind, ema in (('ema', run.ema), ('ema2', run.ema2)):
            official = OfficialEMA()
            official.__dict__.update(decay=ema.decay, num_updates=7, shadow_params=[t + 0.5 for t in ema.shadow],
                                     collected_params=[])
            torch.save(official, os.path.join(folder, f'step{step:06d}_{kind}.pth'))
    finally:
        del sys.modules['torch_ema'], sys.modules['torch_ema.ema']
    for kind, state in (('generator', run.generator.state_dict()), ('discriminator', run.discriminator.state_dict()),
                        ('optimizer_G', run.optimizer_G.state_dict()), ('optimizer_D', run.optimizer_D.state_dict()),
                        ('scaler', {'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5,
                                    'growth_interval': 2000, '_growth_tracker': 3})):
        torch.save(state, os.path.join(folder, f'step{step:06d}_{kind}.pth'))


def test_resume_from_official_training_folder(tmp_path):
    official_dir = tmp_path / 'official'
    official_dir.mkdir()
    torch.manual_seed(1)
    source = build_training_run(tiny_config(), 'TINY_GRAM', seed=1)
    save_official_folder(source, str(official_dir), 5000)
    data = data_folder(tmp_path / 'data')
    out = tmp_path / 'run'
    assert train(tiny_config(), options(data, out, load_dir=str(official_dir), total_step=5001),
                 config_name='TINY_GRAM') == 5001
    ema = load_file(out / 'step005001_ema.pth')
    assert ema['num_updates'] == 8  # 7 official updates + 1
    first = load_file(step_paths(out, 5001)['generator'])['state_dict']
    assert first.keys() == source.generator.state_dict().keys()


@pytest.mark.parametrize('patch_split', [3, 5])
def test_patch_split_gives_the_full_image_gradient(patch_split):
    run = build_training_run(tiny_config(), 'TINY_GRAM', patch_split=patch_split)
    rng = torch.Generator().manual_seed(1)
    z = torch.randn(2, run.generator.z_dim, generator=rng)
    pitch, yaw = run.generator.sample_poses(2, 'cpu', generator=rng)
    grads = []
    with gan3d.frozen(run.discriminator):
        for chunk in (gan3d._generator_chunk, gan3d._generator_chunk_patchwise):
            run.generator.zero_grad(set_to_none=True)
            chunk(run, z, pitch, yaw, step=0)
            grads.append([p.grad.clone() for p in run.generator.parameters()])
    # Same per-pixel inputs and values; only float32 summation order differs (per strip vs one pass, and
    # matmuls over fewer rows). Measured worst case ~3e-6 of each tensor's largest entry at P <= 7.
    for full, patched in zip(*grads):
        torch.testing.assert_close(patched, full, rtol=1e-4, atol=1e-4 * full.abs().max().item())


def test_r1_matches_hand_computed_values():
    gamma = 1.0
    images = torch.randn(3, 3, 4, 4, requires_grad=True)
    weight = torch.randn(48, requires_grad=True)
    logits = images.flatten(1) @ weight + 0.3  # tiny linear D: d logit_b / d x_b = w for every b
    penalty = r1_penalty(logits, images, gamma)
    assert penalty.item() == pytest.approx(0.5 * gamma * weight.pow(2).sum().item(), rel=1e-6)
    (weight_grad,) = torch.autograd.grad(penalty, weight)  # differentiable (create_graph)
    torch.testing.assert_close(weight_grad, gamma * weight.detach())

    a = 0.7  # quadratic D: d logit_b / d x_b = 2 a x_b
    logits = a * images.pow(2).flatten(1).sum(1)
    expected = 0.5 * 10.0 * (4 * a * a * images.detach().pow(2).flatten(1).sum(1)).mean()
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 14)  # AMP path: scaled grad, unscaled back
    assert r1_penalty(logits, images, 10.0, scaler).item() == pytest.approx(expected.item(), rel=1e-6)
    assert r1_penalty(logits, images, 10.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_pose_loss_sign_and_scale():
    target = torch.tensor([[1.5, 1.2], [1.6, 2.0]])
    assert pose_loss(target, target).item() == 0
    predicted = target + torch.tensor([[0.1, -0.2], [0.0, 0.3]])
    predicted.requires_grad_(True)
    loss = pose_loss(predicted, target)
    assert loss.item() == pytest.approx((0.01 + 0.04 + 0 + 0.09) / 4)
    loss.backward()
    with torch.no_grad():  # a gradient-descent step moves the prediction towards the true pose
        assert pose_loss(predicted - 0.5 * predicted.grad, target).item() < loss.item()
    # D's pose target for a flipped real is the mirrored yaw, pi - yaw (datasets.mirrored_yaw).
    from datasets import mirrored_yaw
    assert mirrored_yaw(math.pi / 2 + 0.3) == pytest.approx(math.pi / 2 - 0.3)


def test_sampling_network_gets_its_own_learning_rate():
    config = configs.get_config('TINY_CARLA')  # sampling_network_lr 2e-6 as CARLA_default
    generator = build_generator(config)
    groups = generator_param_groups(generator, config['optimizer'])
    assert [(g['name'], g['lr']) for g in groups] == [('sampling_network', 2e-6), ('generator', 2e-5)]
    sample_network = list(generator.representation.sample_network.parameters())
    assert len(groups[0]['params']) == len(sample_network) == 8
    assert all(a is b for a, b in zip(groups[0]['params'], sample_network))
    assert len(groups[0]['params']) + len(groups[1]['params']) == len(list(generator.parameters()))
    assert len(generator_param_groups(generator, configs.get_config('TINY_GRAM')['optimizer'])) == 1


def test_ema_warm_up_rule():
    module = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = EMA(module, 0.999)
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema.update(module)  # n = 1: decay min(0.999, 2/11)
    assert ema.shadow[0].item() == pytest.approx(1 - 2 / 11)
    ema.update(module)  # n = 2: decay 3/12
    assert ema.shadow[0].item() == pytest.approx(1 - 0.25 * 2 / 11)
    ema.num_updates = 10 ** 6
    assert ema.effective_decay() == 0.999


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    data = data_folder(tmp_path / 'data')
    out = tmp_path / 'run'
    launch(tiny_config(), options(data, out, total_step=2, cpu_processes=2, port=free_port()),
           config_name='TINY_GRAM')
    fingerprints = [r for r in scalar_records(out) if 'rank_fingerprints' in r]
    assert [r['step'] for r in fingerprints] == [0, 2]
    for record in fingerprints:  # G, D and both EMAs hashed on each rank (the check raises on a mismatch)
        assert len(record['rank_fingerprints']) == 2 and len(set(record['rank_fingerprints'])) == 1
    assert fingerprints[0]['rank_fingerprints'] != fingerprints[1]['rank_fingerprints']  # it trained
    assert all(os.path.isfile(p) for p in step_paths(out, 2).values())


def test_nan_loss_stops_without_overwriting_the_last_checkpoint(tmp_path, monkeypatch):
    data = data_folder(tmp_path / 'data')
    out = tmp_path / 'run'
    real_step = PROCESS_STEPS['Gan3DProcess']

    def poisoned(run, real_images, real_poses, step):
        if step == 3:
            real_poses = torch.full_like(real_poses, float('nan'))
        return real_step(run, real_images, real_poses, step)

    monkeypatch.setitem(PROCESS_STEPS, 'Gan3DProcess', poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 3: discriminator loss term 'd_pose_real' is nan"):
        train(tiny_config(), options(data, out, total_step=6, sample_interval=2), config_name='TINY_GRAM')
    candidates, incomplete = find_candidates(str(out))
    assert [c.step for c in candidates] == [2, 2, 0] and not incomplete  # latest + step files of step 2


def test_cli_reports_bad_config_and_data(tmp_path):
    with pytest.raises(SystemExit, match="unknown config 'NOPE'"):
        train_script.main(['--config', 'NOPE', '--data_dir', str(tmp_path)])
    with pytest.raises(SystemExit, match=f'error: no images .* directly in {tmp_path}'):
        train_script.main(['--config', 'TINY_GRAM', '--data_dir', str(tmp_path), '--output_dir', str(tmp_path / 'o')])
    with pytest.raises(SystemExit, match='patch_split must be between 1 and 256'):
        train_script.main(['--config', 'TINY_GRAM', '--data_dir', str(tmp_path), '--patch_split', '300',
                           '--output_dir', str(tmp_path / 'o')])


def test_training_benchmark_reports_figures():
    import bench_train

    result = bench_train.benchmark('TINY_GRAM', iterations=1, batch_size=2, patch_split=2)
    assert result['seconds_per_iteration'] > 0 and result['peak_memory_mb'] > 0 and result['patch_split'] == 2


def test_training_benchmark_compares_training_paths(tmp_path, one_thread):
    import bench_train

    result = bench_train.main(['--config', 'TINY_GRAM', '--iterations', '1', '--training_path', 'plain',
                               '--json', str(tmp_path / 'plain.json')])
    assert result['training_path'] == 'plain' and result['peak_above_start_mb'] >= 0
    assert json.loads((tmp_path / 'plain.json').read_text())['training_path'] == 'plain'
    saved = {path: bench_train.saved_activation_bytes('TINY_GRAM', path, strips=2)['saved_for_backward_mb']
             for path in ('plain', 'fast', 'low_memory')}
    assert saved['plain'] > saved['fast'] > saved['low_memory'] > 0
