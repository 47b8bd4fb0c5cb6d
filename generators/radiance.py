"""Radiance network: pi-GAN's FiLM-SIREN conditioned on z, with GRAM's per-layer summed heads.

Names follow the official `GramRF` (`network.{i}.layer`, `color_layer.0.layer`, `output_sigma.{i}`,
`output_color.{i}`, [`output_feature.{i}` in GRAM-HD], `mapping_network.network.{0,2,4,6}`), registered in
that order so that parameters() order equals the official state_dict / EMA shadow order.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .film import linear_sine

# FiLM frequencies are predicted around a SIREN-like scale: gamma = 15 * raw + 30.
FREQUENCY_SCALE = 15.0
FREQUENCY_OFFSET = 30.0
# "widen_sigmoid": rgb in (-0.001, 1.001) so the GAN can reach pure black/white.
RGB_WIDEN = 0.001


class FiLMLayer(nn.Module):
    """sin(gamma * (W x + b) + beta); x [B, N, in], gamma/beta [B, out] -> [B, N, out]."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.layer = nn.Linear(in_dim, out_dim)

    def forward(self, x, frequency, phase):
        x = self.layer(x)
        return torch.sin(frequency.unsqueeze(1) * x + phase.unsqueeze(1))


class MappingNetwork(nn.Module):
    """z [B, z_dim] -> (raw frequencies [B, L*H], phases [B, L*H]); 3 hidden LeakyReLU(0.2) layers.

    GRAM-HD's style mapping reuses it with `split_output=False` (-> [B, output_dim]) and an unscaled last
    layer (`last_layer_scale=1`); pi-GAN/GRAM scale the last layer's init by 0.25.
    """

    def __init__(self, z_dim, hidden_dim, output_dim, last_layer_scale=0.25, split_output=True):
        super().__init__()
        self.split_output = split_output
        self.network = nn.Sequential(
            nn.Linear(z_dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_dim, output_dim))
        for module in self.network:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, a=0.2, mode='fan_in', nonlinearity='leaky_relu')
        with torch.no_grad():
            self.network[-1].weight *= last_layer_scale

    def forward(self, z):
        out = self.network(z)
        if not self.split_output:
            return out
        half = out.shape[-1] // 2
        return out[..., :half], out[..., half:]


def _frequency_init(module, scale=25.0):
    # SIREN init: U(+-sqrt(6/fan_in)/scale); biases keep the PyTorch default.
    if isinstance(module, nn.Linear):
        fan_in = module.weight.shape[-1]
        with torch.no_grad():
            module.weight.uniform_(-math.sqrt(6 / fan_in) / scale, math.sqrt(6 / fan_in) / scale)


