"""Inexact rendering options (issue 8): each is off by default, changes the render when switched on, and
stays within its documented error. Tiny configs, one thread; the official fixture only at 16^2."""
import math

import pytest
import torch

from bench import PointCounter
from conftest import official_fixture
from generators import build_generator, load_generator
from generators.compositing import sample_alpha, transmittance
from generators.radiance import RGB_WIDEN
from test_generator import structured_generator

PITCH = torch.tensor([1.5, 1.7], dtype=torch.float64)
YAW = torch.tensor([1.4, 1.8], dtype=torch.float64)
# Added to a sigma head's bias: sigma >= ~200, so alpha = 1 - exp(-0.04 * sigma) > 0.9996 on every valid
# surface and the first surface hides everything behind it (a solid object, as trained faces are).
OPAQUE_SIGMA_BIAS = 200.0


def latents(generator, count=2):
    return torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(1))


def render(generator, **options):
    with torch.no_grad():
        return generator.render(latents(generator), PITCH, YAW, **options)


def opaque_generator(name='TINY_GRAM'):
    generator = structured_generator(name)
    with torch.no_grad():
        generator.representation.rf_network.output_sigma[0].bias += OPAQUE_SIGMA_BIAS
    return generator


def untrained_generator(name='TINY_GRAM'):
    torch.manual_seed(0)
    return build_generator(name).eval()


def test_default_options_are_the_exact_render(one_thread):
    generator = structured_generator()
    exact = render(generator)
    assert torch.equal(render(generator, precision='fp32', early_termination=0.0, tf32=False, compile=False), exact)
    # front-to-back evaluation in groups is the same math: with a threshold no ray reaches, nothing is
    # skipped and the pixels are those of the one-pass evaluation
    assert torch.equal(render(generator, early_termination=1e-30), exact)


def test_front_groups_reproduce_the_whole_ray_transmittance():
    """Early termination tests the running product of its groups' transmittances against the threshold."""
    sigma = torch.rand(1, 5, 8, 1, generator=torch.Generator().manual_seed(0)) * 50
    valid = torch.ones_like(sigma)
    whole = transmittance(sample_alpha(sigma, valid, 0.04, 1e10))
    running = torch.ones(1, 5, 1)
    for start in range(0, 8, 2):
        torch.testing.assert_close(running, whole[:, :, start], rtol=1e-6, atol=0)
        front = sample_alpha(sigma[:, :, start:start + 2], valid[:, :, start:start + 2], 0.04, 1e10, ends_ray=False)
        running = running * transmittance(front)[:, :, -1]
    # a front slice's last sample is not the farthest one: it keeps delta_alpha
    assert sample_alpha(sigma[:, :, :2], valid[:, :, :2], 0.04, 1e10, ends_ray=False)[0, 0, 1, 0] < 1


@pytest.mark.parametrize('precision, max_tolerance, mean_tolerance', [('bf16', 0.05, 0.01), ('fp16', 0.01, 0.001)])
def test_reduced_precision_is_close_but_not_exact(one_thread, precision, max_tolerance, mean_tolerance):
    generator = untrained_generator()
    exact = render(generator)
    reduced, depth = render(generator, precision=precision, return_depth=True)
    difference = (reduced - exact).abs()
    assert reduced.dtype == depth.dtype == torch.float32
    assert 0 < difference.max() <= max_tolerance and difference.mean() <= mean_tolerance


def test_reduced_precision_network_returns_float32():
    generator = untrained_generator()
    network = generator.representation.rf_network
    raw_frequencies, phases = generator.mapping(latents(generator, 1))
    points = torch.rand(100, 3) * 0.2 - 0.1
    directions = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    exact = network.forward_folded(points, directions, raw_frequencies[0], phases[0])
    half = network.forward_folded(points, directions, raw_frequencies[0], phases[0], dtype=torch.bfloat16)
    assert half.dtype == torch.float32
    assert 0 < (half - exact).abs().max() < 0.05


def test_reduced_precision_on_official_weights(one_thread):
    """The official-format fixture (random weights made by the official constructors) at 16^2."""
    folder = official_fixture('gram_ffhq')
    generator = load_generator(folder / 'generator.pth', config='FFHQ_default')
    z = torch.load(folder / 'expected.pt', map_location='cpu', weights_only=True)['z']
    frontal = torch.tensor([math.pi / 2], dtype=torch.float64)
    with torch.no_grad():
        exact = generator.render(z, frontal, frontal, img_size=16)
        for precision, tolerance in (('bf16', 0.03), ('fp16', 0.005)):
            difference = (generator.render(z, frontal, frontal, img_size=16, precision=precision) - exact).abs()
            assert 0 < difference.max() <= tolerance, precision


