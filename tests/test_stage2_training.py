"""GRAM-HD stage-2 training (SRGan3DProcess): a stage-1 checkpoint as the frozen GRAM, a few steps end to end,
frozen weights, resume, the consistency loss. TINY_GRAMHD (64x64 from 16x16 textures) on CPU."""
import json
import math
import os

import pytest
from conftest import posed_image_folder
import torch
from PIL import Image

import configs
from generators import build_generator
from generators.gramhd import stage1_config
from generators.super_resolution import bicubic_downsample
from training.checkpointing import KINDS, save_checkpoint, step_paths
from training.loop import PROCESS_STEPS, train
from training.sr_gan3d import consistency_loss
from training.sr_gan3d import train_step as sr_train_step
from training.state import build_training_run
from utils.checkpoints import load_file


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def data_folder(root, count=4, size=64):
    return posed_image_folder(root, count, size)


def stage1_checkpoint(folder, step=5):
    """A stage-1 checkpoint of TINY_GRAMHD's GRAM part whose EMA differs from the raw weights."""
    config = stage1_config(configs.get_config('TINY_GRAMHD'))
    config['process'] = configs.get_config('TINY_GRAM')['process']
    config['discriminator'] = {'class': 'GramEncoderDiscriminator', 'kwargs': {'img_size': 16, 'max_channels': 16}}
    run = build_training_run(config, None, seed=3)
    with torch.no_grad():
        for shadow in run.ema.shadow:
            shadow.add_(0.01)
    run.ema.num_updates = 7
    save_checkpoint(run, str(folder), step)
    return step_paths(str(folder), step), run


def stage2_config(gram_model_file):
    config = configs.get_config('TINY_GRAMHD')
    config['generator']['kwargs']['gram_model_file'] = gram_model_file
    # The official ladder gives 400 channels at 64x64 (15M parameters); the test needs far less.
    config['discriminator']['kwargs']['max_channels'] = 32
    return config


def options(data_dir, output_dir, **overrides):
    base = dict(data_dir=data_dir, output_dir=str(output_dir), total_step=2, save_interval=2, sample_interval=1000,
                num_workers=0)
    base.update(overrides)
    return base


def is_gram(name):
    return name.startswith('representation.') and '.output_feature.' not in name


def test_consistency_loss_zero_for_consistent_outputs():
    torch.manual_seed(0)
    hr_images, hr_maps = torch.randn(2, 3, 32, 32), torch.rand(6, 4, 32, 32)
    lr_images, lr_maps = bicubic_downsample(hr_images, 4), bicubic_downsample(hr_maps, 4)
    image_term, maps_term = consistency_loss(hr_images, lr_images, hr_maps, lr_maps, 4, 3.0)
    assert image_term.item() == 0 and maps_term.item() == 0
    # A constant image up-sampled by any factor is consistent with itself (the kernel sums to 1).
    lr_images, lr_maps = torch.rand(2, 3, 1, 1).expand(2, 3, 8, 8), torch.rand(3, 4, 1, 1).expand(3, 4, 8, 8)
    upsample = lambda x: x.repeat_interleave(4, 2).repeat_interleave(4, 3)  # noqa: E731
    image_term, maps_term = consistency_loss(upsample(lr_images), lr_images, upsample(lr_maps), lr_maps, 4, 1.0)
    assert image_term.item() < 1e-10 and maps_term.item() < 1e-10
    # An offset of the LR target by d costs cons_lambda * d^2 per term; only the HR side gets gradients.
    lr_images, lr_maps = bicubic_downsample(hr_images, 4), bicubic_downsample(hr_maps, 4)
    hr_images.requires_grad_(True)
    image_term, maps_term = consistency_loss(hr_images, lr_images + 0.1, hr_maps, lr_maps - 0.2, 4, 3.0)
    assert image_term.item() == pytest.approx(3.0 * 0.01, rel=1e-4)
    assert maps_term.item() == pytest.approx(3.0 * 0.04, rel=1e-4)
    image_term.backward()
    assert hr_images.grad is not None and hr_images.grad.abs().sum() > 0


def test_stage2_loads_the_stage1_ema_and_trains_only_features_and_sr(tmp_path):
    paths, stage1 = stage1_checkpoint(tmp_path / 'stage1')
    config = stage2_config(paths['generator'])
    run = build_training_run(config, 'TINY_GRAMHD')
    # The GRAM part holds the stage-1 EMA(0.999) weights, not the raw ones, and is frozen.
    gram = {name: p for name, p in run.generator.named_parameters() if is_gram(name)}
    ema = dict(zip(stage1.ema.names, stage1.ema.shadow))
    assert gram and all(torch.equal(p, ema[name]) for name, p in gram.items())
    assert not any(p.requires_grad for p in gram.values())
    trainable = [name for name, p in run.generator.named_parameters() if p.requires_grad]
    assert all('.output_feature.' in n or n.startswith('super_resolution') for n in trainable)
    assert len(run.ema.shadow) == len(trainable) == sum(len(g['params']) for g in run.optimizer_G.param_groups)

    before = {k: v.clone() for k, v in run.generator.state_dict().items()}
    data = torch.rand(2, 3, 64, 64) * 2 - 1
    poses = torch.tensor([[math.pi / 2, math.pi / 2]] * 2)
    values = sr_train_step(run, data, poses, 0)
    for key in ('d_loss', 'd_real', 'd_fake', 'd_patch_real', 'd_patch_fake', 'r1', 'd_pose_fake', 'd_pose_real',
                'g_loss', 'g_adv', 'g_patch', 'g_pose', 'g_cons_image', 'g_cons_maps'):
        assert math.isfinite(values[key]), key
    assert values['g_cons'] > 0 and values['r1'] > 0
    after = run.generator.state_dict()
    for name in before:
        if is_gram(name):
            assert torch.equal(before[name], after[name]), name  # bitwise unchanged
    changed = [name for name in trainable if not torch.equal(before[name], after[name])]
    assert any('.output_feature.' in n for n in changed)
    assert any(n.startswith('super_resolution.') for n in changed)
    assert any(n.startswith('super_resolution_bg.') for n in changed)


