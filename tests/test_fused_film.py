"""The fused FiLM-sine training path (generators/film.py, RadianceNetwork.forward_fused, training_path) against
stock autograd: same values and gradients, less saved memory."""
import pytest
import torch
import torch.nn.functional as F

import configs
from training.benchmark import saved_bytes
from generators import build_generator
from generators.film import linear_sine
from generators.radiance import RadianceNetwork


def _grads(tensors):
    return [t.grad.clone() for t in tensors]


@pytest.mark.parametrize('recompute', [False, True])
@pytest.mark.parametrize('per_row_bias', [False, True])
def test_linear_sine_matches_stock_autograd(recompute, per_row_bias):
    torch.manual_seed(0)
    x = torch.randn(50, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(*((50, 5) if per_row_bias else (5,)), dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(50, 5, dtype=torch.float64)

    expected = torch.sin(F.linear(x, weight) + bias)
    (expected * upstream).sum().backward()
    expected_grads = _grads([x, weight, bias])
    for t in (x, weight, bias):
        t.grad = None
    out = linear_sine(x, weight, bias, recompute=recompute)
    (out * upstream).sum().backward()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for got, want in zip(_grads([x, weight, bias]), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_linear_sine_skips_gradients_nobody_needs():
    x = torch.randn(4, 3)  # network inputs without grad: no dL/dx is computed
    weight = torch.randn(2, 3, requires_grad=True)
    bias = torch.randn(2, requires_grad=True)
    linear_sine(x, weight, bias).sum().backward()
    assert x.grad is None and weight.grad is not None and bias.grad is not None


def _radiance_network(feature_dim=0):
    torch.manual_seed(0)
    return RadianceNetwork(z_dim=16, hidden_dim=16, feature_dim=feature_dim).double()


@pytest.mark.parametrize('recompute', [False, True])
@pytest.mark.parametrize('feature_dim', [0, 4])
def test_forward_fused_equals_forward_values_and_gradients(recompute, feature_dim, one_thread):
    network = _radiance_network(feature_dim)
    points = (torch.randn(300, 3, dtype=torch.float64) * 0.1).requires_grad_()
    directions = F.normalize(torch.randn(300, 3, dtype=torch.float64), dim=-1)
    z = torch.randn(1, 16, dtype=torch.float64)
    upstream = torch.randn(300, 4 + feature_dim, dtype=torch.float64)

    def evaluate(fused):
        network.zero_grad(set_to_none=True)
        points.grad = None
        raw_frequencies, phases = network.mapping_network(z)
        if fused:
            outputs = network.forward_fused(points, directions, raw_frequencies[0], phases[0],
                                            with_features=bool(feature_dim), recompute=recompute)
        else:
            outputs = network(points[None], directions[None], raw_frequencies, phases,
                              with_features=bool(feature_dim))
            outputs = tuple(o[0] for o in outputs) if feature_dim else outputs[0]
        if not feature_dim:
            outputs = (outputs,)
        (torch.cat(outputs, dim=-1) * upstream).sum().backward()
        grads = {name: p.grad.clone() for name, p in network.named_parameters()
                 if feature_dim or 'output_feature' not in name}
        return torch.cat(outputs, dim=-1).detach(), grads, points.grad.clone()

    plain_out, plain_grads, plain_point_grad = evaluate(fused=False)
    fused_out, fused_grads, fused_point_grad = evaluate(fused=True)
    torch.testing.assert_close(fused_out, plain_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(fused_point_grad, plain_point_grad, rtol=1e-9, atol=1e-12)
    assert fused_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(fused_grads[name], plain_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_fused_path_keeps_far_less_for_the_backward(one_thread):
    torch.manual_seed(0)
    network = RadianceNetwork(z_dim=32, hidden_dim=64)
    points = torch.randn(2000, 3) * 0.1
    directions = F.normalize(torch.randn(2000, 3), dim=-1)
    raw_frequencies, phases = network.mapping_network(torch.randn(1, 32))
    plain, _ = saved_bytes(lambda: network(points[None], directions[None], raw_frequencies, phases))
    fused, _ = saved_bytes(lambda: network.forward_fused(points, directions, raw_frequencies[0], phases[0]))
    low, _ = saved_bytes(lambda: network.forward_fused(points, directions, raw_frequencies[0], phases[0],
                                                        recompute=True))
    # Per FiLM layer: stock autograd keeps input, Linear output and sine input; fused keeps input and sine
    # input; recompute keeps the input only (plus, for the colour layer, its per-point direction term).
    assert fused < 0.7 * plain
    assert low < 0.45 * plain


@pytest.mark.parametrize('training_path', ['fast', 'low_memory'])
def test_generator_training_paths_give_the_plain_gradient(training_path, one_thread):
    """A G training forward + backward through each path gives the plain (official-style) images and
    gradients: culled points have zero weight, the fused layers are the same math."""
    torch.manual_seed(0)
    generator = build_generator(configs.get_config('TINY_GRAM')).train()
    z = torch.randn(2, generator.z_dim)
    pitch, yaw = generator.sample_poses(2, 'cpu', generator=torch.Generator().manual_seed(1))
    upstream = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))

    def images_and_grads(path):
        generator.training_path = path
        generator.zero_grad(set_to_none=True)
        images, _ = generator(z, pitch, yaw)
        (images * upstream).sum().backward()
        return images.detach(), {n: p.grad.clone() for n, p in generator.named_parameters()}

    plain_images, plain_grads = images_and_grads('plain')
    # the field's gradient (through the interpolated crossings) is part of what is compared
    assert plain_grads['representation.sample_network.output_layer.weight'].abs().max() > 0
    images, grads = images_and_grads(training_path)
    torch.testing.assert_close(images, plain_images, rtol=0, atol=1e-5)
    for name, plain_grad in plain_grads.items():
        scale = plain_grad.abs().max().item()
        assert (grads[name] - plain_grad).abs().max().item() <= 1e-4 * scale + 1e-9, name


def test_fused_path_under_autocast_returns_fp32_gradients(one_thread):
    """AMP: under autocast the fused layers compute in the autocast dtype and hand back gradients in the
    parameters' dtype, as close to the fp32 gradients as stock autograd under the same autocast is (CPU
    float16 autocast stands in for CUDA's)."""
    network = _radiance_network().float()
    points = torch.randn(400, 3) * 0.1
    directions = F.normalize(torch.randn(400, 3), dim=-1)
    z = torch.randn(1, 16)

    def grads(fused, dtype):
        network.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=dtype or torch.float16, enabled=dtype is not None):
            raw_frequencies, phases = network.mapping_network(z)
            if fused:
                out = network.forward_fused(points, directions, raw_frequencies[0], phases[0])
            else:
                out = network(points[None], directions[None], raw_frequencies, phases)[0]
        out.float().sum().backward()
        return {n: p.grad for n, p in network.named_parameters()}

    exact = grads(False, None)
    plain, fused = grads(False, torch.float16), grads(True, torch.float16)
    for name, grad in fused.items():
        assert grad.dtype == torch.float32, name
        plain_error = (plain[name] - exact[name]).abs().max().item()
        fused_error = (grad - exact[name]).abs().max().item()
        # Different rounding, the same precision: neither may be far worse than the other.
        assert fused_error <= 3 * plain_error + 1e-3 * exact[name].abs().max().item(), name


@pytest.mark.parametrize('training_path', ['plain', 'fast', 'low_memory'])
def test_generator_trains_under_autocast(training_path, one_thread):
    """A G forward + backward under autocast (CPU float16 standing in for CUDA AMP) runs on every path:
    half-precision sigma meets delta_final = 1e10 in the compositing, parameters get float32 gradients, and
    the image stays within half-precision error of the float32 one."""
    torch.manual_seed(0)
    generator = build_generator(configs.get_config('TINY_GRAM')).train()
    generator.training_path = training_path
    z = torch.randn(2, generator.z_dim)
    pitch, yaw = generator.sample_poses(2, 'cpu', generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact, _ = generator(z, pitch, yaw)
        with torch.autocast('cpu', dtype=torch.float16):  # the D step's fakes: no gradients, folded path
            fakes, _ = generator(z, pitch, yaw)
    assert (fakes.float() - exact).abs().max().item() < 0.05
    with torch.autocast('cpu', dtype=torch.float16):
        images, _ = generator(z, pitch, yaw)
    images.float().sum().backward()
    assert torch.isfinite(images).all()
    assert (images.float() - exact).abs().max().item() < 0.05
    for name, parameter in generator.named_parameters():
        assert parameter.grad.dtype == torch.float32 and torch.isfinite(parameter.grad).all(), name


def test_unknown_training_path_is_refused():
    generator = build_generator(configs.get_config('TINY_GRAM'))
    generator.training_path = 'turbo'
    with pytest.raises(ValueError, match="training_path must be one of .*'turbo'"):
        generator(torch.randn(1, generator.z_dim))
