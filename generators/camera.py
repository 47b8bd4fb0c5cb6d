"""Camera conventions shared by GRAM and GRAM-HD (one home for all camera math).

Pose label convention (official): pitch = phi, the polar angle from +y; yaw = theta, the azimuth in the
x-z plane from +x towards +z. The camera sits on the unit sphere at
    origin = (sin(phi) cos(theta), cos(phi), sin(phi) sin(theta))
and looks at the world origin with +y up. The frontal camera (0, 0, 1) is phi = theta = pi/2; a pitch
above pi/2 puts the camera below the equator.

Camera space is OpenGL-like (looks down -z, +x right, +y up). Pixel centres lie exactly at NDC +-1, `fov`
is the full angle in degrees between the outermost pixel centres, and row 0 of an image is +y (top).
"""
import functools
import math

import torch
import torch.nn.functional as F


def sample_camera_angles(n, h_stddev, v_stddev, h_mean, v_mean, mode='gaussian', device='cpu', generator=None):
    """Draw n camera poses from the training prior.

    Returns (pitch [n], yaw [n]) float32 tensors. Draw order (yaw first) follows pi-GAN/GRAM so that a
    seeded run draws the same poses as the reference code.
    """
    def rand(*shape):
        return torch.rand(*shape, device=device, generator=generator)

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=generator)

    if mode == 'uniform':
        yaw = (rand(n) - 0.5) * 2 * h_stddev + h_mean
        pitch = (rand(n) - 0.5) * 2 * v_stddev + v_mean
    elif mode in ('normal', 'gaussian'):
        yaw = randn(n) * h_stddev + h_mean
        pitch = randn(n) * v_stddev + v_mean
    elif mode == 'spherical_uniform':
        # Uniform over the area of a spherical cap: v = (1 - cos(phi)) / 2 is drawn uniformly.
        yaw = (rand(n) - 0.5) * 2 * h_stddev + h_mean
        v = ((rand(n) - 0.5) * 2 * v_stddev + v_mean) / math.pi
        v = torch.clamp(v, 1e-5, 1 - 1e-5)
        pitch = torch.arccos(1 - 2 * v)
    elif mode in ('fixed', 'mean'):
        yaw = torch.full((n,), float(h_mean), device=device)
        pitch = torch.full((n,), float(v_mean), device=device)
    else:
        raise ValueError(f"unknown camera sample_dist {mode!r}; expected gaussian, uniform, spherical_uniform "
                         "or fixed")
    pitch = torch.clamp(pitch, 1e-5, math.pi - 1e-5)
    return pitch, yaw


def origins_from_angles(pitch, yaw, radius=1.0):
    """Camera origins [B, 3] (float32) from pitch/yaw [B] in radians.

    The trigonometry runs in float64 and is cast to float32 once, as the official scripts do in NumPy:
    the first-crossing rule is discontinuous, so an origin computed in float32 flips borderline samples.
    """
    pitch = torch.as_tensor(pitch).to(torch.float64).reshape(-1)
    yaw = torch.as_tensor(yaw).to(torch.float64).reshape(-1)
    origin = torch.stack([torch.sin(pitch) * torch.cos(yaw), torch.cos(pitch), torch.sin(pitch) * torch.sin(yaw)], -1)
    return (radius * origin).to(torch.float32)


def angles_from_origins(origins):
    """Inverse of `origins_from_angles`: (pitch [B], yaw [B]) of origins [B, 3] (any radius)."""
    origins = origins.to(torch.float64)
    radius = origins.norm(dim=-1)
    pitch = torch.arccos(torch.clamp(origins[:, 1] / radius, -1, 1))
    yaw = torch.atan2(origins[:, 2], origins[:, 0])
    return pitch, yaw


def _normalize(vectors):
    return vectors / torch.norm(vectors, dim=-1, keepdim=True)


