"""3D outputs: meshes of hand-set fields, depth / normal maps against analytic depth, interpolation videos."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import configs
import extract_mesh
import inference
from generators import build_generator, load_generator, surfaces
from rendering import interpolation, meshing, view_jobs
from utils.checkpoints import atomic_save, make_checkpoint
from utils.meshes import render_mesh_preview
from utils.maps import decode_depth16, depth_range, encode_depth16
from utils.seeds import latent_for_seed

CENTER = (0.01, -0.02, 0.015)
RADIUS = 0.06
COLOR = (0.2, 0.5, 0.8)


class SphereRadiance(torch.nn.Module):
    """A radiance network whose alpha is a linear ramp through 0.5 at |p - c| = r and whose colour is constant."""

    def forward(self, points, directions, raw_frequencies, phases):
        distance = torch.norm(points - torch.tensor(CENTER), dim=-1, keepdim=True)
        alpha = (0.5 + (RADIUS - distance) / 0.04).clamp(0, 0.999)
        sigma = -torch.log1p(-alpha) / 0.04  # GRAM: alpha = 1 - exp(-0.04 sigma)
        return torch.cat([torch.tensor(COLOR).expand(*points.shape[:-1], 3), sigma], dim=-1)


class SphereField(torch.nn.Module):
    """A manifold field s = 100 |p - c|: level l is the sphere of radius l / 100 around c."""

    def forward(self, points):
        return 100 * torch.norm(points - torch.tensor(CENTER), dim=-1, keepdim=True)


def tiny_generator():
    torch.manual_seed(0)
    return build_generator('TINY_GRAM').eval()


def test_alpha_sphere_mesh_has_the_set_radius_centre_and_colour(one_thread, tmp_path):
    generator = tiny_generator()
    generator.representation.rf_network = SphereRadiance()
    field = surfaces.LatentField(generator, torch.zeros(1, 8), torch.zeros(1, 8), chunk=5000)
    resolution, half = 40, 0.12
    voxel = 2 * half / (resolution - 1)
    volume = surfaces.evaluate_volume(field.alpha, resolution, half)
    vertices, faces, normals = surfaces.extract_surface(volume, 0.5, half)
    offsets = vertices - np.array(CENTER)
    radii = np.linalg.norm(offsets, axis=1)
    assert len(faces) > 500
    assert np.abs(vertices.mean(axis=0) - CENTER).max() < voxel
    assert np.abs(radii - RADIUS).max() < voxel
    assert (np.sum(offsets * normals, axis=1) > 0).all()  # normals point out of the solid

    rgb, alpha = surfaces.vertex_colors(field, vertices, normals)
    np.testing.assert_allclose(rgb, np.broadcast_to(COLOR, rgb.shape), atol=1e-6)
    np.testing.assert_allclose(alpha, 0.5, atol=0.05)  # alpha at the iso-surface is the level

    from utils.meshes import colors_to_uint8, make_mesh, save_mesh
    import trimesh
    path = tmp_path / 'sphere.ply'
    save_mesh(make_mesh(vertices, faces, colors_to_uint8(rgb), normals), str(path))
    loaded = trimesh.load(path, process=False)
    assert loaded.is_watertight and loaded.volume > 0  # closed, faces wound outwards
    assert abs(loaded.volume - 4 / 3 * math.pi * RADIUS ** 3) < 0.05 * 4 / 3 * math.pi * RADIUS ** 3
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], np.broadcast_to(np.round(np.array(COLOR) * 255),
                                                                                      rgb.shape))


def test_cut_sphere_is_closed_by_the_cube():
    # A sphere larger than the cube: padding caps it, so the mesh stays closed.
    volume = np.ones((12, 12, 12), np.float32)
    vertices, faces, _ = surfaces.extract_surface(volume, 0.5, 0.1)
    import trimesh
    assert trimesh.Trimesh(vertices, faces).is_watertight
    assert np.abs(vertices).max() <= 0.1 + 0.1 / 11 + 1e-6


def _square(z, half):
    """Two triangles of the square |x|, |y| <= half at depth z, wound to face +z (the frontal camera)."""
    vertices = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    return vertices, np.array([[0, 1, 2], [0, 2, 3]])


def test_manifold_preview_composites_layers_by_alpha_back_to_front():
    # a red layer at alpha 0.5 in front of an opaque blue one, and beside them only the grey backdrop:
    # "over" compositing gives 0.5 red + 0.5 blue where they overlap, blue where only the back one is
    back_vertices, back_faces = _square(-0.05, 0.1)
    front_vertices, front_faces = _square(0.05, 0.05)
    vertices = np.concatenate([front_vertices, back_vertices])
    faces = np.concatenate([front_faces, back_faces + 4])
    rgba = np.array([[255, 0, 0, 128]] * 4 + [[0, 0, 255, 255]] * 4, np.uint8)
    picture = render_mesh_preview(vertices, faces, rgba, half_extent=0.12, size=240, composite_alpha=True)
    centre, back_only, outside = picture[120, 120], picture[120, 120 + 75], picture[5, 5]
    assert np.abs(centre.astype(int) - [128, 0, 127]).max() <= 2
    assert np.abs(back_only.astype(int) - [0, 0, 255]).max() <= 1
    assert np.abs(outside.astype(int) - [128, 128, 128]).max() <= 1
    # the default (a surface's shape): opaque and Lambert-shaded, so the front layer hides the back one
    shaded = render_mesh_preview(vertices, faces, rgba, half_extent=0.12, size=240)
    assert np.abs(shaded[120, 120].astype(int) - [255, 0, 0]).max() <= 1
    with pytest.raises(ValueError, match='RGBA'):
        render_mesh_preview(vertices, faces, rgba[:, :3], half_extent=0.12, composite_alpha=True)


def test_manifolds_are_the_field_level_sets_cut_to_what_the_prior_sees(one_thread):
    generator = tiny_generator()
    generator.representation.sample_network = SphereField()
    half, resolution = 0.12, 40
    voxel = 2 * half / (resolution - 1)
    vertices, faces, normals, level_index = meshing.manifold_surfaces(generator, resolution, half, 5000, None)
    levels = generator.levels('cpu').numpy()
    radii = np.linalg.norm(vertices - np.array(CENTER), axis=1)
    expected = levels[level_index] / 100
    inside_cube = np.abs(vertices).max(axis=1) < half - voxel
    assert inside_cube.sum() > 100
    assert np.abs(radii - expected)[inside_cube].max() < voxel
    # Only the side the cameras (+z, yaw within +-0.6 rad) see is kept; the back of every sphere is cut away.
    assert normals[:, 2].min() > -0.8
    assert (normals[:, 2] > 0.9).sum() > 100
    # spheres inside the cube are there; radius 0.23 lies outside it (its corners are 0.21 from the centre)
    assert {5, 6} <= set(np.unique(level_index).tolist()) and 0 not in level_index


def plane_only_generator():
    """TINY_GRAM whose manifolds are transparent (sigma = softplus(-20)) and whose plane is opaque (its delta is
    1e10): every pixel shows the background plane z = -0.12."""
    generator = tiny_generator()
    with torch.no_grad():
        for head in generator.representation.rf_network.output_sigma:
            head.weight.zero_()
            head.bias.zero_()
        generator.representation.rf_network.output_sigma[0].bias.fill_(-20.0)
    return generator


def analytic_plane_depth(pitch, yaw, size, fov):
    """Distance along each pixel's ray to the plane z = -0.12, from the README's camera convention."""
    origin = np.array([math.sin(pitch) * math.cos(yaw), math.cos(pitch), math.sin(pitch) * math.sin(yaw)])
    forward = -origin / np.linalg.norm(origin)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    ndc = np.linspace(-1, 1, size)
    focal = 1 / math.tan(math.radians(fov) / 2)
    x, y = np.meshgrid(ndc, -ndc)  # row 0 at the top (+y)
    directions = x[..., None] * right + y[..., None] * up + focal * forward
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    return (-0.12 - origin[2]) / directions[..., 2], right, up, forward


@pytest.mark.parametrize('yaw_offset', [0.0, 0.3])
def test_depth_of_the_background_plane_is_analytic(one_thread, yaw_offset):
    generator = plane_only_generator()
    pitch, yaw = math.pi / 2 + 0.1, math.pi / 2 + yaw_offset
    z = latent_for_seed(0, generator.z_dim)
    with torch.no_grad():
        _, depth = generator.render(z, torch.tensor([pitch], dtype=torch.float64),
                                    torch.tensor([yaw], dtype=torch.float64), img_size=16, return_depth=True)
    expected, *_ = analytic_plane_depth(pitch, yaw, 16, generator.camera['fov'])
    np.testing.assert_allclose(depth[0, 0].numpy(), expected, rtol=1e-5)


def test_inference_writes_depth_and_normal_maps_of_the_plane(one_thread, tmp_path):
    generator = plane_only_generator()
    ckpt = tmp_path / 'plane.pt'
    atomic_save(make_checkpoint('generator', configs.get_config('TINY_GRAM'), 0,
                                {'state_dict': generator.state_dict()}, 'TINY_GRAM'), ckpt)
    out = tmp_path / 'out'
    inference.main(['--ckpt', str(ckpt), '--seeds', '3', '--type', 'multiview1x3', '--img_size', '16',
                    '--outputs', 'rgb,depth,normal', '--output_dir', str(out), '--device', 'cpu'])
    record = json.loads((out / 'grid_3_depth.json').read_text())
    encoded = np.asarray(Image.open(out / 'grid_3_depth.png'))
    assert encoded.dtype == np.uint16 and encoded.shape == (16, 48)
    depth = decode_depth16(encoded, record['near'], record['far'])
    normals = np.asarray(Image.open(out / 'grid_3_normal.png')).astype(np.float64) / 255 * 2 - 1
    assert (out / 'grid_3_depth_preview.png').is_file() and (out / 'grid_3.png').is_file()
    step = (record['far'] - record['near']) / 65534
    for column, yaw_offset in enumerate((-0.3, 0.0, 0.3)):
        expected, right, up, forward = analytic_plane_depth(math.pi / 2, math.pi / 2 + yaw_offset, 16,
                                                            generator.camera['fov'])
        tile = np.s_[:, column * 16:(column + 1) * 16]
        np.testing.assert_allclose(depth[tile], expected, atol=step / 2 + 2e-6)
        # camera space: +x right, +y up, +z towards the viewer; the plane's world normal is +z
        plane_normal = np.array([right[2], up[2], -forward[2]])
        np.testing.assert_allclose(normals[tile], np.broadcast_to(plane_normal, (16, 16, 3)), atol=1.5 / 255)


def test_depth_encoding_round_trip():
    depth = np.array([[1.0, 1.05, np.nan], [1.1, 1.2, 0.9]])
    near, far = depth_range([depth])
    assert (near, far) == (0.9, 1.2)
    encoded = encode_depth16(depth, near, far)
    assert encoded[0, 2] == 0 and encoded.min() == 0 and encoded.max() == 65535
    decoded = decode_depth16(encoded, near, far)
    assert np.isnan(decoded[0, 2])
    np.testing.assert_allclose(decoded[np.isfinite(depth)], depth[np.isfinite(depth)], atol=0.3 / 65534)


def test_keyframe_latents_hit_every_key_exactly():
    keys = torch.randn(3, 16)
    latents = interpolation.keyframe_latents(keys, 4)
    assert latents.shape == (9, 16)
    for index in range(3):
        assert torch.equal(latents[index * 4], keys[index])
    assert not torch.equal(latents[1], keys[0])
    offsets = interpolation.orbit_offsets(9)
    assert offsets[0] == (0.0, 0.0) and np.allclose(offsets[-1], (0.0, 0.0), atol=1e-12)


def test_interpolation_video_starts_and_ends_at_the_key_renders(one_thread, tiny_ckpt, tmp_path, monkeypatch):
    videos = {}
    monkeypatch.setattr(view_jobs, 'save_video', lambda frames, path, fps: videos.__setitem__(path, list(frames)))
    out = tmp_path / 'interp'
    inference.main(['--ckpt', str(tiny_ckpt), '--seeds', '0-3', '--type', 'interpolation', '--img_size', '16',
                    '--num_keyframes', '2', '--frames_per_key', '3', '--interp_grid', '1x2', '--no_watermark',
                    '--truncation', '0.5', '--output_dir', str(out), '--device', 'cpu'])
    frames = videos[str(out / 'interpolation.mp4')]
    assert len(frames) == 4 and frames[0].shape == (16, 32, 3)
    generator = load_generator(tiny_ckpt)
    frontal = (torch.tensor([math.pi / 2], dtype=torch.float64), torch.tensor([math.pi / 2], dtype=torch.float64))
    # cells: (0 -> 1) and (2 -> 3); the orbit starts and ends at the frontal camera
    for frame, seeds in ((frames[0], (0, 2)), (frames[-1], (1, 3))):
        for cell, seed in enumerate(seeds):
            key, _ = view_jobs.render_batch(generator, latent_for_seed(seed, generator.z_dim), *frontal, 16, 0.5,
                                            True)
            np.testing.assert_array_equal(frame[:, cell * 16:(cell + 1) * 16], key[0])
    assert not np.array_equal(frames[1], frames[0])


@pytest.mark.parametrize('flags, message', [
    (['--outputs', 'rgb,height'], 'unknown name height'),
    (['--type', 'interpolation', '--interp_grid', '2by2'], 'ROWSxCOLS'),
    (['--type', 'interpolation', '--num_keyframes', '1'], '--num_keyframes must be >= 2'),
    (['--type', 'interpolation', '--frames_per_key', '0'], 'positive integer'),
])
def test_bad_inference_flags_fail_with_a_reason(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as error:
        inference.main(['--output_dir', str(tmp_path)] + flags)
    assert message in str(error.value) + capsys.readouterr().err


@pytest.mark.parametrize('flags, message', [
    (['--level', '1.5'], '--level is an alpha in (0, 1)'),
    (['--resolution', '4'], '--resolution must be between 8 and 2048'),
    (['--formats', 'ply,stl'], "unknown format 'stl'"),
    (['--half_extent', '0'], '--half_extent must be in (0, 1]'),
])
def test_bad_extract_mesh_flags_fail_with_a_reason(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as error:
        extract_mesh.main(['--output_dir', str(tmp_path)] + flags)
    assert message in str(error.value) + capsys.readouterr().err


def test_extract_mesh_writes_every_format(one_thread, tiny_ckpt, tmp_path, capsys):
    import mrcfile
    import trimesh

    # An untrained GRAM has alpha of about 0.027 everywhere: at level 0.02 the whole cube is solid.
    extract_mesh.main(['--ckpt', str(tiny_ckpt), '--seeds', '1', '--resolution', '12', '--level', '0.02',
                       '--formats', 'ply,obj,glb', '--mrc', '--manifolds', '--output_dir', str(tmp_path)])
    mesh = trimesh.load(tmp_path / 'mesh_1.ply', process=False)
    assert mesh.is_watertight and len(mesh.visual.vertex_colors) == len(mesh.vertices)
    assert np.abs(mesh.vertices).max() == pytest.approx(0.12 + 0.12 / 11, abs=0.12 / 11)
    assert len(trimesh.load(tmp_path / 'mesh_1.obj', process=False).vertices) == len(mesh.vertices)
    assert (tmp_path / 'mesh_1.glb').stat().st_size > 0
    manifolds = trimesh.load(tmp_path / 'manifolds_1.ply', process=False)
    assert len(manifolds.vertices) > 0 and manifolds.visual.vertex_colors.shape[1] == 4
    with mrcfile.open(tmp_path / 'volume_1.mrc') as volume:
        assert volume.data.shape == (12, 12, 12)
        np.testing.assert_allclose(volume.data, 0.027, atol=0.01)
    assert 'watertight True' in capsys.readouterr().out


def test_gramhd_writes_hr_and_lr_depth_maps(one_thread, tmp_path):
    out = tmp_path / 'hd'
    inference.main(['--untrained', '--config', 'TINY_GRAMHD', '--seeds', '0', '--type', 'multiview1x3',
                    '--outputs', 'depth,normal', '--output_dir', str(out), '--device', 'cpu'])
    assert not (out / 'grid_0.png').exists()  # rgb was not asked for
    for name, size in (('grid_0', 64), ('grid_0_lr', 16)):
        record = json.loads((out / f'{name}_depth.json').read_text())
        depth = decode_depth16(np.asarray(Image.open(out / f'{name}_depth.png')), record['near'], record['far'])
        assert depth.shape == (size, 3 * size) and np.isfinite(depth).all()
        assert 0.8 < record['near'] < record['far'] < 1.3  # inside the camera's depth band (plus the plane)
        assert np.asarray(Image.open(out / f'{name}_normal.png')).shape == (size, 3 * size, 3)
    # the LR depth is the GRAM render's
    torch.manual_seed(0)
    generator = build_generator('TINY_GRAMHD').eval()
    z = latent_for_seed(0, generator.z_dim)
    angle = torch.tensor([math.pi / 2], dtype=torch.float64)
    with torch.no_grad():
        textures = generator.manifold_textures(z, truncation_psi=0.7)
        _, lr_depth = generator.render_from_textures(textures, angle, angle, return_lr_depth=True)
        _, expected, _ = generator.lr_render(textures, generator._camera_origins(angle, angle, 1, 'cpu')[0])
    torch.testing.assert_close(lr_depth, expected)
    lr_grid = decode_depth16(np.asarray(Image.open(out / 'grid_0_lr_depth.png')), *(
        json.loads((out / 'grid_0_lr_depth.json').read_text())[key] for key in ('near', 'far')))
    np.testing.assert_allclose(lr_grid[:, 16:32], lr_depth[0, 0].numpy(), atol=1e-4)


def test_extract_mesh_default_level_falls_back_for_a_transparent_model(one_thread, tiny_ckpt, tmp_path, capsys):
    """alpha 0.5 is never reached by an untrained (or a nearly transparent) model: the default level then
    becomes half the largest alpha, so the command still writes a surface; an explicit --level is kept."""
    extract_mesh.main(['--ckpt', str(tiny_ckpt), '--seeds', '1', '--resolution', '12', '--output_dir',
                       str(tmp_path / 'auto')])
    printed = capsys.readouterr().out
    assert 'half the largest alpha' in printed and (tmp_path / 'auto' / 'mesh_1.ply').exists()
    with pytest.raises(SystemExit) as stop:  # an explicit level the model never reaches: no mesh, exit non-zero
        extract_mesh.main(['--ckpt', str(tiny_ckpt), '--seeds', '1', '--resolution', '12', '--level', '0.5',
                           '--output_dir', str(tmp_path / 'fixed')])
    assert 'alpha peaks at' in str(stop.value.code) and 'below --level 0.5' in str(stop.value.code)
    assert 'no mesh written' in capsys.readouterr().out
    assert not (tmp_path / 'fixed').exists()
