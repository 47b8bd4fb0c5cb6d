"""The non-official knobs of the demo recipe (README "The shipped model"): train.py --set, the σ heads'
learning-rate group and initial bias, and colours that ignore the view direction."""
import pytest
import torch

import configs
from generators import build_generator
from training.state import build_training_run


def test_overrides_set_values_and_refuse_typos():
    config = configs.apply_overrides(configs.get_config('TINY_GRAM'),
                                     ['optimizer.gen_lr=1e-4', 'optimizer.sigma_lr=2e-3',
                                      'generator.renderer.kwargs.view_dependence=False', "dataset.class='FFHQ'"])
    assert config['optimizer']['gen_lr'] == 1e-4 and config['optimizer']['sigma_lr'] == 2e-3
    assert config['generator']['renderer']['kwargs']['view_dependence'] is False
    with pytest.raises(ValueError, match=r'no key optimizer\.gen_lrr'):
        configs.apply_overrides(configs.get_config('TINY_GRAM'), ['optimizer.gen_lrr=1'])
    with pytest.raises(ValueError, match='no section foo'):
        configs.apply_overrides(configs.get_config('TINY_GRAM'), ['foo.bar=1'])
    with pytest.raises(ValueError, match='not a Python literal'):
        configs.apply_overrides(configs.get_config('TINY_GRAM'), ['optimizer.gen_lr=fast'])
    with pytest.raises(ValueError, match='expected KEY.PATH=VALUE'):
        configs.apply_overrides(configs.get_config('TINY_GRAM'), ['optimizer.gen_lr'])


def test_sigma_lr_is_its_own_group(one_thread):
    config = configs.apply_overrides(configs.get_config('TINY_GRAM'), ['optimizer.sigma_lr=3e-3'])
    run = build_training_run(config, 'TINY_GRAM')
    groups = {group['name']: group for group in run.optimizer_G.param_groups}
    sigma_params = {id(p) for p in run.generator.representation.rf_network.output_sigma.parameters()}
    assert groups['sigma']['lr'] == 3e-3 and {id(p) for p in groups['sigma']['params']} == sigma_params
    assert not sigma_params & {id(p) for p in groups['generator']['params']}
    # every trainable parameter is in exactly one group
    grouped = [id(p) for group in run.optimizer_G.param_groups for p in group['params']]
    assert sorted(grouped) == sorted(id(p) for p in run.generator.parameters())


def test_sigma_bias_init_moves_only_that_bias():
    torch.manual_seed(0)
    plain = build_generator(configs.get_config('TINY_GRAM'))
    config = configs.apply_overrides(configs.get_config('TINY_GRAM'),
                                     ['generator.representation.kwargs.sigma_bias_init=8.0'])
    torch.manual_seed(0)
    biased = build_generator(config)
    for (name, a), (_, b) in zip(plain.state_dict().items(), biased.state_dict().items()):
        if name == 'representation.rf_network.output_sigma.0.bias':
            assert torch.allclose(b, a + 8.0)
        else:
            assert torch.equal(a, b), name


def test_without_view_dependence_colours_ignore_the_view(one_thread):
    """Training renders (no lock requested) equal the locked-view renders when view_dependence is off."""
    config = configs.apply_overrides(configs.get_config('TINY_GRAM'),
                                     ['generator.renderer.kwargs.view_dependence=False'])
    torch.manual_seed(0)
    generator = build_generator(config).eval()
    z = torch.randn(2, generator.z_dim)
    pitch, yaw = torch.tensor([1.5, 1.6]), torch.tensor([1.4, 1.8])
    with torch.no_grad():
        free = generator(z, pitch, yaw)[0]
        locked = generator(z, pitch, yaw, lock_view_dependence=True)[0]
    assert torch.equal(free, locked)
    # the official default keeps view dependence: the two differ there
    torch.manual_seed(0)
    official = build_generator(configs.get_config('TINY_GRAM')).eval()
    with torch.no_grad():
        assert not torch.allclose(official(z, pitch, yaw)[0], official(z, pitch, yaw, lock_view_dependence=True)[0])


def test_synthetic_pose_widths_scale_the_same_draws(tmp_path, one_thread):
    """A wider procedural prior draws the same heads, with yaw/pitch offsets scaled; the manifest records
    the widths, and a folder made with other widths is refused."""
    import math

    import synthetic_data

    _, pitch, yaw = synthetic_data.heads_for_indices(3, range(6))
    _, wide_pitch, wide_yaw = synthetic_data.heads_for_indices(3, range(6), yaw_std=0.6, pitch_std=0.31)
    assert torch.allclose(wide_yaw - math.pi / 2, 2 * (yaw - math.pi / 2), atol=1e-6)
    assert torch.allclose(wide_pitch - math.pi / 2, 2 * (pitch - math.pi / 2), atol=1e-6)
    synthetic_data.write_synthetic_dataset(tmp_path, 2, 16, 3, yaw_std=0.6, pitch_std=0.31)
    with pytest.raises(synthetic_data.DatasetMismatch, match=r'yaw_std 0\.6 \(now 0\.3\)'):
        synthetic_data.write_synthetic_dataset(tmp_path, 2, 16, 3)


def test_minibatch_std_sees_a_batch_without_variety(one_thread):
    from discriminators.gram_discriminator import GramDiscriminator, minibatch_std
    features = torch.randn(8, 5, 2, 2)
    with_std = minibatch_std(features, 4)
    assert with_std.shape == (8, 6, 2, 2) and torch.equal(with_std[:, :5], features)
    # images b, b+2, b+4, b+6 form a group (StyleGAN2's layout); the channel is that group's mean std
    expected = features.reshape(4, 2, 5, 2, 2).std(0, unbiased=False).mean((1, 2, 3))
    assert torch.allclose(with_std[:, 5, 0, 0], expected.repeat(4), atol=1e-6)
    assert with_std[:, 5].abs().max() > 0.1
    assert minibatch_std(features[:1].expand(8, -1, -1, -1), 4)[:, 5].abs().max() < 1e-3  # identical images
    assert minibatch_std(torch.randn(6, 5, 2, 2), 4).shape == (6, 6, 2, 2)  # group 3 divides a batch of 6
    # off by default: the official network and keys; on: one more input channel of the final conv only
    official = GramDiscriminator(32, max_channels=16)
    with_feature = GramDiscriminator(32, max_channels=16, minibatch_std_group=4)
    assert official.final_layer.in_channels == 16 and with_feature.final_layer.in_channels == 17
    assert official.state_dict().keys() == with_feature.state_dict().keys()
    logits, poses = with_feature(torch.randn(8, 3, 32, 32))
    assert logits.shape == (8, 1) and poses.shape == (8, 2)
    with pytest.raises(ValueError, match='minibatch_std_group must be >= 0'):
        GramDiscriminator(32, minibatch_std_group=-1)
    config = configs.apply_overrides(configs.get_config('TINY_GRAM'), ['discriminator.kwargs.minibatch_std_group=2'])
    assert build_training_run(config, 'TINY_GRAM').discriminator.minibatch_std_group == 2
