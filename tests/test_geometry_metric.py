"""The geometry metric (eval.py --metrics depth): true depth of the procedural heads, and scores that tell a
generator painting on the background plane from one with surfaces in front of it."""
import json

import pytest
import torch

import eval as eval_cli
import synthetic_data
from configs import get_config
from evaluation import geometry
from generators import build_generator


def test_true_depth_is_the_first_surface(one_thread):
    """Without a head every ray ends on the plane; with one sphere the centre ray ends on its front."""
    heads, _, _ = synthetic_data.heads_for_indices(101, range(1))
    size, pitch, yaw = 16, torch.tensor([torch.pi / 2], dtype=torch.float64), torch.tensor([torch.pi / 2],
                                                                                              dtype=torch.float64)
    far = {key: value for key, value in heads.items()}
    for part in synthetic_data.PARTS:  # every part far behind the camera: no hits
        center, radii = heads[part]
        far[part] = (center + torch.tensor([0.0, 0.0, 5.0]), radii)
    _, depth, plane_share = synthetic_data.render_heads(far, pitch, yaw, size, return_geometry=True)
    plane = geometry.plane_distance_map(float(pitch), float(yaw), size, synthetic_data.FOV)
    # the truth averages 2x2 supersampled rays per pixel (like its colours), the plane map uses pixel centres
    assert torch.allclose(depth, plane, atol=1e-3)
    assert torch.all(plane_share == 1)

    sphere = dict(heads)
    for part in synthetic_data.PARTS:  # every part the same sphere of radius 0.05 at the origin
        sphere[part] = (torch.zeros(1, 3), torch.full((1, 3), 0.05))
    _, depth, plane_share = synthetic_data.render_heads(sphere, pitch, yaw, size, return_geometry=True)
    centre = depth[0, 0, size // 2 - 1:size // 2 + 1, size // 2 - 1:size // 2 + 1]
    assert torch.allclose(centre, torch.full_like(centre, 0.95), atol=2e-3)  # camera at radius 1
    assert plane_share[0, 0, size // 2, size // 2] == 0
    assert plane_share[0, 0, 0, 0] == 1  # the corners see the plane


def hand_set_generator(sigma_bias):
    """A SYNTH_CPU generator whose density is set by hand through the σ-head biases: very negative makes
    every manifold transparent (the plane, drawn with GRAM's huge final delta, still paints the pixel);
    very positive makes the first manifold crossing opaque."""
    torch.manual_seed(0)
    generator = build_generator(get_config('SYNTH_CPU')).eval()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if 'output_sigma' in name and name.endswith('bias'):
                parameter.fill_(sigma_bias)
    return generator


@pytest.fixture(scope='module')
def scores():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {'plane': geometry.evaluate_geometry(hand_set_generator(-2.0), num=8, size=16),
                'front': geometry.evaluate_geometry(hand_set_generator(60.0), num=8, size=16)}
    finally:
        torch.set_num_threads(previous)


def test_a_plane_painter_scores_far_from_the_truth(scores):
    plane = scores['plane']
    plane_centre = float(geometry.central(geometry.plane_distance_map(torch.pi / 2, torch.pi / 2, 16, 12)).mean())
    frontal = plane['views']['frontal']
    assert frontal['generated']['plane_share'] > 0.99
    assert frontal['generated']['in_front'] < 0.01
    assert abs(frontal['generated']['central_depth'] - plane_centre) < 1e-3
    # the true heads: in front of the plane, about 0.98 from the camera
    assert frontal['truth']['in_front'] > 0.9 and frontal['truth']['plane_share'] < 0.1
    assert 0.95 < frontal['truth']['central_depth'] < 1.0
    assert plane['generated']['mean_map_mad'] > 0.1


def test_surfaces_in_front_of_the_plane_score_as_such(scores):
    front, plane = scores['front'], scores['plane']
    for view in front['views'].values():
        assert view['generated']['in_front'] > 0.99
        assert view['generated']['plane_share'] < 0.01
    # closer to the truth than the plane painter on both distances
    assert front['generated']['mean_map_mad'] < plane['generated']['mean_map_mad']
    assert front['generated']['depth_swd'] < plane['generated']['depth_swd']


def test_the_truth_against_itself_is_near_zero(scores, one_thread):
    """Two held-out sets of true heads: the distances are the floor a perfect generator would reach."""
    pitch, yaw = torch.pi / 2, torch.pi / 2
    depth_a, _ = geometry.true_geometry(101, 32, 16, pitch, yaw)
    depth_b, _ = geometry.true_geometry(102, 32, 16, pitch, yaw)
    floor = geometry.compare_sets(depth_a, depth_b)
    assert floor['mean_map_mad'] < 0.005
    assert floor['depth_swd'] < scores['plane']['generated']['depth_swd'] / 5


def test_eval_cli_depth(tiny_ckpt, tmp_path, capsys, one_thread):
    output = tmp_path / 'depth.json'
    eval_cli.main(['--ckpt', str(tiny_ckpt), '--metrics', 'depth', '--depth_num', '4', '--device', 'cpu',
                   '--output_json', str(output), '--quiet'])
    printed = capsys.readouterr().out
    assert 'depth frontal' in printed and 'in front of plane' in printed
    result = json.loads(output.read_text())
    assert set(result['depth']['views']) == {'frontal', 'yaw+0.3', 'yaw-0.3'}
    assert result['depth']['protocol']['num'] == 4
    assert result['depth']['protocol']['checkpoint']['path'].endswith('tiny.pt')


def test_depth_metric_refuses_other_cameras(one_thread):
    config = get_config('TINY_GRAM')
    config['camera']['fov'] = 30
    with pytest.raises(ValueError, match='fov 12 deg.*fov 30'):
        geometry.evaluate_geometry(build_generator(config), num=2, size=8)


def test_depth_metric_needs_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match='--metrics depth renders views with depth: pass --ckpt'):
        eval_cli.main(['--metrics', 'depth', '--tmp_dir', str(tmp_path)])
