"""The offline SWD metric orders distributions sensibly and rejects bad input."""
import numpy as np
import pytest
import torch

from evaluation.swd import laplacian_pyramid, swd
from synthetic_data import render_chunk


@pytest.fixture(scope='module')
def two_real_sets():
    a = torch.from_numpy(np.stack(render_chunk(0, 0, 48, 32)[0])).permute(0, 3, 1, 2)
    b = torch.from_numpy(np.stack(render_chunk(0, 48, 48, 32)[0])).permute(0, 3, 1, 2)
    return a, b


def test_pyramid_levels_reconstruct_the_image():
    images = torch.rand(2, 3, 32, 32) * 255
    levels = laplacian_pyramid(images)
    assert [level.shape[-1] for level in levels] == [32, 16]
    # the finest band carries the detail: it averages to ~0 while the image does not
    assert levels[0].mean().abs() < 2 and levels[1].mean() > 100


def test_swd_floor_is_below_degraded_sets(two_real_sets):
    a, b = two_real_sets
    floor = swd(a, b)['mean']
    assert swd(a, a)['mean'] < floor  # same images: only patch positions differ
    grey = torch.full_like(b, 128, dtype=torch.float32) + torch.randn(b.shape) * 8
    assert swd(grey, a)['mean'] > 3 * floor
    blurred = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(b.float(), 4), scale_factor=4)
    assert floor < swd(blurred, a)['mean'] < swd(grey, a)['mean']


def test_swd_is_deterministic(two_real_sets):
    a, b = two_real_sets
    assert swd(a, b) == swd(a, b)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match='one size'):
        swd(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match='power of two'):
        swd(torch.zeros(2, 3, 24, 24), torch.zeros(2, 3, 24, 24))


def test_eval_cli_reports_swd_with_its_protocol(tmp_path):
    import json

    import eval as eval_script
    import synthetic_data
    synthetic_data.write_synthetic_dataset(tmp_path / 'real', num_images=24, size=32, seed=0)
    synthetic_data.write_synthetic_dataset(tmp_path / 'fake', num_images=24, size=32, seed=1)
    result = eval_script.run(['--real_images_dir', str(tmp_path / 'real'), '--fake_images_dir',
                              str(tmp_path / 'fake'), '--metrics', 'swd', '--tmp_dir', str(tmp_path / 'cache'),
                              '--output_json', str(tmp_path / 'swd.json'), '--quiet', '--device', 'cpu'])
    saved = json.loads((tmp_path / 'swd.json').read_text())
    assert saved['swd']['mean'] == result['swd']['mean'] > 0
    assert set(saved['swd']['per_level']) == {'32', '16'}
    assert saved['protocol']['swd']['num_real'] == 24 and 'Laplacian' in saved['protocol']['swd']['definition']
