"""Configs, official state_dict layouts, checkpoint loading rules and the restricted unpickler."""
import os
import sys
import types

import pytest
import torch

import configs
from generators import build_generator, load_generator
from utils.checkpoints import (CheckpointError, OfficialEMA, atomic_save, load_file, make_checkpoint)


def test_get_config_returns_independent_copies():
    first = configs.get_config('FFHQ_default')
    first['camera']['fov'] = 99
    assert configs.get_config('FFHQ_default')['camera']['fov'] == 12


def test_unknown_config_lists_the_known_names():
    with pytest.raises(KeyError) as error:
        configs.get_config('FFHQ_defualt')
    assert 'FFHQ_default' in str(error.value) and 'GRAMHD1024_FFHQ' in str(error.value)


@pytest.mark.parametrize('name, count', [('FFHQ_default', 1950621), ('CATS_default', 1925597),
                                         ('CARLA_default', 2049821), ('GRAM64_FFHQ', 1950621)])
def test_official_parameter_counts(name, count):
    generator = build_generator(name)
    assert sum(p.numel() for p in generator.parameters()) == count
    assert len(generator.state_dict()) == 62
    assert list(generator.state_dict()) == [n for n, _ in generator.named_parameters()]  # EMA order


def test_official_config_values():
    ffhq, cats, carla = (configs.get_config(n) for n in ('FFHQ_default', 'CATS_default', 'CARLA_default'))
    assert ffhq['camera'] == {'fov': 12, 'ray_start': 0.88, 'ray_end': 1.12}
    assert cats['process']['kwargs']['real_pos_lambda'] == 30
    assert carla['optimizer']['sampling_network_lr'] == 2e-6
    assert carla['generator']['renderer']['kwargs']['white_back'] is True
    carla_g = build_generator(carla)
    assert carla_g.num_levels == 48 and not carla_g.background and carla_g.delta_final == 0.02
    ffhq_g = build_generator(ffhq)
    assert ffhq_g.num_levels == 23 and ffhq_g.background and ffhq_g.delta_final == 1e10
    hd = configs.get_config('GRAMHD1024_FFHQ')
    assert hd['process']['kwargs']['r1_lambda'] == 10 and hd['process']['kwargs']['cons_lambda'] == 10


def tiny_checkpoint(path, config_name='TINY_GRAM', kind='generator', seed=0):
    torch.manual_seed(seed)
    generator = build_generator(config_name)
    atomic_save(make_checkpoint(kind, configs.get_config(config_name), 7, {'state_dict': generator.state_dict()},
                                config_name), path)
    return generator


def test_own_checkpoint_round_trip_needs_no_config(tmp_path):
    original = tiny_checkpoint(tmp_path / 'model.pt')
    loaded = load_generator(tmp_path / 'model.pt')
    assert not loaded.training
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config['generator']['kwargs']['z_dim'] == 32


def test_own_generator_file_uses_its_ema_sibling(tmp_path):
    tiny_checkpoint(tmp_path / 'step000010_generator.pth', seed=0)
    ema = tiny_checkpoint(tmp_path / 'step000010_ema.pth', kind='ema', seed=1)
    loaded = load_generator(tmp_path / 'step000010_generator.pth')
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ema.state_dict().values()))


def test_mismatching_checkpoint_names_the_first_key_and_both_shapes(tmp_path):
    tiny = build_generator('TINY_GRAM')
    torch.save(tiny.state_dict(), tmp_path / 'generator.pth')
    with pytest.raises(CheckpointError) as error:
        load_generator(tmp_path / 'generator.pth', config='FFHQ_default')
    message = str(error.value)
    assert 'representation.sample_network.network.0.weight' in message
    assert '(16, 3)' in message and '(128, 3)' in message and 'FFHQ_default' in message


def test_official_file_without_config_is_a_clear_error(tmp_path):
    torch.save(build_generator('TINY_GRAM').state_dict(), tmp_path / 'generator.pth')
    with pytest.raises(CheckpointError, match='pass config='):
        load_generator(tmp_path / 'generator.pth')


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_generator(tmp_path / 'nope.pth', config='TINY_GRAM')


class _Exploit:
    def __reduce__(self):
        return (os.system, ('touch pwned_marker',))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / 'ema.pth', 'wb') as stream:
        torch.save({'shadow_params': [torch.zeros(1)], 'payload': _Exploit()}, stream)
    with pytest.raises(CheckpointError, match='ema.pth'):
        load_file(tmp_path / 'ema.pth')
    assert not (tmp_path / 'pwned_marker').exists()


def test_official_ema_pickle_loads_without_torch_ema(tmp_path):
    """Write a torch_ema-style pickle with a throwaway module, then read it with that module gone."""
    module = types.ModuleType('torch_ema.ema')

    class ExponentialMovingAverage:
        pass
    ExponentialMovingAverage.__module__ = 'torch_ema.ema'
    ExponentialMovingAverage.__qualname__ = 'ExponentialMovingAverage'
    module.ExponentialMovingAverage = ExponentialMovingAverage
    package = types.ModuleType('torch_ema')
    package.ema = module
    generator = build_generator('TINY_GRAM')
    ema = ExponentialMovingAverage()
    ema.decay, ema.num_updates, ema.collected_params = 0.999, 5, []
    ema.shadow_params = [p.detach() + 1 for p in generator.parameters()]
    sys.modules['torch_ema'], sys.modules['torch_ema.ema'] = package, module
    try:
        torch.save(ema, tmp_path / 'ema.pth')
    finally:
        del sys.modules['torch_ema'], sys.modules['torch_ema.ema']
    loaded = load_file(tmp_path / 'ema.pth')
    assert isinstance(loaded, OfficialEMA) and loaded.num_updates == 5
    rendered = load_generator(tmp_path / 'ema.pth', config='TINY_GRAM')
    for param, shadow in zip(rendered.parameters(), ema.shadow_params):
        assert torch.equal(param, shadow)


def test_ema_with_the_wrong_count_is_refused(tmp_path):
    torch.save(build_generator('TINY_GRAM').state_dict(), tmp_path / 'generator.pth')
    ema = OfficialEMA()
    ema.shadow_params = [torch.zeros(1)]
    sys.modules.setdefault('torch_ema', types.ModuleType('torch_ema'))
    sys.modules['torch_ema.ema'] = types.ModuleType('torch_ema.ema')
    sys.modules['torch_ema.ema'].ExponentialMovingAverage = OfficialEMA
    try:
        torch.save(ema, tmp_path / 'ema.pth')
    finally:
        del sys.modules['torch_ema'], sys.modules['torch_ema.ema']
    with pytest.raises(CheckpointError, match='1 tensors'):
        load_generator(tmp_path / 'generator.pth', config='TINY_GRAM')


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    atomic_save({'a': torch.ones(2)}, tmp_path / 'x.pth')
    atomic_save({'a': torch.zeros(2)}, tmp_path / 'x.pth')
    assert os.listdir(tmp_path) == ['x.pth']
    assert torch.equal(load_file(tmp_path / 'x.pth')['a'], torch.zeros(2))
