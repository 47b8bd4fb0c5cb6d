"""GRAM as a 3D object: fields, alpha and colour at arbitrary world points for one latent, volumes on a grid,
marching-cubes surfaces and their vertex colours. Used by extract_mesh.py; meant for a viewer too.

Conventions: points are world coordinates [N, 3] (the camera sits on the unit sphere, so one unit is one
camera radius); volumes are numpy float32 [R, R, R] indexed [x, y, z] on the cube [-h, h]^3 with
R samples per axis (voxel size 2h / (R - 1)); meshes are (vertices [V, 3] world float32, faces [F, 3] int,
vertex normals [V, 3] unit, pointing out of the solid).

Two surfaces are offered:
- the alpha surface: the iso-surface of GRAM's per-sample opacity alpha = 1 - exp(-delta * sigma) (delta = the
  config's delta_alpha, 0.04 for faces) of the radiance network on an R^3 grid; this is how the GRAM
  authors made their proxy shapes (issue microsoft/GRAM#1). It depends on the latent;
- the manifolds: GRAM's own surfaces, the iso-surfaces s(p) = level of the z-independent manifold field,
  cut to the region the camera prior sees; colour and alpha on them depend on the latent.
"""
import math

import numpy as np
import torch

from . import camera
from .compositing import sample_alpha

# Radiance-network points per call: bounds the activations ([chunk, hidden] per layer) at any resolution.
DEFAULT_CHUNK = 2 ** 16
# Default iso-level of the alpha surface: where one GRAM sample (one manifold crossing) would stop half of
# the light that reaches it, so that an opaque surface's mesh sits where its rays spend their weight.
DEFAULT_ALPHA_LEVEL = 0.5
# Cameras per axis of the prior grid that decides which manifold parts are seen (see `seen_by_prior`).
PRIOR_GRID = 7
# A Gaussian prior is covered out to this many standard deviations.
PRIOR_STDDEVS = 2.0


def default_half_extent(generator):
    """Half side h of the default cube [-h, h]^3: the depth band the camera's rays sample around the origin
    (max(1 - ray_start, ray_end - 1): 0.12 for faces/cats, 0.3 for CARLA), where every surface lies."""
    return float(max(1 - generator.camera['ray_start'], generator.camera['ray_end'] - 1))


def grid_axis(resolution, half_extent):
    """The R sample coordinates of one axis: linspace(-h, h, R) (float32)."""
    return torch.linspace(-half_extent, half_extent, resolution)


def _no_grad_chunks(function, points, chunk):
    with torch.no_grad():
        outputs = [function(points[start:start + chunk]) for start in range(0, points.shape[0], chunk)]
    if not outputs:
        return function(points)
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)


def manifold_field(generator, points, chunk=DEFAULT_CHUNK):
    """GRAM's z-independent scalar field s [N, 1] at world points [N, 3]; its levels are the manifolds."""
    return _no_grad_chunks(generator.representation.sample_network, points, chunk)


class LatentField:
    """The radiance field of one latent: rgb, sigma and alpha at arbitrary world points.

    Calls `representation.rf_network` directly with the latent's (truncated) FiLM parameters
    raw_frequencies / phases [1, F], in chunks of `chunk` points (memory stays bounded).
    """

    def __init__(self, generator, raw_frequencies, phases, chunk=DEFAULT_CHUNK):
        self.generator = generator
        self.raw_frequencies = raw_frequencies
        self.phases = phases
        self.chunk = chunk

    @classmethod
    def from_latent(cls, generator, z, truncation_psi=1.0, chunk=DEFAULT_CHUNK):
        """z [1, z_dim] on the generator's device; truncation as in `G.render` (FiLM parameters)."""
        if z.dim() != 2 or z.shape[0] != 1:
            raise ValueError(f"LatentField: one latent [1, z_dim] expected, got shape {tuple(z.shape)}")
        with torch.no_grad():
            raw_frequencies, phases = generator.mapping(z, truncation_psi)
        return cls(generator, raw_frequencies, phases, chunk)

    @property
    def device(self):
        return self.raw_frequencies.device

    def radiance(self, points, directions=None):
        """rgb [N, 3] (about [0, 1]) and sigma [N, 1] at world points [N, 3], seen along unit world
        directions [N, 3] (the direction of travel of the light's viewing ray; default (0, 0, -1), the
        frontal camera's, which GRAM-HD's locked view dependence also uses). Sigma ignores the direction."""
        network = self.generator.representation.rf_network
        if directions is None:
            directions = torch.tensor([0.0, 0.0, -1.0], device=points.device).expand_as(points)
        packed = torch.cat([points, directions], dim=-1)

        def evaluate(rows):
            out = network(rows[None, :, :3], rows[None, :, 3:], self.raw_frequencies, self.phases)[0]
            return out[:, :3], out[:, 3:4]
        return _no_grad_chunks(evaluate, packed, self.chunk)

    def alpha(self, points):
        """GRAM's opacity of a manifold sample at these points, 1 - exp(-delta_alpha * sigma) [N, 1]."""
        _, sigma = self.radiance(points)
        return sample_alpha(sigma, 1.0, self.generator.delta_alpha, self.generator.delta_alpha, ends_ray=False)


