"""What the browser viewer (viewer.py) renders: camera conversion, the pose range, and one view in a render mode.

Kept free of viser so that it can be tested without a browser or a web server; viewer.py is the thin GUI
layer on top. Cameras follow README "Camera and angle convention" (GRAM's camera sits on the unit sphere at
(sin p cos y, cos p, sin p sin y) and looks at the origin, +y up); viser reports its camera as a world
position and a quaternion wxyz of R_world_camera with OpenCV axes (+x right, +y down, +z forward).
"""
import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from generators import camera, surfaces
from rendering import outputs3d
from utils.images import to_uint8
from utils.maps import colorize_depth, depth_range
from utils.seeds import latent_for_seed

VIEW_TYPES = ('video', 'multiview1x3', 'multiview3x7', 'rand', 'interpolation')


def view_offsets(view_type):
    """(rows, cols, [(pitch_offset, yaw_offset), ...] row-major, lock_view_dependence) of a view set."""
    if view_type == 'multiview1x3':
        return 1, 3, [(0.0, yaw) for yaw in (-0.3, 0.0, 0.3)], True
    if view_type == 'multiview3x7':
        yaws = np.linspace(-0.4, 0.4, 7)
        return 3, 7, [(pitch, float(yaw)) for pitch in (0.2, 0.0, -0.2) for yaw in yaws], True
    if view_type == 'video':
        yaws = list(np.linspace(-0.3, 0.3, 31)[:-1]) + list(np.linspace(0.3, -0.3, 31)[:-1])
        return 1, 1, [(0.0, float(yaw)) for yaw in yaws], True
    raise ValueError(f"unknown view type {view_type!r}; expected one of {', '.join(VIEW_TYPES)}")


def frontal_angles(pitch_offset, yaw_offset):
    """Official pose labels (float64) for offsets from the frontal camera: (pi/2 + pitch, pi/2 + yaw)."""
    return (torch.tensor([math.pi / 2 + pitch_offset], dtype=torch.float64),
            torch.tensor([math.pi / 2 + yaw_offset], dtype=torch.float64))


def frontal_offsets(pitch, yaw):
    """The inverse of `frontal_angles`: (pitch, yaw) offsets from the frontal camera as floats, of pose
    labels (tensors of one element, or floats)."""
    return float(pitch) - math.pi / 2, float(yaw) - math.pi / 2

RENDER_MODES = ('rgb', 'depth', 'normals', 'alpha')
# OpenGL camera axes (GRAM's look_at_cam2world: +x right, +y up, +z back) -> OpenCV ones (viser's).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def gram_to_viser(pitch, yaw, distance=1.0):
    """viser camera (position [3], wxyz [4]) of GRAM's camera at (pitch, yaw), `distance` from the origin."""
    direction = np.array([math.sin(pitch) * math.cos(yaw), math.cos(pitch), math.sin(pitch) * math.sin(yaw)])
    rotation_gl = camera.look_at_cam2world(torch.from_numpy(direction)[None])[0, :3, :3].numpy()
    x, y, z, w = Rotation.from_matrix(rotation_gl @ _GL_TO_CV).as_quat()
    return direction * distance, np.array([w, x, y, z])


def viser_to_gram(position, wxyz):
    """GRAM's (pitch, yaw, distance) of a viser camera.

    The view direction decides the pose: GRAM's camera is the one on the unit sphere that looks at the
    origin along the same direction, so a camera that has panned away from the origin still gets the view
    it faces. distance = how far in front of the camera the origin's plane lies (1 for GRAM's own cameras);
    the viewer turns it into a zoom. The roll is dropped (GRAM's cameras keep +y up).
    """
    w, x, y, z = np.asarray(wxyz, np.float64)
    forward = Rotation.from_quat([x, y, z, w]).as_matrix()[:, 2]
    pitch, yaw = camera.angles_from_origins(torch.from_numpy(-forward)[None])
    distance = float(-np.dot(np.asarray(position, np.float64), forward))
    return float(pitch[0]), float(yaw[0]), distance


