"""GRAM-HD's stage-2 discriminator: GRAM's encoder discriminator plus a pix2pix PatchGAN on the same image.

The PatchGAN is pix2pix's `NLayerDiscriminator` (4x4 convs, padding 1, LeakyReLU 0.2) sized per resolution
as the official code does: ndf = min(64, 2^(14 - log2 S)), n_layers = max(3, log2 S - 6). GRAM-HD passes
`norm_layer=nn.Identity`; pix2pix gives the inner convs a bias only for InstanceNorm, so here they have
none (kept: it fixes the parameter count). Logit maps: 30x30 (256), 62x62 (512, 1024); receptive field
70 px (256, 512) and 142 px (1024).
"""
import math

import torch.nn as nn

from .gram_discriminator import MAX_CHANNELS, GramEncoderDiscriminator

PATCH_KERNEL = 4
# pix2pix caps the channel multiplier at 8 x ndf.
MAX_CHANNEL_MULTIPLIER = 8

_NORM_LAYERS = {'Identity': nn.Identity, 'BatchNorm2d': nn.BatchNorm2d, 'InstanceNorm2d': nn.InstanceNorm2d}


def patch_layout(img_size):
    """(ndf, n_layers) of the official PatchGAN for square images of side img_size."""
    log_size = int(math.log2(img_size))
    return min(64, 2 ** (14 - log_size)), max(3, log_size - 6)


class PatchDiscriminator(nn.Module):
    """images [B, 3, S, S] -> patch logits [B, 1, S', S'] (pix2pix NLayerDiscriminator, names `model.{i}`)."""

    def __init__(self, in_channels=3, ndf=64, n_layers=3, norm_layer=nn.Identity):
        super().__init__()
        # pix2pix: convs followed by a norm carry no bias unless the norm is InstanceNorm (no affine shift).
        use_bias = norm_layer is nn.InstanceNorm2d
        layers = [nn.Conv2d(in_channels, ndf, PATCH_KERNEL, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        multiplier = 1
        for n in range(1, n_layers + 1):
            previous, multiplier = multiplier, min(2 ** n, MAX_CHANNEL_MULTIPLIER)
            stride = 2 if n < n_layers else 1  # the last inner conv keeps the resolution
            layers += [nn.Conv2d(ndf * previous, ndf * multiplier, PATCH_KERNEL, stride=stride, padding=1,
                                 bias=use_bias),
                       norm_layer(ndf * multiplier), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * multiplier, 1, PATCH_KERNEL, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, images):
        return self.model(images)


class GramEncoderPatchDiscriminator(GramEncoderDiscriminator):
    """images [B, 3, S, S] -> (logits [B, 1], poses [B, 2] = (pitch, yaw), patch logits [B, S'*S']).

    The encoder part is GRAM's discriminator (same names, so its weights can be shared); the PatchGAN is
    registered after it as `patch_discriminator`. The official state_dict calls it `patchgan`: those keys are
    renamed on load, so official stage-2 discriminators load strictly (and official training folders resume).
    """

    OFFICIAL_PATCH_PREFIX = 'patchgan.'

    def __init__(self, img_size, norm_layer='Identity', max_channels=MAX_CHANNELS):
        super().__init__(img_size, max_channels=max_channels)
        if isinstance(norm_layer, str):
            if norm_layer not in _NORM_LAYERS:
                raise ValueError(f"unknown norm_layer {norm_layer!r}; expected one of {', '.join(_NORM_LAYERS)}")
            norm_layer = _NORM_LAYERS[norm_layer]
        ndf, n_layers = patch_layout(self.img_size)
        self.patch_discriminator = PatchDiscriminator(3, ndf, n_layers, norm_layer)
        self.register_load_state_dict_pre_hook(self._rename_official_keys)

    def _rename_official_keys(self, module, state_dict, prefix, *args):
        official = prefix + self.OFFICIAL_PATCH_PREFIX
        for key in [k for k in state_dict if k.startswith(official)]:
            state_dict[prefix + 'patch_discriminator.' + key[len(official):]] = state_dict.pop(key)

    def forward(self, images):
        logits, poses = super().forward(images)
        return logits, poses, self.patch_discriminator(images).reshape(images.shape[0], -1)