def look_at_cam2world(origins):
    """Homogeneous camera-to-world matrices [B, 4, 4] for cameras at origins [B, 3] looking at (0, 0, 0).

    Rotation columns are (-left, up, -forward) with left = up0 x forward, up0 = +y (official basis).
    """
    forward = _normalize(_normalize(-origins))
    up0 = torch.tensor([0.0, 1.0, 0.0], dtype=origins.dtype, device=origins.device).expand_as(forward)
    left = _normalize(torch.cross(up0, forward, dim=-1))
    up = _normalize(torch.cross(forward, left, dim=-1))
    batch = origins.shape[0]
    rotation = torch.eye(4, dtype=origins.dtype, device=origins.device).repeat(batch, 1, 1)
    rotation[:, :3, :3] = torch.stack((-left, up, -forward), dim=-1)
    translation = torch.eye(4, dtype=origins.dtype, device=origins.device).repeat(batch, 1, 1)
    translation[:, :3, 3] = origins
    return translation @ rotation


@functools.lru_cache(maxsize=32)
def _camera_ray_directions(img_size, fov, device):
    # Built once per (size, fov, device): rendering the same size again allocates nothing here.
    cols = torch.linspace(-1, 1, img_size, device=device)
    rows = torch.linspace(1, -1, img_size, device=device)
    y, x = torch.meshgrid(rows, cols, indexing='ij')
    x, y = x.flatten(), y.flatten()
    z = -torch.ones_like(x) / math.tan((2 * math.pi * fov / 360) / 2)
    return _normalize(torch.stack([x, y, z], -1))


def camera_ray_directions(img_size, fov, device='cpu'):
    """Unit ray directions in camera space [R = img_size**2, 3], rows top (+y) to bottom, row-major."""
    return _camera_ray_directions(int(img_size), float(fov), torch.device(device))


def _pixel_slice(directions_cam, pixel_range):
    return directions_cam if pixel_range is None else directions_cam[pixel_range[0]:pixel_range[1]]


def world_rays(origins, img_size, fov, pixel_range=None):
    """World-space rays of cameras at origins [B, 3].

    Returns (cam2world [B, 4, 4], ray_origins [B, R, 3], ray_directions [B, R, 3]) with R = img_size**2,
    or R = end - start for the flattened pixels of `pixel_range` = (start, end).
    The transforms use homogeneous batched matmuls as the official renderer does, so the float32 results
    (on which the discontinuous crossing test depends) match it.
    """
    batch = origins.shape[0]
    cam2world = look_at_cam2world(origins)
    directions_cam = _pixel_slice(camera_ray_directions(img_size, fov, origins.device), pixel_range)
    num_rays = directions_cam.shape[0]
    directions = torch.bmm(cam2world[:, :3, :3], directions_cam.T.unsqueeze(0).expand(batch, 3, num_rays))
    homogeneous_origin = torch.zeros(batch, 4, 1, dtype=origins.dtype, device=origins.device)
    homogeneous_origin[:, 3] = 1
    ray_origins = torch.bmm(cam2world, homogeneous_origin)[:, :3, 0]
    return cam2world, ray_origins.unsqueeze(1).expand(batch, num_rays, 3), directions.permute(0, 2, 1)


def coarse_samples(cam2world, img_size, fov, ray_start, ray_end, num_samples, pixel_range=None):
    """World-space sample points [B, R, S, 3] at distances linspace(ray_start, ray_end, S) along every ray.

    No jitter: the official renderer never perturbs these samples.
    """
    batch = cam2world.shape[0]
    directions_cam = _pixel_slice(camera_ray_directions(img_size, fov, cam2world.device), pixel_range)
    num_rays = directions_cam.shape[0]
    distances = torch.linspace(ray_start, ray_end, num_samples, device=cam2world.device)
    points_cam = directions_cam.unsqueeze(1) * distances.reshape(1, -1, 1)  # [R, S, 3]
    homogeneous = F.pad(points_cam.reshape(-1, 3), (0, 1), value=1.0)  # [R*S, 4]
    points = torch.bmm(cam2world, homogeneous.T.unsqueeze(0).expand(batch, 4, num_rays * num_samples))
    return points.permute(0, 2, 1)[..., :3].reshape(batch, num_rays, num_samples, 3)


