"""Metrics of a GRAM-HD model: the cross-resolution PSNR (eval.py --metrics cross_resolution) and the depth
metric scoring its frozen GRAM part (the same numbers as the stage-1 model it was built on)."""
import json
import math

import pytest
import torch

import eval as eval_cli
from configs import get_config
from evaluation import cross_resolution, geometry
from generators import build_generator
from generators.gramhd import stage1_config
from utils.checkpoints import atomic_save, make_checkpoint

pytestmark = pytest.mark.usefixtures('one_thread')


class ConstantHD:
    """A stand-in GRAM-HD generator whose HR image is a constant colour and whose LR image is that colour
    plus `offset` (in [-1, 1] units): bicubic down-sampling keeps a constant, so the MSE is (offset / 2)^2."""
    is_hd = True
    z_dim, img_size, lr_img_size, scale_factor = 4, 16, 4, 4
    prior = {'h_mean': math.pi / 2, 'v_mean': math.pi / 2}

    def __init__(self, offset):
        self.offset = offset

    def render(self, z, pitch, yaw, truncation_psi=1.0, lock_view_dependence=False, return_lr=False):
        colour = torch.linspace(-0.5, 0.5, z.shape[0]).reshape(-1, 1, 1, 1)
        return colour.expand(-1, 3, 16, 16), (colour + self.offset).expand(-1, 3, 4, 4)


def test_cross_resolution_psnr_is_that_of_the_down_sampled_hr_image():
    exact = cross_resolution.evaluate_cross_resolution(ConstantHD(0.0), seeds=[0, 1], num_views=3)
    assert exact['psnr_mean'] == 100.0 and exact['l1_mean'] == 0
    off = cross_resolution.evaluate_cross_resolution(ConstantHD(0.1), seeds=[0, 1, 2], num_views=3)
    assert off['psnr_mean'] == pytest.approx(10 * math.log10(1 / 0.05 ** 2), abs=1e-3)  # 26.02 dB
    assert off['l1_mean'] == pytest.approx(0.05, abs=1e-6) and off['protocol']['num_seeds'] == 3


def test_cross_resolution_refuses_a_single_resolution_generator():
    with pytest.raises(ValueError, match='GRAM-HD'):
        cross_resolution.evaluate_cross_resolution(build_generator('TINY_GRAM'), seeds=[0])


@pytest.fixture(scope='module')
def hd_and_stage1():
    """A TINY_GRAMHD generator built on a (random) stage-1 GRAM, and that stage-1 GRAM."""
    torch.manual_seed(1)
    config = get_config('TINY_GRAMHD')
    stage1 = build_generator(stage1_config(config)).eval()
    hd = build_generator(config)
    hd.load_gram_weights(stage1)
    return hd.eval(), stage1


def test_depth_metric_of_an_hd_model_is_its_stage1_gram(hd_and_stage1):
    hd, stage1 = hd_and_stage1
    ours, theirs = geometry.evaluate_geometry(hd, num=2, size=8), geometry.evaluate_geometry(stage1, num=2, size=8)
    assert ours['generated'] == theirs['generated'] and ours['protocol']['image_size'] == 8
    # A GRAM part that stage 2 had changed would show.
    with torch.no_grad():
        next(p for n, p in hd.named_parameters() if 'output_sigma' in n and n.endswith('bias')).add_(5.0)
    try:
        changed = geometry.evaluate_geometry(hd, num=2, size=8)
    finally:
        with torch.no_grad():
            next(p for n, p in hd.named_parameters() if 'output_sigma' in n and n.endswith('bias')).sub_(5.0)
    assert changed['generated'] != theirs['generated']


def test_cross_resolution_from_the_command_line(hd_and_stage1, tiny_ckpt, tmp_path, capsys):
    hd, _ = hd_and_stage1
    path = tmp_path / 'tiny_hd.pt'
    atomic_save(make_checkpoint('generator', get_config('TINY_GRAMHD'), 0, {'state_dict': hd.state_dict()},
                                'TINY_GRAMHD'), path)
    output = tmp_path / 'cross.json'
    eval_cli.run(['--ckpt', str(path), '--metrics', 'cross_resolution,depth', '--consistency_seeds', '0-1',
                  '--consistency_views', '2', '--depth_num', '2', '--depth_size', '8', '--device', 'cpu',
                  '--tmp_dir', str(tmp_path / 'cache'), '--output_json', str(output), '--quiet'])
    printed = capsys.readouterr().out
    assert 'cross-resolution: PSNR' in printed and 'HR 64^2 down-sampled x4 vs LR' in printed
    result = json.loads(output.read_text())
    scores = result['cross_resolution']
    assert [s['seed'] for s in scores['per_seed']] == [0, 1] and 0 < scores['psnr_mean'] < 100
    assert result['depth']['protocol']['image_size'] == 8
    with pytest.raises(SystemExit, match='cross_resolution: .*GRAM-HD'):
        eval_cli.run(['--ckpt', str(tiny_ckpt), '--metrics', 'cross_resolution', '--device', 'cpu',
                      '--tmp_dir', str(tmp_path / 'cache'), '--quiet'])


def test_consistency_renders_at_the_size_asked(tiny_ckpt, tmp_path):
    result = eval_cli.run(['--ckpt', str(tiny_ckpt), '--metrics', 'consistency', '--consistency_seeds', '0',
                           '--consistency_views', '2', '--consistency_size', '24', '--device', 'cpu',
                           '--tmp_dir', str(tmp_path / 'cache'), '--output_json', str(tmp_path / 'c.json'),
                           '--quiet'])
    assert result['consistency']['protocol']['image_size'] == 24