class RadianceNetwork(nn.Module):
    """FiLM-SIREN radiance field.

    Input points [B, N, 3] (world) and unit view directions [B, N, 3]; FiLM parameters from `mapping_network`.
    Output [B, N, 4] = (rgb in (-0.001, 1.001), sigma >= 0), plus features [B, N, feature_dim] when
    `feature_dim` > 0 (GRAM-HD).
    """

    def __init__(self, z_dim=256, hidden_dim=256, normalize=0.24, num_layers=8, sigma_clamp_mode='softplus',
                 rgb_clamp_mode='widen_sigmoid', feature_dim=0):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.input_scale = 2 / normalize
        self.sigma_clamp_mode = sigma_clamp_mode
        self.rgb_clamp_mode = rgb_clamp_mode
        self.feature_dim = feature_dim
        self.network = nn.ModuleList(
            [FiLMLayer(3, hidden_dim)] + [FiLMLayer(hidden_dim, hidden_dim) for _ in range(num_layers - 1)])
        self.color_layer = nn.ModuleList([FiLMLayer(hidden_dim + 3, hidden_dim)])
        # One head per trunk layer after the first; summed (StyleGAN2-skip-like).
        self.output_sigma = nn.ModuleList([nn.Linear(hidden_dim, 1) for _ in range(num_layers - 1)])
        self.output_color = nn.ModuleList([nn.Linear(hidden_dim, 3) for _ in range(num_layers - 1)])
        if feature_dim:
            self.output_feature = nn.ModuleList([nn.Linear(hidden_dim, feature_dim) for _ in range(num_layers - 1)])
        self.mapping_network = MappingNetwork(z_dim, 256, (num_layers + 1) * hidden_dim * 2)

        self.network.apply(_frequency_init)
        self.color_layer.apply(_frequency_init)
        self.output_sigma.apply(_frequency_init)
        self.output_color.apply(_frequency_init)
        if feature_dim:
            self.output_feature.apply(_frequency_init)
        with torch.no_grad():  # first layer: U(+-1/fan_in), as pi-GAN
            self.network[0].layer.weight.uniform_(-1 / 3, 1 / 3)

    @property
    def num_film(self):
        return len(self.network) + 1

    def film_parameters(self, raw_frequencies, phases):
        """Split mapping outputs into per-layer (gamma, beta) lists; gamma = 15 raw + 30."""
        frequencies = raw_frequencies * FREQUENCY_SCALE + FREQUENCY_OFFSET
        h = self.hidden_dim
        return ([frequencies[..., i * h:(i + 1) * h] for i in range(self.num_film)],
                [phases[..., i * h:(i + 1) * h] for i in range(self.num_film)])

    def _activate(self, rgb, sigma):
        if self.rgb_clamp_mode == 'widen_sigmoid':
            rgb = torch.sigmoid(rgb) * (1 + 2 * RGB_WIDEN) - RGB_WIDEN
        elif self.rgb_clamp_mode == 'sigmoid':
            rgb = torch.sigmoid(rgb)
        else:
            raise ValueError(f"unknown rgb_clamp_mode {self.rgb_clamp_mode!r}; expected widen_sigmoid or sigmoid")
        if self.sigma_clamp_mode == 'softplus':
            sigma = F.softplus(sigma)
        elif self.sigma_clamp_mode == 'relu':
            sigma = F.relu(sigma)
        else:
            raise ValueError(f"unknown sigma_clamp_mode {self.sigma_clamp_mode!r}; expected softplus or relu")
        return rgb, sigma

    def forward(self, points, directions, raw_frequencies, phases, with_features=False):
        frequency, phase = self.film_parameters(raw_frequencies, phases)
        x = points * self.input_scale
        sigma = 0
        rgb = 0
        feature = 0
        last = len(self.network) - 1
        for index, layer in enumerate(self.network):
            x = layer(x, frequency[index], phase[index])
            if index == 0:
                continue
            sigma = sigma + self.output_sigma[index - 1](x)
            if with_features:
                feature = feature + self.output_feature[index - 1](x)
            if index < last:
                rgb = rgb + self.output_color[index - 1](x)
        color = self.color_layer[0](torch.cat([directions, x], dim=-1), frequency[-1], phase[-1])
        rgb = rgb + self.output_color[-1](color)
        rgb, sigma = self._activate(rgb, sigma)
        out = torch.cat([rgb, sigma], dim=-1)
        if with_features:
            return out, feature
        return out

    def forward_fused(self, points, directions, raw_frequencies, phases, with_features=False, recompute=False):
        """Training evaluation for ONE latent: `forward`'s math with gradients, in less memory and time.

        points [N, 3], directions [N, 3]; raw_frequencies, phases [F]. Returns [N, 4] (rgb, sigma), plus
        features [N, feature_dim] with `with_features`. Each FiLM layer folds gamma into this latent's
        weights (cheap [out, in] autograd ops) and runs `film.linear_sine` (one matmul, one sine, two saved
        tensors; one with `recompute`). A layer's heads are one Linear; the colour layer's direction input
        is a per-point bias instead of a concatenated input. Gradients equal `forward`'s up to rounding.

        Batched form for B latents at once (GPU training: the kernel count does not grow with B): points
        and directions [B, N, 3], raw_frequencies and phases [B, F] -> [B, N, 4]; each layer is one
        batched matmul with the latents' own folded weights [B, out, in].
        """
        frequency, phase = self.film_parameters(raw_frequencies, phases)
        last = len(self.network) - 1
        feature_dim = self.feature_dim if with_features else 0

        def layer_heads(index, with_color):  # [sigma, features..., rgb(3)] of trunk layer index + 1
            heads = [self.output_sigma[index]] + ([self.output_feature[index]] if feature_dim else [])
            weight = torch.cat([head.weight for head in heads] + [self.output_color[index].weight])
            bias = torch.cat([head.bias for head in heads] + [self.output_color[index].bias])
            if not with_color:  # the last trunk layer feeds the colour layer, not an rgb head
                weight, bias = weight[:-3], bias[:-3]
            return weight, bias

        x = points * self.input_scale
        heads = 0
        for index, film in enumerate(self.network):
            weight = film.layer.weight * frequency[index][..., None]
            bias = film.layer.bias * frequency[index] + phase[index]
            # The first layer's matmul has K=3: redoing it in the backward is cheaper than keeping its output.
            x = linear_sine(x, weight, bias, recompute or index == 0)
            if index > 0:
                head_weight, head_bias = layer_heads(index - 1, with_color=index < last)
                out = F.linear(x, head_weight, head_bias)
                if index == last:
                    out = F.pad(out, (0, 3))
                heads = heads + out

        color_film = self.color_layer[0].layer
        weight = color_film.weight * frequency[-1][..., None]
        bias = color_film.bias * frequency[-1] + phase[-1]
        # [(B,) N, hidden]: the concatenated input's part
        if directions.dim() == 2:
            direction_term = F.linear(directions, weight[:, :3], bias)
        else:
            direction_term = torch.baddbmm(bias.unsqueeze(1), directions, weight[..., :3].transpose(1, 2))
        color = linear_sine(x, weight[..., 3:], direction_term, recompute)
        rgb = heads[..., -3:] + self.output_color[-1](color)
        rgb, sigma = self._activate(rgb, heads[..., :1])
        out = torch.cat([rgb, sigma], dim=-1)
        if with_features:
            return out, heads[..., 1:1 + feature_dim]
        return out

    @torch.no_grad()
    def forward_folded(self, points, directions, raw_frequencies, phases, with_features=False, dtype=None):
        """Inference for ONE latent with the same math as `forward`, in fewer passes over memory.

        points [N, 3], directions [N, 3] or one shared direction [3]; raw_frequencies, phases [F].
        Returns [N, 4] (rgb, sigma), plus features [N, feature_dim] with `with_features`, in the dtype of
        `points`.

        sin(gamma * (W x + b) + beta) = sin((gamma W) x + (gamma b + beta)): gamma is folded into this
        latent's weights, so a FiLM layer is one matmul into a reused buffer and an in-place sine instead
        of matmul + multiply + add + sine into fresh tensors (on CPU those passes and page faults cost
        more than the matmuls). All heads of a layer are one accumulating matmul; the colour layer's
        direction input is a K=3 matmul instead of a concatenation. Rounding differs from `forward` in
        the last bits only.

        `dtype` (torch.bfloat16 or torch.float16) runs the MLP in that precision, an inexact option: the
        folded weights and biases are computed in the input precision and then cast, the matmuls, sines
        and head sums run in `dtype`, and the activations are applied after casting back.

        Batched form for B latents at once (the GPU render: kernels do not multiply with B): points
        [B, N, 3], directions [B, N, 3] or one shared [3], raw_frequencies and phases [B, F] -> [B, N, 4];
        each FiLM layer is one torch.baddbmm with the latents' folded weights [B, in, out], the heads
        (shared by all latents) one matmul over all B * N points.
        """
        output_dtype = points.dtype
        dtype = dtype or output_dtype  # .to() of a tensor already in `dtype` returns it: fp32 stays exact
        frequency, phase = self.film_parameters(raw_frequencies, phases)
        rows = points.shape[:-1]  # (N,) or (B, N)
        batched = points.dim() == 3
        last = len(self.network) - 1
        feature_dim = self.feature_dim if with_features else 0

        def folded_affine(bias, x, weight_t, out):  # out = x @ weight_t + bias, weights per latent if batched
            if batched:
                return torch.baddbmm(bias.unsqueeze(1), x, weight_t, out=out)
            return torch.addmm(bias, x, weight_t, out=out)

        # Accumulator columns: [sigma, features..., rgb(3)], started from the sum of all head biases.
        def head_weights(index, with_color):
            weights = [self.output_sigma[index].weight]
            if feature_dim:
                weights.append(self.output_feature[index].weight)
            color = self.output_color[index].weight
            weights.append(color if with_color else torch.zeros_like(color))
            return torch.cat(weights).t().to(dtype)

        biases = [sum(head.bias for head in self.output_sigma)]
        if feature_dim:
            biases.append(sum(head.bias for head in self.output_feature))
        biases.append(sum(head.bias for head in self.output_color))
        heads = torch.cat(biases).to(dtype).expand(*rows, -1).contiguous()
        all_heads = heads.view(-1, heads.shape[-1])  # the head weights are shared: one matmul for all rows

        buffers = [points.new_empty(*rows, self.hidden_dim, dtype=dtype) for _ in range(2)]
        x = (points * self.input_scale).to(dtype)
        for index, film in enumerate(self.network):
            out = buffers[index % 2]
            weight = film.layer.weight * frequency[index][..., None]
            bias = film.layer.bias * frequency[index] + phase[index]
            folded_affine(bias.to(dtype), x, weight.transpose(-1, -2).to(dtype), out)
            x = out.sin_()
            if index > 0:
                all_heads.addmm_(x.view(-1, self.hidden_dim), head_weights(index - 1, with_color=index < last))

        color_film = self.color_layer[0].layer
        weight = color_film.weight * frequency[-1][..., None]
        bias = color_film.bias * frequency[-1] + phase[-1]
        direction_weight, feature_weight = weight[..., :3], weight[..., 3:].transpose(-1, -2).to(dtype)
        out = buffers[(last + 1) % 2]
        if directions.dim() == 1:  # one direction for every point (locked view dependence): fold it in
            folded_affine((bias + direction_weight @ directions).to(dtype), x, feature_weight, out)
        else:
            folded_affine(bias.to(dtype), directions.to(dtype), direction_weight.transpose(-1, -2).to(dtype), out)
            if batched:
                out.baddbmm_(x, feature_weight)
            else:
                out.addmm_(x, feature_weight)
        color = out.sin_()
        last_color = heads.new_zeros(self.hidden_dim, heads.shape[-1])
        last_color[:, -3:] = self.output_color[-1].weight.t()
        all_heads.addmm_(color.view(-1, self.hidden_dim), last_color)

        heads = heads.to(output_dtype)
        rgb, sigma = self._activate(heads[..., -3:], heads[..., :1])
        out = torch.cat([rgb, sigma], dim=-1)
        if with_features:
            return out, heads[..., 1:1 + feature_dim]
        return out