def focal_from_fov(fov):
    """Focal length in NDC units (pixel centres at +-1) for a full field of view `fov` in degrees."""
    return 1.0 / math.tan(math.radians(float(fov)) / 2)


def unproject_depth(origins, depth, fov):
    """World points [B, H, W, 3] seen by cameras at origins [B, 3] through depth maps [B, 1, H, W].

    `depth` is the distance along each pixel's ray from the camera origin (what `G.render(...,
    return_depth=True)` returns), so a pixel's point is origin + depth * (unit ray direction). Rays are those
    of `world_rays`, hence the same pixel grid (square images, pixel centres at NDC +-1, row 0 = +y).
    """
    batch, _, height, width = depth.shape
    if height != width:
        raise ValueError(f"unproject_depth: square depth maps expected, got {height}x{width}")
    cam2world = look_at_cam2world(origins)
    directions_cam = camera_ray_directions(height, fov, origins.device).to(origins.dtype)
    directions = torch.einsum('bij,rj->bri', cam2world[:, :3, :3], directions_cam)
    points = origins.unsqueeze(1) + directions * depth.reshape(batch, -1, 1).to(origins.dtype)
    return points.reshape(batch, height, width, 3)


def project_points(origins, points, fov):
    """Project world points [B, N, 3] into cameras at origins [B, 3] (the inverse of `unproject_depth`).

    Returns (ndc [B, N, 2], distance [B, N], in_front [B, N]): ndc = (x right, y up) in the pixel-centre
    NDC of `camera_ray_directions` (a point on the ray of pixel column c, row r of an S x S image has
    x = -1 + 2c / (S - 1), y = 1 - 2r / (S - 1)); distance = Euclidean distance from the camera origin, the
    quantity stored in rendered depth maps; in_front = the point lies in front of the camera.
    """
    cam2world = look_at_cam2world(origins)
    rotation = cam2world[:, :3, :3]
    offsets = points - origins.unsqueeze(1)
    local = torch.einsum('bji,bnj->bni', rotation, offsets)  # R^T (p - o): world -> camera axes
    ahead = -local[..., 2]  # the camera looks down its -z axis
    in_front = ahead > 1e-6
    ndc = local[..., :2] * focal_from_fov(fov) / ahead.clamp_min(1e-6).unsqueeze(-1)
    return ndc, offsets.norm(dim=-1), in_front


def normals_from_depth(depth, fov):
    """Camera-space unit normals [B, 3, H, W] of the surface seen in depth maps [B, 1, H, W].

    `depth` is the distance along each pixel's ray (as rendered). Each pixel is unprojected to the camera
    space point depth * direction (OpenGL-like: +x right, +y up, +z towards the viewer); the normal is the
    cross product of the point's central differences along rows and columns (one-sided at the border),
    turned to face the camera. Pixels whose depth or neighbours are not finite get (0, 0, 0). Depth edges
    (silhouettes) give the normal of the steep connecting surface, as any depth-derived normal does.
    """
    batch, _, height, width = depth.shape
    if height != width:
        raise ValueError(f"normals_from_depth: square depth maps expected, got {height}x{width}")
    directions = camera_ray_directions(height, fov, depth.device).to(depth.dtype)  # [H*W, 3]
    points = (directions.reshape(1, height, width, 3) * depth.reshape(batch, height, width, 1))
    d_rows, d_cols = torch.gradient(points, dim=(1, 2))
    normals = torch.cross(d_cols, d_rows, dim=-1)
    facing = torch.sum(normals * points, dim=-1, keepdim=True) > 0  # points are rays away from the camera
    normals = torch.where(facing, -normals, normals)
    normals = normals / torch.norm(normals, dim=-1, keepdim=True).clamp_min(1e-20)
    normals = torch.nan_to_num(normals, nan=0.0, posinf=0.0, neginf=0.0)
    normals = torch.where(torch.isfinite(points).all(-1, keepdim=True), normals, torch.zeros_like(normals))
    return normals.permute(0, 3, 1, 2).contiguous()