def test_stage2_train_writes_checkpoints_and_resumes(tmp_path):
    paths, _ = stage1_checkpoint(tmp_path / 'stage1')
    config = stage2_config(paths['generator'])
    data = data_folder(tmp_path / 'data')
    out = tmp_path / 'run'
    assert PROCESS_STEPS['SRGan3DProcess'] is sr_train_step
    assert train(config, options(data, out), config_name='TINY_GRAMHD') == 2
    for step in (0, 2):
        assert all(os.path.isfile(p) for p in step_paths(str(out), step).values())
    assert all((out / f'{kind}.pth').is_file() for kind in KINDS)
    assert Image.open(out / '000002_fixed.png').size == (320, 320)  # 5x5 grid of 64x64 HR images
    records = [json.loads(line) for line in open(out / 'scalars.jsonl')]
    records = [r for r in records if 'd_loss' in r]
    assert [r['step'] for r in records] == [1, 2]
    assert all(math.isfinite(r[k]) for r in records for k in ('d_loss', 'g_loss', 'g_cons', 'r1', 'd_patch_fake'))
    first = load_file(step_paths(str(out), 0)['generator'])['state_dict']
    second = load_file(step_paths(str(out), 2)['generator'])['state_dict']
    assert all(torch.equal(first[k], second[k]) for k in first if is_gram(k))
    assert any(not torch.equal(first[k], second[k]) for k in first if k.startswith('super_resolution.'))

    # Re-running with a larger total_step continues from step 2; without gram_model_file too (the GRAM
    # part comes from the run's own checkpoint).
    resumed_config = stage2_config(None)
    assert train(resumed_config, options(data, out, total_step=3), config_name='TINY_GRAMHD') == 3
    ema = load_file(step_paths(str(out), 3)['ema'])
    assert ema['num_updates'] == 3
    third = load_file(step_paths(str(out), 3)['generator'])['state_dict']
    assert all(torch.equal(first[k], third[k]) for k in first if is_gram(k))
    records = [json.loads(line) for line in open(out / 'scalars.jsonl')]
    assert [r['step'] for r in records if 'd_loss' in r] == [1, 2, 3]
    # The resumed generator renders: a stage-2 checkpoint loads as a GRAM-HD generator.
    assert build_generator(ema['config']).is_hd


def test_fresh_stage2_run_needs_the_stage1_file(tmp_path):
    data = data_folder(tmp_path / 'data')
    with pytest.raises(ValueError, match='gram_model_file'):
        train(stage2_config(None), options(data, tmp_path / 'run'), config_name='TINY_GRAMHD')


@pytest.mark.parametrize('case', ['no_stage1', 'missing_stage1', 'stage1_of_another_config', 'images_too_small'])
def test_stage2_bad_input_is_one_line_before_any_work(tmp_path, case, capsys):
    """train.py answers each way a stage-2 run cannot start with one line naming the file and the expected
    value, and leaves no output folder behind."""
    import train as train_script

    paths, _ = stage1_checkpoint(tmp_path / 'stage1')
    other = tmp_path / 'other_stage1'
    other_config = configs.get_config('TINY_GRAM')  # hidden_dim_sample 16 like TINY_GRAMHD, z_dim 32, ...
    other_config['generator']['representation']['kwargs']['hidden_dim'] = 16  # ... but a narrower radiance net
    save_checkpoint(build_training_run(other_config, None), str(other), 0)
    stage1_file = {'no_stage1': None, 'missing_stage1': str(tmp_path / 'nope' / 'step000005_generator.pth'),
                   'stage1_of_another_config': step_paths(str(other), 0)['generator']}.get(case, paths['generator'])
    data = data_folder(tmp_path / 'data', size=32 if case == 'images_too_small' else 64)
    out = tmp_path / 'run'
    arguments = ['--config', 'TINY_GRAMHD', '--data_dir', data, '--output_dir', str(out), '--total_step', '1',
                 '--num_workers', '0']
    if stage1_file:
        arguments += ['--gram_model_file', stage1_file]
    with pytest.raises(SystemExit) as stopped:
        train_script.main(arguments)
    message = str(stopped.value.code)
    assert message.startswith('error: ') and '\n' not in message
    expected = {'no_stage1': ['--gram_model_file', 'stepXXXXXX_generator.pth'],
                'missing_stage1': [stage1_file, 'does not exist'],
                'stage1_of_another_config': [stage1_file, 'hidden_dim = 16 there, expected 32'],
                'images_too_small': [os.path.join(data, '00000.png'), 'is 32x32', 'at least 64x64']}[case]
    assert all(part in message for part in expected), message
    assert not out.exists()
    assert 'Traceback' not in capsys.readouterr().err