def pose_range(generator, stddevs=surfaces.PRIOR_STDDEVS):
    """((pitch min, max), (yaw min, max)) the viewer keeps the camera in: the camera prior's bulk (mean +-
    `stddevs` std for a Gaussian prior, the whole range of a uniform one), where the model was trained."""
    prior = generator.prior
    mode = prior['mode']
    if mode in ('fixed', 'mean'):
        spread = 0.0
    else:
        spread = stddevs if mode in ('normal', 'gaussian') else 1.0
    yaw = (prior['h_mean'] - spread * prior['h_stddev'], prior['h_mean'] + spread * prior['h_stddev'])
    if mode == 'spherical_uniform':  # the prior is uniform in v = (1 - cos pitch) / 2
        ends = [min(max((prior['v_mean'] + sign * prior['v_stddev']) / math.pi, 1e-5), 1 - 1e-5) for sign in (-1, 1)]
        pitch = tuple(math.acos(1 - 2 * v) for v in ends)
    else:
        pitch = (prior['v_mean'] - spread * prior['v_stddev'], prior['v_mean'] + spread * prior['v_stddev'])
    pitch = (max(pitch[0], 1e-3), min(pitch[1], math.pi - 1e-3))  # never through a pole: +y up breaks there
    return pitch, yaw


def clamp_pose(generator, pitch, yaw):
    """(pitch, yaw) moved into `pose_range`; yaw is first wrapped to the turn around the range's centre."""
    (pitch_low, pitch_high), (yaw_low, yaw_high) = pose_range(generator)
    centre = (yaw_low + yaw_high) / 2
    yaw = centre + math.remainder(yaw - centre, 2 * math.pi)
    return min(max(pitch, pitch_low), pitch_high), min(max(yaw, yaw_low), yaw_high)


def zoomed_fov(fov, distance):
    """The field of view (degrees) that shows from radius 1 what `fov` shows from `distance`: GRAM's rays
    only sample the band ray_start..ray_end around radius 1, so zooming narrows the view instead of moving."""
    return math.degrees(2 * math.atan(math.tan(math.radians(fov) / 2) * distance))


def edge_fov(fov, img_size):
    """Full angle (degrees) between the outer pixel edges of an img_size render whose `fov` is between the
    outermost pixel centres (the project's convention): what a browser camera must span to show it."""
    return math.degrees(2 * math.atan(math.tan(math.radians(fov) / 2) * img_size / max(img_size - 1, 1)))


@contextlib.contextmanager
def camera_fov(generator, fov):
    """Render with another field of view: GRAM reads it from `generator.camera` at every render."""
    saved = generator.camera['fov']
    generator.camera['fov'] = float(fov)
    try:
        yield
    finally:
        generator.camera['fov'] = saved


def alpha_to_uint8(alpha, scale=None):
    """Alpha [H, W] in [0, 1] -> grey uint8 RGB; divided by `scale` (e.g. the frame's maximum) when given,
    so that a nearly transparent level still shows its shape."""
    alpha = np.nan_to_num(np.asarray(alpha, np.float64))
    if scale is not None and scale > 0:
        alpha = alpha / scale
    grey = np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def level_alpha(generator, z, pitch, yaw, img_size, level, truncation_psi=1.0, field=None):
    """GRAM's opacity [H, W] where each pixel's ray first crosses manifold `level` (0 = the outermost
    level), 0 where it does not: the intersections of `G.render` and the alpha of `surfaces.LatentField`
    (of z, or the given `field`, e.g. an inverted photo's)."""
    if not 0 <= level < generator.num_levels:
        raise ValueError(f"manifold level {level} out of range 0..{generator.num_levels - 1}")
    if field is None:
        field = surfaces.LatentField.from_latent(generator, z, truncation_psi)
    device = field.device
    origins = camera.origins_from_angles(torch.tensor([pitch], dtype=torch.float64),
                                         torch.tensor([yaw], dtype=torch.float64)).to(device)
    with torch.no_grad():
        hits = generator.ray_intersections(origins, img_size)
        points = hits['points'][0, :, level]
        valid = hits['valid'][0, :, level, 0] > 0
        alpha = torch.zeros(points.shape[0], device=device)
        if valid.any():
            alpha[valid] = field.alpha(points[valid])[:, 0]
    return alpha.reshape(img_size, img_size).cpu().numpy()


