"""GRAM-HD's stage-2 discriminator: encoder D + PatchGAN sized per resolution (gramhd.md 5.1)."""
import pytest
import torch

import configs
from discriminators import build_discriminator
from discriminators.patch_discriminator import GramEncoderPatchDiscriminator, patch_layout


@pytest.mark.parametrize('name, patch_params, logits_side, layout', [
    ('GRAMHD256_FFHQ', 2_763_841, 30, (64, 3)),
    ('GRAMHD512_FFHQ', 693_793, 62, (32, 3)),
    ('GRAMHD1024_FFHQ', 437_009, 62, (16, 4))])
def test_patch_discriminator_layouts(name, patch_params, logits_side, layout):
    config = configs.get_config(name)
    discriminator = build_discriminator(config)
    assert isinstance(discriminator, GramEncoderPatchDiscriminator)
    size = config['discriminator']['kwargs']['img_size']
    assert patch_layout(size) == layout
    assert sum(p.numel() for p in discriminator.patch_discriminator.parameters()) == patch_params
    # norm_layer Identity => inner convs without bias (pix2pix rule), first and last conv with bias.
    convs = [m for m in discriminator.patch_discriminator.model if isinstance(m, torch.nn.Conv2d)]
    assert [c.bias is not None for c in convs] == [True] + [False] * layout[1] + [True]
    # Output side of the PatchGAN: stride-2 convs halve, the two stride-1 4x4 convs remove one pixel each.
    side = size // 2 ** layout[1] - 2
    assert side == logits_side


def test_patch_discriminator_forward_shapes():
    discriminator = GramEncoderPatchDiscriminator(64, max_channels=32)
    logits, poses, patches = discriminator(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1) and poses.shape == (2, 2) and patches.shape == (2, 6 * 6)
    with pytest.raises(ValueError, match='norm_layer'):
        GramEncoderPatchDiscriminator(64, norm_layer='LayerNorm')
