"""GRAM-HD's 2D super-resolution networks and the bicubic resampling helpers.

Both networks are ESRGAN-style RRDB nets (Wang et al. 2018) acting on per-manifold textures, never on
images, which keeps the rendered views 3D-consistent:

- `StyleRRDBNet` (foreground manifolds): unmodulated RRDB trunk at the LR texture size, then
  StyleGAN2-style modulated/demodulated convolutions for the pixel-shuffle up-sampling chain, the HR conv
  and the 1x1 to-RGBA conv. Its styles come from its own mapping network on z.
- `RRDBNet` (background plane): plain RRDB trunk, conv + bilinear x2 up-sampling, a zero-initialised last
  conv and a bicubic global residual.

Module names and registration order follow the official `styleesrgan.py` / `esrgan.py` (`conv_first`,
`RRDB_trunk.{i}.RDB{1,2,3}.conv{1..5}`, `trunk_conv`, `upconvs.{i}`, `HRconv`, `conv_last`,
`mapping_network.network.{0,2,4,6}`), so released GRAM-HD state_dicts load with strict=True.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .radiance import MappingNetwork

# ESRGAN's residual scaling inside dense blocks, RRDBs and (GRAM-HD) the background global residual.
RESIDUAL_SCALE = 0.2
LEAKY_SLOPE = 0.2
# StyleGAN2 demodulation epsilon.
DEMODULATION_EPS = 1e-8
# The foreground global residual's alpha floor: an empty LR texel (alpha 0) starts at sigmoid(logit(1e-4)).
RESIDUAL_ALPHA_EPS = 1e-4


def _lrelu(x):
    return F.leaky_relu(x, LEAKY_SLOPE)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output = 0.2 * conv5(...) + input. [N, nf, h, w] -> same."""

    def __init__(self, nf=64, gc=32):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x):
        x1 = _lrelu(self.conv1(x))
        x2 = _lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = _lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = _lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, output = 0.2 * RDB3(RDB2(RDB1(x))) + x."""

    def __init__(self, nf=64, gc=32):
        super().__init__()
        self.RDB1 = ResidualDenseBlock(nf, gc)
        self.RDB2 = ResidualDenseBlock(nf, gc)
        self.RDB3 = ResidualDenseBlock(nf, gc)

    def forward(self, x):
        return self.RDB3(self.RDB2(self.RDB1(x))) * RESIDUAL_SCALE + x


class _RRDBTrunk(nn.Module):
    """conv_first -> nb RRDBs -> trunk_conv, with the long skip: conv_first(x) + trunk_conv(trunk(...))."""

    def _build_trunk(self, in_nc, nf, nb, gc):
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)

    def trunk(self, x):
        # Channels-last (NHWC) activations: oneDNN's CPU convolutions run ~20% faster on them; every later
        # conv, cat and pixel shuffle keeps the layout. Values are the same up to float rounding.
        features = self.conv_first(x.contiguous(memory_format=torch.channels_last))
        return features + self.trunk_conv(self.RRDB_trunk(features))


def _scale_stages(scale, up_channels):
    stages = int(round(math.log2(scale)))
    if 2 ** stages != scale or len(up_channels) != stages:
        raise ValueError(f"scale {scale} needs log2(scale) up-sampling stages, got up_channels {up_channels}")
    return stages


class ModulatedConv2d(nn.Module):
    """StyleGAN2 weight modulation + demodulation, no noise, no style offset.

    The style multiplies the input channels of the weight directly (official: no '+1'), each output filter
    is then divided by sqrt(sum(w'^2) + 1e-8); the bias is added unmodulated. Parameters are the plain
    `weight` [out, in, k, k] and `bias` [out], as in the official `ModConv2D`.
    """

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.in_channels = in_channels
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        # Same init as nn.Conv2d; demodulation makes the weight scale irrelevant to the output anyway.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.bias, -bound, bound)

    def modulated_weights(self, style):
        """style [B, in] -> demodulated weights [B, out, in, k, k]."""
        weight = self.weight.unsqueeze(0) * style.reshape(style.shape[0], 1, -1, 1, 1)
        demodulation = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + DEMODULATION_EPS)
        return weight * demodulation

    def forward(self, x, style):
        """x [B * k, in, h, w] (the k maps of instance b are rows b*k .. b*k+k-1), style [B, in].

        The k maps of one instance share one style (GRAM-HD styles all manifolds of a latent alike), so
        each instance runs one ordinary convolution over its k maps instead of a k-times grouped one.
        """
        weights = self.modulated_weights(style)
        maps_per_style = x.shape[0] // style.shape[0]
        if maps_per_style * style.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} maps cannot be split evenly over {style.shape[0]} styles")
        outputs = [F.conv2d(x[b * maps_per_style:(b + 1) * maps_per_style], weights[b], self.bias,
                            padding=self.padding) for b in range(style.shape[0])]
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


class StyleRRDBNet(_RRDBTrunk):
    """Foreground manifold super-resolution (official `StyleRRDBNet`).

    forward(x [B * k, in_nc, h, w], style [B, style_dim]) -> [B * k, out_nc, h * scale, w * scale] (raw;
    the generator applies the sigmoid to the alpha channel). Maps are instance-major (see ModulatedConv2d).
    The style vector is sliced, in order, into the input-channel counts of upconvs..., HRconv, conv_last;
    e.g. x4: [0:64] [64:128] | [128:192] | [192:256].

    `w_dim` is, as in the official `StyleRRDBNet`, the *input* width of the mapping network, which receives
    the latent z; the style width `style_dim` follows from the channels (nf + sum(up_channels[:-1]) +
    2 * up_channels[-1]). Every released config has 256 for both.

    Not official: `global_residual=True` adds the input's own up-sampling, as the background net does:
    rgb = bicubic(LR rgb) + g * net_rgb, raw alpha = logit(bicubic(LR alpha)) + g * net_alpha, with a learnt
    gain g (`residual_gain`, zero at init, since a zero-initialised modulated conv cannot learn: demodulation
    divides by its norm). An untrained net is then exactly the bicubic up-sampling of the LR textures, where
    the official one starts as noise with every alpha near 0.5; from there, Adam's steps of about lr per
    step take tens of thousands of steps to make the empty texels transparent (README "Learning
    super-resolution"). Off in every official config (no `residual_gain` key).
    """

    def __init__(self, in_nc, out_nc, scale, w_dim=256, nf=64, nb=8, gc=32, up_channels=(64, 64), to_rgb_ks=1,
                 use_pixel_shuffle=True, global_residual=False):
        super().__init__()
        if not use_pixel_shuffle:
            raise ValueError("StyleRRDBNet up-samples by pixel shuffle only (the official configs all do)")
        stages = _scale_stages(scale, up_channels)
        self.scale = scale
        self._build_trunk(in_nc, nf, nb, gc)
        channels = [nf] + list(up_channels)
        # Pixel shuffle turns 4c channels into c channels at twice the size.
        self.upconvs = nn.ModuleList([ModulatedConv2d(channels[i], 4 * channels[i + 1], 3) for i in range(stages)])
        self.HRconv = ModulatedConv2d(channels[-1], channels[-1], 3)
        self.conv_last = ModulatedConv2d(channels[-1], out_nc, to_rgb_ks)
        self.w_dim = w_dim
        self.style_sizes = [conv.in_channels for conv in self.modulated_convs()]
        self.style_dim = sum(self.style_sizes)
        self.mapping_network = MappingNetwork(w_dim, 256, self.style_dim, last_layer_scale=1.0, split_output=False)
        self.global_residual = bool(global_residual)
        if self.global_residual:
            if out_nc != 4 or in_nc < 4:
                raise ValueError(f"global_residual up-samples the input's rgb + alpha: needs in_nc >= 4 and out_nc 4, "
                                 f"got {in_nc} and {out_nc}")
            self.residual_gain = nn.Parameter(torch.zeros(()))

    def modulated_convs(self):
        return list(self.upconvs) + [self.HRconv, self.conv_last]

    def styles(self, z):
        """z [B, w_dim] -> style vectors [B, style_dim]."""
        return self.mapping_network(z)

    def forward(self, x, style):
        features = self.trunk(x)
        slices = torch.split(style, self.style_sizes, dim=1)
        for conv, style_slice in zip(self.upconvs, slices):
            features = _lrelu(F.pixel_shuffle(conv(features, style_slice), 2))
        features = _lrelu(self.HRconv(features, slices[-2]))
        out = self.conv_last(features, slices[-1])
        if not self.global_residual:
            return out
        base = bicubic_upsample(x[:, :4].float(), self.scale)
        alpha = base[:, 3:4].clamp(RESIDUAL_ALPHA_EPS, 1 - RESIDUAL_ALPHA_EPS)
        return torch.cat([base[:, :3], torch.logit(alpha)], dim=1).to(out.dtype) + self.residual_gain * out


class RRDBNet(_RRDBTrunk):
    """Background super-resolution (official `RRDBNet` as configured by GRAM-HD).

    forward(x [B, in_nc, h, w]) -> [B, out_nc, h * scale, w * scale]. Each up-sampling stage is conv ->
    LeakyReLU -> bilinear x2. With `global_residual` the output is bicubic(x) + 0.2 * net(x) and the last
    conv starts at zero, so an untrained net is exactly the bicubic up-sampling.
    """

    def __init__(self, in_nc, out_nc, scale, nf=64, nb=4, gc=32, up_channels=(64, 32), to_rgb_ks=3,
                 use_pixel_shuffle=False, global_residual=True):
        super().__init__()
        if use_pixel_shuffle:
            raise ValueError("the background RRDBNet up-samples bilinearly (use_pixel_shuffle=False)")
        stages = _scale_stages(scale, up_channels)
        self.scale = scale
        self.global_residual = global_residual
        self._build_trunk(in_nc, nf, nb, gc)
        channels = [nf] + list(up_channels)
        self.upconvs = nn.ModuleList([nn.Conv2d(channels[i], channels[i + 1], 3, 1, 1) for i in range(stages)])
        self.HRconv = nn.Conv2d(channels[-1], channels[-1], 3, 1, 1)
        self.conv_last = nn.Conv2d(channels[-1], out_nc, to_rgb_ks, 1, to_rgb_ks // 2)
        if global_residual:
            with torch.no_grad():
                self.conv_last.weight.zero_()
                self.conv_last.bias.zero_()

    def forward(self, x):
        features = self.trunk(x)
        for conv in self.upconvs:
            features = F.interpolate(_lrelu(conv(features)), scale_factor=2, mode='bilinear', align_corners=False)
        out = self.conv_last(_lrelu(self.HRconv(features)))
        if self.global_residual:
            out = bicubic_upsample(x, self.scale) + RESIDUAL_SCALE * out
        return out


# ---------------------------------------------------------------------------------------------------
# Bicubic resampling

def bicubic_upsample(x, scale):
    """[N, C, h, w] -> [N, C, h * scale, w * scale], PyTorch bicubic (a = -0.75), half-pixel centres."""
    return F.interpolate(x, scale_factor=scale, mode='bicubic', align_corners=False)


def _keys_cubic(t, a=-0.5):
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_downsample(x, factor):
    """Anti-aliased bicubic down-sampling by an integer factor, as GRAM-HD's consistency loss does it.

    x [N, C, H, W] -> [N, C, H / factor, W / factor]. A separable Keys cubic (a = -0.5) stretched by
    `factor`: 4 * factor taps at offsets (j - 2 factor + 0.5) / factor, weights / factor per axis;
    replicate padding floor(1.5 factor); stride `factor`. Each output pixel is centred on its block.
    """
    if factor == 1:
        return x
    taps = torch.arange(4 * factor, dtype=torch.float64, device=x.device)
    weights_1d = _keys_cubic((taps - 2 * factor + 0.5) / factor) / factor
    kernel = (weights_1d[:, None] * weights_1d[None, :]).to(x.dtype)
    channels = x.shape[1]
    kernel = kernel.expand(channels, 1, 4 * factor, 4 * factor)
    padding = int(1.5 * factor)
    padded = F.pad(x, (padding, padding, padding, padding), mode='replicate')
    return F.conv2d(padded, kernel, stride=factor, groups=channels)