def evaluate_volume(function, resolution, half_extent, device='cpu', slabs_per_call=None, progress=None):
    """function(points [N, 3]) -> values [N, 1] evaluated on the R^3 grid of [-h, h]^3.

    Returns numpy float32 [R, R, R] indexed [x, y, z]. The grid is built one x-slab batch at a time, so
    memory is bounded by the slab size; `progress` (e.g. a tqdm bar) is advanced by the slabs done.
    """
    if resolution < 2:
        raise ValueError(f"volume resolution must be >= 2, got {resolution}")
    axis = grid_axis(resolution, half_extent).to(device)
    if slabs_per_call is None:
        slabs_per_call = max(1, 2 ** 18 // (resolution * resolution))
    y, z = torch.meshgrid(axis, axis, indexing='ij')
    plane = torch.stack([y.reshape(-1), z.reshape(-1)], dim=-1)  # [R*R, 2]
    volume = np.empty((resolution, resolution, resolution), dtype=np.float32)
    for start in range(0, resolution, slabs_per_call):
        xs = axis[start:start + slabs_per_call]
        points = torch.cat([xs.repeat_interleave(plane.shape[0])[:, None], plane.repeat(xs.shape[0], 1)], dim=-1)
        values = function(points).reshape(xs.shape[0], resolution, resolution)
        volume[start:start + xs.shape[0]] = values.float().cpu().numpy()
        if progress is not None:
            progress.update(xs.shape[0])
    return volume


def extract_surface(volume, level, half_extent, inside='above', closed=True):
    """Marching cubes (scikit-image, Lewiner) of `volume` [R, R, R] at `level`, in world coordinates.

    inside='above': the solid is where volume > level (alpha); 'below': where volume < level (GRAM's field,
    which grows away from the head). With `closed`, the volume is padded with one layer of 'outside' so
    that surfaces cut by the cube are capped (within half a voxel outside it) and the mesh is closed;
    without, cut surfaces stay open at the cube's faces (GRAM's manifolds). Returns (vertices [V, 3]
    float32, faces [F, 3] int64, normals [V, 3]) with normals pointing out of the solid and faces wound
    counter-clockwise seen from outside; empty arrays when the level is not crossed.
    """
    from skimage import measure

    if inside not in ('above', 'below'):
        raise ValueError(f"inside must be 'above' or 'below', got {inside!r}")
    volume = np.asarray(volume, dtype=np.float32)
    if inside == 'below':  # one orientation rule for both: the solid is where the values are higher
        volume, level = -volume, -level
    if not (volume > level).any():
        return _empty_mesh()
    outside = min(float(np.nanmin(volume)), level) - 1
    volume = np.nan_to_num(volume, nan=outside)
    pad = 1 if closed else 0
    if pad:
        volume = np.pad(volume, pad, constant_values=outside)
    elif (volume > level).all():
        return _empty_mesh()
    step = 2 * half_extent / (volume.shape[0] - 1 - 2 * pad)
    vertices, faces, normals, _ = measure.marching_cubes(volume, level, spacing=(step, step, step),
                                                         gradient_direction='descent')
    vertices = vertices - (half_extent + pad * step)  # undo the padding and move the cube to [-h, h]^3
    # Mesh files expect counter-clockwise faces seen from outside; make the winding agree with the normals.
    corners = vertices[faces]
    winding = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    if np.sum(winding * normals[faces].sum(axis=1)) < 0:
        faces = faces[:, ::-1]
    return vertices.astype(np.float32), np.ascontiguousarray(faces, dtype=np.int64), normals.astype(np.float32)


def _empty_mesh():
    return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32)


