"""Ray-manifold intersection: the first-crossing rule against analytic ray-sphere hits."""
import math

import torch

from generators import camera
from generators.manifold import ManifoldPredictor, first_crossings, manifold_levels

FIELD_SCALE = 100.0  # steep enough that every crossing interval has |ds| > 0.05 (the linear-root branch)


def sphere_field(points, center):
    """s(p) = 100 |p - c|: its level l is the sphere of radius l / 100 around c; it decreases going in."""
    return FIELD_SCALE * (points - center).norm(dim=-1, keepdim=True)


def analytic_first_hit(ray_origins, ray_directions, center, radius):
    offset = ray_origins - center
    b = (offset * ray_directions).sum(-1)
    c = (offset * offset).sum(-1) - radius ** 2
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp(min=0))
    return ray_origins + t.unsqueeze(-1) * ray_directions, disc > 0


def test_intersections_equal_analytic_ray_sphere_hits():
    center = torch.tensor([0.01, -0.02, 0.0])
    radii = torch.tensor([0.1, 0.08, 0.05])
    levels = radii * FIELD_SCALE
    origins = camera.origins_from_angles(torch.tensor([1.5, 1.7]), torch.tensor([1.4, 1.9]))
    cam2world, ray_origins, ray_directions = camera.world_rays(origins, 16, 12)
    samples = camera.coarse_samples(cam2world, 16, 12, 0.88, 1.12, 64)
    points, valid = first_crossings(samples, sphere_field(samples, center), levels)
    checked = 0
    for k, radius in enumerate(radii):
        expected, hit = analytic_first_hit(ray_origins.double(), ray_directions.double(), center.double(), radius)
        # grazing rays may miss the sphere between samples; all others must agree with the analytic hit
        clear = hit & ((ray_origins.double() - center.double()).cross(ray_directions.double(), dim=-1)
                       .norm(dim=-1) < radius - 0.004)
        assert (valid[..., k, 0][clear] == 1).all()
        assert (valid[..., k, 0][~hit] == 0).all()
        error = (points[..., k, :].double() - expected)[clear].norm(dim=-1)
        assert error.max() < 1e-4
        checked += int(clear.sum())
    assert checked > 100


def test_missed_rays_are_invalid_and_sit_at_the_last_sample():
    samples = torch.linspace(0, 1, 8).reshape(1, 1, 8, 1).expand(1, 1, 8, 3).contiguous()
    field = torch.linspace(10, 3, 8).reshape(1, 1, 8, 1)  # crosses 5 but never 1
    points, valid = first_crossings(samples, field, torch.tensor([5.0, 1.0]))
    assert valid[0, 0, :, 0].tolist() == [1.0, 0.0]
    torch.testing.assert_close(points[0, 0, 1], samples[0, 0, -1])


def test_exiting_crossings_are_ignored_and_the_first_entry_wins():
    # field goes down through 5, up through 5 (exit), down again: the first entry is chosen
    values = torch.tensor([8.0, 6.0, 4.0, 6.0, 8.0, 6.0, 4.0, 2.0])
    positions = torch.arange(8.0)
    samples = torch.stack([positions, torch.zeros(8), torch.zeros(8)], -1).reshape(1, 1, 8, 3)
    points, valid = first_crossings(samples, values.reshape(1, 1, 8, 1), torch.tensor([5.0]))
    assert valid.item() == 1
    assert abs(points[0, 0, 0, 0].item() - 1.5) < 1e-6  # root between samples 1 (6) and 2 (4)
    # only an exit: no valid crossing
    rising = torch.tensor([2.0, 4.0, 6.0, 8.0, 9.0, 9.5, 9.7, 9.9])
    _, valid = first_crossings(samples, rising.reshape(1, 1, 8, 1), torch.tensor([5.0]))
    assert valid.item() == 0


def test_flat_interval_takes_the_far_end_but_stays_valid():
    samples = torch.stack([torch.arange(4.0), torch.zeros(4), torch.zeros(4)], -1).reshape(1, 1, 4, 3)
    field = torch.tensor([5.02, 4.99, 4.0, 3.0]).reshape(1, 1, 4, 1)  # |ds| = 0.03 <= 0.05 on the crossing
    points, valid = first_crossings(samples, field, torch.tensor([5.0]))
    assert valid.item() == 1
    assert points[0, 0, 0, 0].item() == 1.0


def test_gradients_reach_the_field_through_the_root():
    samples = torch.stack([torch.arange(4.0), torch.zeros(4), torch.zeros(4)], -1).reshape(1, 1, 4, 3)
    field = torch.tensor([9.0, 7.0, 3.0, 1.0]).reshape(1, 1, 4, 1).requires_grad_(True)
    points, _ = first_crossings(samples, field, torch.tensor([5.0]))
    points[..., 0].sum().backward()
    assert field.grad[0, 0, 1].abs() > 0 and field.grad[0, 0, 2].abs() > 0
    assert field.grad[0, 0, 0] == 0 and field.grad[0, 0, 3] == 0


def test_levels_descend_from_start_to_end():
    levels = manifold_levels(23, 8, 23)
    assert levels[0] == 23 and levels[-1] == 8
    assert torch.allclose(levels[:-1] - levels[1:], torch.full((22,), 15 / 22))


def test_geometric_init_makes_concentric_shells_around_the_centre():
    torch.manual_seed(0)
    predictor = ManifoldPredictor(128, 3, center=(0, 0, -1.5))
    z = torch.tensor([-0.3, -0.18, 0.0, 0.1, 0.2, 0.3])
    points = torch.stack([torch.zeros(6), torch.zeros(6), z], -1)
    with torch.no_grad():
        field = predictor(points)[:, 0]
    distance = (z + 0.18).abs() * (2 / 0.24)
    # grows with the distance from world (0, 0, -0.18), roughly like 10x the normalised distance
    assert field[1] == field.min()
    assert (field[2:].diff() > 0).all()
    assert ((field[2:] / (10 * distance[2:])) - 1).abs().max() < 0.5
    assert math.isclose(predictor.output_layer.weight[0, 0].item(), 10 * math.sqrt(math.pi / 128), rel_tol=1e-6)
