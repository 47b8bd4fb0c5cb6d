"""Camera conventions: pose labels, look-at basis, ray grid orientation, pose priors."""
import math

import pytest
import torch

from generators import camera


def test_frontal_pose_is_the_positive_z_axis():
    origin = camera.origins_from_angles(torch.tensor([math.pi / 2]), torch.tensor([math.pi / 2]))
    torch.testing.assert_close(origin, torch.tensor([[0.0, 0.0, 1.0]]), atol=1e-7, rtol=0)


def test_positive_pitch_offset_puts_the_camera_below_the_equator():
    origin = camera.origins_from_angles(torch.tensor([math.pi / 2 + 0.2]), torch.tensor([math.pi / 2]))
    assert origin[0, 1] < 0
    # yaw above pi/2 moves the camera towards -x
    origin = camera.origins_from_angles(torch.tensor([math.pi / 2]), torch.tensor([math.pi / 2 + 0.3]))
    assert origin[0, 0] < 0


def test_origins_are_computed_in_float64_and_cast_once():
    pitch = torch.tensor([1.7707963267948965], dtype=torch.float64)
    yaw = torch.tensor([1.2707963267948965], dtype=torch.float64)
    expected = torch.tensor([[math.sin(pitch) * math.cos(yaw), math.cos(pitch), math.sin(pitch) * math.sin(yaw)]],
                            dtype=torch.float64).float()
    assert torch.equal(camera.origins_from_angles(pitch, yaw), expected)


def test_angles_round_trip():
    pitch = torch.tensor([1.2, 1.57, 2.0], dtype=torch.float64)
    yaw = torch.tensor([0.3, 1.57, 2.9], dtype=torch.float64)
    back_pitch, back_yaw = camera.angles_from_origins(camera.origins_from_angles(pitch, yaw).double())
    torch.testing.assert_close(back_pitch, pitch, atol=1e-6, rtol=0)
    torch.testing.assert_close(back_yaw, yaw, atol=1e-6, rtol=0)


def test_frontal_look_at_basis():
    cam2world = camera.look_at_cam2world(torch.tensor([[0.0, 0.0, 1.0]]))[0]
    # camera +x -> world +x (image right), camera +y -> world +y (up), camera looks down -z at the origin
    torch.testing.assert_close(cam2world[:3, :3], torch.eye(3), atol=1e-7, rtol=0)
    torch.testing.assert_close(cam2world[:3, 3], torch.tensor([0.0, 0.0, 1.0]))


def test_look_at_points_every_camera_at_the_origin():
    origins = camera.origins_from_angles(torch.tensor([1.3, 1.9, 0.4]), torch.tensor([0.2, 1.5, 3.0]))
    cam2world = camera.look_at_cam2world(origins)
    forward = -cam2world[:, :3, 2]
    torch.testing.assert_close(forward, -origins / origins.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)
    rotation = cam2world[:, :3, :3]
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6, rtol=0)


def test_ray_grid_row_zero_is_top_and_fov_spans_pixel_centres():
    size, fov = 8, 12
    directions = camera.camera_ray_directions(size, fov).reshape(size, size, 3)
    assert directions[0, :, 1].min() > 0 and directions[-1, :, 1].max() < 0   # row 0 looks up (+y)
    assert directions[:, 0, 0].max() < 0 and directions[:, -1, 0].min() > 0   # column 0 looks left (-x)
    assert (directions[..., 2] < 0).all()
    # the outermost pixel centres are exactly fov apart horizontally (on the middle row of an odd grid)
    odd = camera.camera_ray_directions(9, fov).reshape(9, 9, 3)
    left, right = odd[4, 0], odd[4, -1]
    angle = torch.rad2deg(torch.arccos((left * right).sum()))
    assert abs(angle.item() - fov) < 1e-3
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(size, size), atol=1e-6, rtol=0)


def test_coarse_samples_lie_on_the_rays_at_the_given_distances():
    origins = camera.origins_from_angles(torch.tensor([1.4]), torch.tensor([1.8]))
    cam2world, ray_origins, ray_directions = camera.world_rays(origins, 4, 12)
    samples = camera.coarse_samples(cam2world, 4, 12, 0.88, 1.12, 5)
    distances = (samples - ray_origins.unsqueeze(2)).norm(dim=-1)
    torch.testing.assert_close(distances[0], torch.linspace(0.88, 1.12, 5).expand(16, 5), atol=1e-6, rtol=0)
    along = ray_origins.unsqueeze(2) + distances.unsqueeze(-1) * ray_directions.unsqueeze(2)
    torch.testing.assert_close(along, samples, atol=1e-6, rtol=0)
    # a pixel range selects the same rows as slicing the full image
    part = camera.coarse_samples(cam2world, 4, 12, 0.88, 1.12, 5, pixel_range=(3, 9))
    assert torch.equal(part, samples[:, 3:9])


def test_gaussian_prior_statistics():
    rng = torch.Generator().manual_seed(0)
    pitch, yaw = camera.sample_camera_angles(20000, 0.3, 0.155, math.pi / 2, math.pi / 2, 'gaussian', generator=rng)
    assert abs(yaw.mean() - math.pi / 2) < 0.01 and abs(yaw.std() - 0.3) < 0.01
    assert abs(pitch.mean() - math.pi / 2) < 0.01 and abs(pitch.std() - 0.155) < 0.01


def test_spherical_uniform_covers_the_carla_cap():
    rng = torch.Generator().manual_seed(0)
    v = math.pi * 42.5 / 180
    pitch, yaw = camera.sample_camera_angles(20000, math.pi, v, math.pi / 2, v, 'spherical_uniform', generator=rng)
    assert pitch.min() > 0 and pitch.max() <= math.acos(1 - 2 * (2 * v / math.pi)) + 1e-4
    assert yaw.min() >= -math.pi / 2 - 1e-6 and yaw.max() <= 3 * math.pi / 2 + 1e-6
    # uniform in area: cos(pitch) is uniform on the cap
    cos_pitch = torch.cos(pitch)
    assert abs(cos_pitch.mean().item() - (1 + cos_pitch.min().item()) / 2) < 0.01


def test_unknown_prior_is_a_clear_error():
    with pytest.raises(ValueError, match='sample_dist'):
        camera.sample_camera_angles(2, 0.3, 0.1, 1.5, 1.5, 'banana')