def vertex_colors(field, vertices, normals, view='normal'):
    """Colour rgb [V, 3] in [0, 1] and alpha [V, 1] of the radiance field at mesh vertices (numpy in/out).

    view='normal': each vertex is seen along its normal (a camera outside the surface looking straight at
    it, ray direction = -normal); view='frontal': every vertex is seen as the frontal camera sees it
    (direction (0, 0, -1)).
    """
    if view not in ('normal', 'frontal'):
        raise ValueError(f"view must be 'normal' or 'frontal', got {view!r}")
    if len(vertices) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 1), np.float32)
    points = torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(field.device)
    directions = None
    if view == 'normal':
        directions = -torch.nn.functional.normalize(torch.from_numpy(np.asarray(normals, np.float32)), dim=-1)
        directions = directions.to(field.device)
    rgb, sigma = field.radiance(points, directions)
    alpha = sample_alpha(sigma, 1.0, field.generator.delta_alpha, field.generator.delta_alpha, ends_ray=False)
    return rgb.clamp(0, 1).cpu().numpy(), alpha.cpu().numpy()


def prior_camera_origins(generator, per_axis=PRIOR_GRID):
    """Origins [C, 3] of a per_axis x per_axis grid of poses spanning the camera prior (mean +- 2 std for
    a Gaussian prior, the whole range for uniform ones)."""
    prior = generator.prior
    spread = PRIOR_STDDEVS if prior['mode'] in ('normal', 'gaussian') else 1.0
    if prior['mode'] in ('fixed', 'mean'):
        spread = 0.0
    yaw = torch.linspace(-1, 1, per_axis, dtype=torch.float64) * spread * prior['h_stddev'] + prior['h_mean']
    pitch = torch.linspace(-1, 1, per_axis, dtype=torch.float64) * spread * prior['v_stddev'] + prior['v_mean']
    pitch = pitch.clamp(1e-5, math.pi - 1e-5)
    pitch, yaw = torch.meshgrid(pitch, yaw, indexing='ij')
    return camera.origins_from_angles(pitch.reshape(-1), yaw.reshape(-1))


def seen_by_prior(generator, vertices, normals, per_axis=PRIOR_GRID):
    """bool [V]: vertices that some camera of the prior grid sees as a GRAM intersection: inside its image,
    between ray_start and ray_end from it, and facing it (GRAM only takes crossings where the field drops
    along the ray, i.e. where the ray enters the manifold). Occlusion is not tested."""
    if len(vertices) == 0:
        return np.zeros(0, bool)
    origins = prior_camera_origins(generator, per_axis).to(torch.float64)
    points = torch.from_numpy(np.asarray(vertices, np.float64))
    outward = torch.from_numpy(np.asarray(normals, np.float64))
    seen = torch.zeros(points.shape[0], dtype=torch.bool)
    fov, near, far = generator.camera['fov'], generator.camera['ray_start'], generator.camera['ray_end']
    for origin in origins:
        ndc, distance, in_front = camera.project_points(origin[None], points[None], fov)
        inside = (ndc[0].abs() <= 1).all(dim=-1) & in_front[0] & (distance[0] >= near) & (distance[0] <= far)
        facing = ((origin[None] - points) * outward).sum(-1) > 0
        seen |= inside & facing
    return seen.numpy()


def keep_vertices(vertices, faces, normals, keep, *attributes):
    """The sub-mesh of faces whose three vertices are kept, re-indexed; attributes [V, ...] follow."""
    keep = np.asarray(keep, bool)
    faces = faces[keep[faces].all(axis=1)]
    used = np.zeros(len(vertices), bool)
    used[faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1
    return (vertices[used], new_index[faces], normals[used]) + tuple(a[used] for a in attributes)