# TINY_CARLA rays cross only 1.5 valid surfaces on average, so fewer points are left to skip; its white
# background is the bound's other case (the skipped weight goes to white instead of to black).
@pytest.mark.parametrize('name, least_skipped', [('TINY_GRAM', 0.3), ('TINY_CARLA', 0.15)])
def test_early_termination_skips_hidden_points_within_the_bound(one_thread, name, least_skipped):
    generator = opaque_generator(name)
    counter = PointCounter(generator)
    exact = render(generator)
    all_points = counter.radiance_points
    for threshold in (1e-3, 1e-2):
        counter.reset()
        terminated = render(generator, early_termination=threshold)
        skipped = 1 - counter.radiance_points / all_points
        assert skipped > least_skipped, f"T={threshold}: only {skipped:.1%} of the points were skipped"
        # skipped points lie behind a transmittance T_s < T, so their weights sum to at most T_s and a colour
        # in (-RGB_WIDEN, 1 + RGB_WIDEN) moves by less than T (1 + RGB_WIDEN); images are 2 colour - 1
        assert (terminated - exact).abs().max() <= 2 * threshold * (1 + RGB_WIDEN)


def test_early_termination_bound_holds_where_it_changes_pixels(one_thread):
    """A semi-transparent model: large thresholds skip points that still carry weight; each pixel moves,
    but never by more than the bound."""
    generator = structured_generator()
    exact = render(generator)
    largest = 0.0
    for threshold in (0.05, 0.2, 0.5, 0.9):
        difference = (render(generator, early_termination=threshold) - exact).abs().max().item()
        assert difference <= 2 * threshold * (1 + RGB_WIDEN), threshold
        largest = max(largest, difference)
    assert largest > 0.01  # the option did skip points that carry weight


def test_tf32_is_on_only_while_the_radiance_mlp_runs(one_thread):
    generator = untrained_generator()
    seen = []
    radiance = generator.radiance

    def spying_radiance(*args, **kwargs):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return radiance(*args, **kwargs)
    generator.radiance = spying_radiance
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    exact = render(generator)
    tf32 = render(generator, tf32=True)
    assert set(seen[:len(seen) // 2]) == {before} and set(seen[len(seen) // 2:]) == {(True, True)}
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert torch.equal(tf32, exact)  # CPU matmuls ignore the TF32 flags


@pytest.mark.parametrize('options, message', [
    (dict(precision='fp17'), "'fp17'"),
    (dict(precision='float16'), "'float16'"),
    (dict(early_termination=-0.1), '-0.1'),
    (dict(early_termination=1.0), '1.0'),
    (dict(early_termination=float('nan')), 'nan'),
    (dict(precision='bf16', fast=False), 'fast'),
    (dict(early_termination=0.01, fast=False), 'fast'),
])
def test_bad_options_are_clear_errors(options, message):
    generator = untrained_generator()
    with pytest.raises(ValueError, match=message):
        render(generator, **options)


def test_reduced_precision_refuses_gradients():
    generator = untrained_generator()
    with pytest.raises(ValueError, match='gradients'):
        generator.render(latents(generator), PITCH, YAW, precision='bf16')


def test_gramhd_takes_no_inexact_options():
    generator = untrained_generator('TINY_GRAMHD')
    with pytest.raises(TypeError, match='precision'):
        generator.render(latents(generator, 1), PITCH[:1], YAW[:1], precision='bf16')


def test_compile_matches_eager_without_recompiling_per_chunk(one_thread):
    from torch._dynamo.utils import counters
    generator = untrained_generator()
    exact = render(generator)
    compiled = render(generator, compile=True)
    graphs = counters['stats']['unique_graphs']
    # other chunk sizes and image sizes cull other point counts: the dynamic-shape graph serves them all
    with torch.no_grad():
        resized = generator.render(latents(generator), PITCH, YAW, img_size=12, chunk_points=2 * 24 * 37,
                                   compile=True)
        resized_exact = generator.render(latents(generator), PITCH, YAW, img_size=12)
    assert counters['stats']['unique_graphs'] == graphs
    torch.testing.assert_close(compiled, exact, atol=1e-5, rtol=0)
    torch.testing.assert_close(resized, resized_exact, atol=1e-5, rtol=0)
