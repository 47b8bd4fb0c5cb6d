"""GRAM's encoder discriminator: residual CoordConv blocks, then a 2x2 conv to [logit, pitch, yaw].

Module names and registration order follow the official `GramDiscriminator` (GRAM) /
`GramEncoderDiscriminator` (GRAM-HD stage 1): `fromRGB.model.0`, `layers.{i}.network.{0,2}.conv`,
`layers.{i}.proj`, `final_layer`, so an official `discriminator.pth` loads with strict=True.
"""
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Official channel ladder: a block at level i maps min(MAX, 2^i) -> min(MAX, 2^(i+1)) channels, with i
# running from 13 - log2(S) to 11; so S=256 starts at 32 channels, S=64 at 128, and the last block always
# leaves a 2x2 map.
LADDER_TOP = 12
LADDER_START = 13
MAX_CHANNELS = 400


@functools.lru_cache(maxsize=16)
def _coordinate_channels(height, width, device, dtype):
    # Built once per size/device/dtype (the official code rebuilt them on the CPU at every call).
    rows = torch.linspace(-1, 1, height, device=device, dtype=dtype).reshape(height, 1).expand(height, width)
    cols = torch.linspace(-1, 1, width, device=device, dtype=dtype).reshape(1, width).expand(height, width)
    return torch.stack([rows, cols]).unsqueeze(0)


class AddCoords(nn.Module):
    """Append 2 channels in [-1, 1] after the features: first varies along height, second along width."""

    def forward(self, x):
        batch, _, height, width = x.shape
        coords = _coordinate_channels(height, width, x.device, x.dtype)
        return torch.cat([x, coords.expand(batch, -1, -1, -1)], dim=1)


class CoordConv(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, **kwargs):
        super().__init__()
        self.addcoords = AddCoords()
        self.conv = nn.Conv2d(in_channels + 2, out_channels, kernel_size, **kwargs)

    def forward(self, x):
        return self.conv(self.addcoords(x))


class ResidualCoordConvBlock(nn.Module):
    """Two 3x3 CoordConvs + LeakyReLU(0.2), halved by 2x2 average pooling; skip = pool (+1x1 conv).

    The sum is divided by sqrt(2) to keep the activation scale.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.network = nn.Sequential(
            CoordConv(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            CoordConv(out_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        # Official: the projection exists only where the channel count changes (no key otherwise).
        self.proj = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x):
        y = F.avg_pool2d(self.network(x), 2)
        identity = F.avg_pool2d(x, 2)
        if self.proj is not None:
            identity = self.proj(identity)
        return (y + identity) / math.sqrt(2)


class AdapterBlock(nn.Module):
    """fromRGB: 1x1 conv 3 -> C0 and LeakyReLU(0.2)."""

    def __init__(self, out_channels):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, out_channels, 1), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.model(x)


def channel_ladder(img_size, max_channels=MAX_CHANNELS):
    """(fromRGB channels, [(in, out) per block]) for square images of side img_size (a power of 2).

    Official sizes: 64 -> 128, [128->256, 256->400, 400->400 x3]; 256 -> 32, [32->64, ..., 400->400 x3].
    Small test sizes follow the same formula: 16 -> 400, [400->400 x3]. `max_channels` (default the
    official 400) only exists to make CPU smoke tests cheap.
    """
    img_size = int(img_size)
    if img_size < 2 or img_size & (img_size - 1):
        raise ValueError(f"discriminator img_size must be a power of 2 >= 2, got {img_size}")
    first = LADDER_START - int(math.log2(img_size))
    if first < 0:
        raise ValueError(f"discriminator img_size {img_size} is above the ladder's limit of {2 ** LADDER_START}")
    blocks = [(min(max_channels, 2 ** i), min(max_channels, 2 ** (i + 1))) for i in range(first, LADDER_TOP)]
    return min(max_channels, 2 ** first), blocks


def minibatch_std(x, group_size):
    """x [B, C, H, W] -> [B, C + 1, H, W]: StyleGAN's minibatch standard deviation feature.

    Images are split into groups of G (images b, b + B/G, b + 2B/G, ... share a group, as in StyleGAN2),
    G the largest divisor of B up to `group_size`; the extra channel holds, for each image, the std over
    its group averaged over channels and pixels, so a discriminator can see a batch with too little
    variety (mode collapse).
    """
    batch, channels, height, width = x.shape
    group = max(size for size in range(1, min(group_size, batch) + 1) if batch % size == 0)
    grouped = x.reshape(group, batch // group, channels, height, width).float()
    std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [B/G]
    feature = std.to(x.dtype).reshape(1, -1, 1, 1, 1).expand(group, -1, 1, height, width)
    return torch.cat([x, feature.reshape(batch, 1, height, width)], dim=1)


class GramDiscriminator(nn.Module):
    """images [B, 3, S, S] in [-1, 1] -> (logits [B, 1], poses [B, 2] = predicted (pitch, yaw) radians).

    As official: no latent head, no normalisation, no minibatch-std. Convs keep the PyTorch default init:
    the official init helper only matched nn.Linear, of which this network has none.

    Not official: `minibatch_std_group` > 0 appends StyleGAN's minibatch-std channel before the final
    2x2 conv (the demo config uses it against mode collapse at batch 8); 0 keeps the official network
    and its checkpoint keys and shapes.
    """

    def __init__(self, img_size, max_channels=MAX_CHANNELS, minibatch_std_group=0):
        super().__init__()
        self.img_size = int(img_size)
        self.minibatch_std_group = int(minibatch_std_group)
        if self.minibatch_std_group < 0:
            raise ValueError(f"minibatch_std_group must be >= 0 (0 = off), got {minibatch_std_group}")
        from_rgb_channels, blocks = channel_ladder(img_size, max_channels)
        self.fromRGB = AdapterBlock(from_rgb_channels)
        self.layers = nn.ModuleList([ResidualCoordConvBlock(c_in, c_out) for c_in, c_out in blocks])
        last_channels = blocks[-1][1] if blocks else from_rgb_channels
        self.final_layer = nn.Conv2d(last_channels + (1 if self.minibatch_std_group else 0), 3, 2)

    def forward(self, images):
        if images.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"discriminator built for {self.img_size}x{self.img_size} images, got "
                             f"{tuple(images.shape[-2:])}")
        x = self.fromRGB(images)
        for layer in self.layers:
            x = layer(x)
        if self.minibatch_std_group:
            x = minibatch_std(x, self.minibatch_std_group)
        out = self.final_layer(x).reshape(images.shape[0], 3)
        return out[:, :1], out[:, 1:]


# GRAM-HD's name for the same network (stage 1, and the encoder branch of its stage-2 discriminator).
GramEncoderDiscriminator = GramDiscriminator