@dataclass(frozen=True)
class View:
    """Everything one rendered image depends on."""
    seed: int
    truncation: float
    pitch: float
    yaw: float
    img_size: int
    fov: float
    mode: str = 'rgb'
    level: int = 0
    low_res: bool = False  # GRAM-HD: the 64^2 GRAM image instead of the super-resolved one


class ViewRenderer:
    """Renders `View`s of one generator with the calls inference.py makes (`G.render` with return_depth; for
    GRAM-HD `render_from_textures` on textures cached while the latent and psi stay the same)."""

    def __init__(self, generator, device='cpu', styles=None):
        self.generator = generator
        self.device = device
        self.is_hd = bool(getattr(generator, 'is_hd', False))
        # an inverted photo's latent parameters (invert.py): shown instead of any seed, psi does not apply
        self.styles = None if styles is None else tuple(tensor.to(device) for tensor in styles)
        self._textures_key = None
        self._textures = None

    def latent(self, seed):
        return latent_for_seed(seed, self.generator.z_dim).to(self.device)

    def field(self, seed, truncation):
        """The radiance field of a seed at psi `truncation` (or of the inverted latent)."""
        if self.styles is not None:
            return surfaces.LatentField(self.generator, *self.styles[:2])  # the FiLM parameters
        return surfaces.LatentField.from_latent(self.generator, self.latent(seed), truncation)

    def textures(self, seed, truncation):
        """GRAM-HD textures of a latent (computed once per seed and psi: the expensive super-resolution)."""
        if self._textures_key != (seed, truncation):
            with torch.no_grad():
                z = None if self.styles is not None else self.latent(seed)
                self._textures = self.generator.manifold_textures(z, truncation_psi=truncation, styles=self.styles)
            self._textures_key = (seed, truncation)
        return self._textures

    def render_maps(self, view):
        """(rgb uint8 [H, W, 3], depth float32 [H, W]) of a view; GRAM-HD views ignore img_size and fov (the
        textures fix both) and give the LR pair with `view.low_res`."""
        pitch = torch.tensor([view.pitch], dtype=torch.float64)
        yaw = torch.tensor([view.yaw], dtype=torch.float64)
        with torch.no_grad():
            if self.is_hd:
                image, lr_image, depth, lr_depth = self.generator.render_from_textures(
                    self.textures(view.seed, view.truncation), pitch, yaw, return_lr=True, return_depth=True,
                    return_lr_depth=True)
                if view.low_res:
                    image, depth = lr_image, lr_depth
            else:
                with camera_fov(self.generator, view.fov):
                    z = None if self.styles is not None else self.latent(view.seed)
                    image, depth = self.generator.render(z, pitch, yaw, img_size=view.img_size,
                                                         truncation_psi=view.truncation, lock_view_dependence=True,
                                                         return_depth=True, styles=self.styles)
        return to_uint8(image)[0], outputs3d.depth_tiles(depth)[0]

    def display_fov(self, view):
        return self.generator.camera['fov'] if self.is_hd else view.fov

    def render(self, view):
        """uint8 RGB [H, W, 3] of a view in its mode, and a short note on what it shows."""
        if view.mode not in RENDER_MODES:
            raise ValueError(f"unknown render mode {view.mode!r}; expected one of {', '.join(RENDER_MODES)}")
        if view.mode == 'alpha':
            size = view.img_size
            if self.is_hd:
                size = self.generator.lr_img_size if view.low_res else self.generator.img_size
            with camera_fov(self.generator, self.display_fov(view)):
                alpha = level_alpha(self.generator, None, view.pitch, view.yaw, size, view.level,
                                    field=self.field(view.seed, view.truncation))
            peak = float(alpha.max(initial=0))
            return alpha_to_uint8(alpha, peak), f"alpha of manifold {view.level}: max {peak:.3g} (shown as white)"
        image, depth = self.render_maps(view)
        if view.mode == 'rgb':
            return image, 'rgb'
        near, far = depth_range([depth])
        if view.mode == 'depth':
            return colorize_depth(depth, near, far), f"depth {near:.3f} (yellow) to {far:.3f} (violet)"
        return outputs3d.normal_tile(depth, self.display_fov(view)), 'camera-space normals from depth'
