"""GRAM's encoder discriminator: official key names/shapes (gram.md §10.3), parameter totals, ladder, outputs."""
from collections import OrderedDict

import pytest
import torch

import configs
from discriminators import GramDiscriminator, GramEncoderDiscriminator, build_discriminator
from discriminators.gram_discriminator import AddCoords, channel_ladder
from utils.checkpoints import CheckpointError, load_state_dict_checked


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def official_keys(from_rgb, ladder):
    """Key -> shape of an official discriminator.pth, written out from the reference table."""
    keys = OrderedDict()
    keys['fromRGB.model.0.weight'] = (from_rgb, 3, 1, 1)
    keys['fromRGB.model.0.bias'] = (from_rgb,)
    for i, (c_in, c_out) in enumerate(ladder):
        keys[f'layers.{i}.network.0.conv.weight'] = (c_out, c_in + 2, 3, 3)
        keys[f'layers.{i}.network.0.conv.bias'] = (c_out,)
        keys[f'layers.{i}.network.2.conv.weight'] = (c_out, c_out + 2, 3, 3)
        keys[f'layers.{i}.network.2.conv.bias'] = (c_out,)
        if c_in != c_out:
            keys[f'layers.{i}.proj.weight'] = (c_out, c_in, 1, 1)
            keys[f'layers.{i}.proj.bias'] = (c_out,)
    keys['final_layer.weight'] = (3, 400, 2, 2)
    keys['final_layer.bias'] = (3,)
    return keys


LADDER_256 = [(32, 64), (64, 128), (128, 256), (256, 400), (400, 400), (400, 400), (400, 400)]
LADDER_128 = [(64, 128), (128, 256), (256, 400), (400, 400), (400, 400), (400, 400)]


@pytest.mark.parametrize('size, from_rgb, ladder, num_keys, num_params', [
    (256, 32, LADDER_256, 40, 12391827),
    (128, 64, LADDER_128, 34, 12332115),
])
def test_official_state_dict_loads_strictly(size, from_rgb, ladder, num_keys, num_params):
    discriminator = GramDiscriminator(size)
    expected = official_keys(from_rgb, ladder)
    ours = discriminator.state_dict()
    assert len(expected) == num_keys
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == list(expected.items())  # names, order and shapes
    assert sum(p.numel() for p in discriminator.parameters()) == num_params
    official = OrderedDict((k, torch.randn(shape)) for k, shape in expected.items())
    load_state_dict_checked(discriminator, official, 'discriminator.pth')  # strict=True inside
    assert torch.equal(discriminator.layers[3].network[2].conv.weight, official['layers.3.network.2.conv.weight'])


def test_wrong_shape_is_reported_with_the_key():
    official = GramDiscriminator(128).state_dict()
    with pytest.raises(CheckpointError, match=r"fromRGB\.model\.0\.weight"):
        load_state_dict_checked(GramDiscriminator(256), official, 'discriminator.pth')


def test_gramhd_name_and_ladders_for_64_and_tiny_sizes():
    assert GramEncoderDiscriminator is GramDiscriminator
    assert channel_ladder(64) == (128, [(128, 256), (256, 400), (400, 400), (400, 400), (400, 400)])
    # 16x16 (TINY configs): the same formula, saturated at 400 channels, 3 blocks down to 2x2.
    assert channel_ladder(16) == (400, [(400, 400)] * 3)
    assert channel_ladder(16, max_channels=32) == (32, [(32, 32)] * 3)
    with pytest.raises(ValueError, match='power of 2'):
        channel_ladder(48)
    discriminator = build_discriminator(configs.get_config('GRAM64_FFHQ'))
    assert isinstance(discriminator, GramDiscriminator) and discriminator.img_size == 64
    assert abs(sum(p.numel() for p in discriminator.parameters()) - 12.10e6) < 0.005e6  # gramhd.md §5.1


def test_outputs_logit_and_pose_for_small_sizes():
    for size in (16, 64):
        discriminator = GramDiscriminator(size, max_channels=32)
        logits, poses = discriminator(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 1) and poses.shape == (2, 2)
    with pytest.raises(ValueError, match='16x16'):
        GramDiscriminator(16, max_channels=32)(torch.randn(1, 3, 32, 32))


def test_coordinate_channels_come_after_features_height_first():
    x = torch.zeros(1, 5, 4, 3)
    out = AddCoords()(x)
    assert out.shape == (1, 7, 4, 3)
    assert torch.equal(out[0, 5, :, 0], torch.linspace(-1, 1, 4))  # first extra channel varies along height
    assert torch.equal(out[0, 5, 0, :], torch.full((3,), -1.0))
    assert torch.equal(out[0, 6, 0, :], torch.linspace(-1, 1, 3))  # second along width
