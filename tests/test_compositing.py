"""Compositing on hand-computed cases."""
import math

import torch

from generators.compositing import composite


def samples(rgb, sigma):
    rgb = torch.tensor(rgb, dtype=torch.float32).reshape(1, 1, -1, 3)
    sigma = torch.tensor(sigma, dtype=torch.float32).reshape(1, 1, -1, 1)
    return torch.cat([rgb, sigma], -1)


def test_two_samples_with_constant_delta():
    rgb_sigma = samples([[1, 0, 0], [0, 1, 0]], [10.0, 5.0])
    distances = torch.tensor([1.0, 2.0]).reshape(1, 1, 2, 1)
    valid = torch.ones(1, 1, 2, 1)
    color, depth, weights = composite(rgb_sigma, distances, valid, delta_alpha=0.04, delta_final=0.04)
    a0 = 1 - math.exp(-0.04 * 10)
    a1 = 1 - math.exp(-0.04 * 5)
    w0, w1 = a0, a1 * (1 - a0 + 1e-10)
    torch.testing.assert_close(weights[0, 0, :, 0], torch.tensor([w0, w1]))
    torch.testing.assert_close(color[0, 0], torch.tensor([w0, w1, 0.0]))
    torch.testing.assert_close(depth[0, 0, 0], torch.tensor((w0 * 1 + w1 * 2) / (w0 + w1)))


def test_invalid_samples_are_transparent():
    rgb_sigma = samples([[1, 1, 1], [0, 0, 1]], [1000.0, 3.0])
    distances = torch.tensor([1.0, 2.0]).reshape(1, 1, 2, 1)
    valid = torch.tensor([0.0, 1.0]).reshape(1, 1, 2, 1)
    color, _, weights = composite(rgb_sigma, distances, valid, 0.04, 0.04)
    assert weights[0, 0, 0, 0] == 0
    torch.testing.assert_close(color[0, 0, 2], torch.tensor(1 - math.exp(-0.12)))


def test_background_and_last_sample_use_delta_final():
    # the background (middle) is opaque with delta_final = 1e10: it hides the sample behind it
    rgb_sigma = samples([[0, 0, 0], [0.5, 0.5, 0.5], [1, 1, 1]], [0.0, 0.7, 50.0])
    distances = torch.tensor([1.0, 1.1, 1.2]).reshape(1, 1, 3, 1)
    valid = torch.ones(1, 1, 3, 1)
    background = torch.tensor([False, True, False]).reshape(1, 1, 3, 1)
    color, _, weights = composite(rgb_sigma, distances, valid, 0.04, 1e10, is_background=background)
    assert weights[0, 0, 1, 0] == 1.0
    assert weights[0, 0, 2, 0] < 1e-9
    torch.testing.assert_close(color[0, 0], torch.full((3,), 0.5))
    # without the background flag the last sample alone gets delta_final
    color, _, weights = composite(rgb_sigma, distances, valid, 0.04, 1e10)
    torch.testing.assert_close(weights[0, 0, 2, 0], torch.tensor((1 - (1 - math.exp(-0.028)))), atol=1e-6, rtol=0)


def test_white_background_fills_the_remaining_transmittance():
    rgb_sigma = samples([[0, 0, 0]], [10.0])
    color, _, weights = composite(rgb_sigma, torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1), 0.02, 0.02,
                                  white_back=True)
    alpha = 1 - math.exp(-0.2)
    torch.testing.assert_close(color[0, 0], torch.full((3,), 1 - alpha))
