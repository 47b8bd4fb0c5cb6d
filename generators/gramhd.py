"""GRAM-HD generator: GRAM's radiance manifolds, super-resolved as textures in a fixed world parameterisation.

Pipeline for cameras at origins [B, 3] (H = output size, s = scale factor, HL = H / s, K = 23 manifolds):

1. LR render: the plain GRAM render at HL x HL -> LR image, and the LR ray-manifold intersections
   [B, HL*HL, K + 1, 3] (the last surface is the background plane).
2. Manifold gridding: every manifold is a height field over the world xy plane. An orthographic probe
   (rays from (x, y, 1) along -z, x, y = linspace(-e, e, HL), e = fov / 100 = 0.12) finds each manifold's
   first crossing, so texel (u, v) = (x, y) / e. The background plane z = -0.12 gets its own grid, warped
   by tan beyond |u| = 0.5 so that it covers world xy in [-0.251, 0.251].
3. LR textures: GRAM's radiance network at the grid points -> rgb, alpha = (1 - exp(-0.04 sigma)) * valid
   and the 32-d feature [B*K, 36, HL, HL]; the background texture is rgb only [B, 3, HL, HL].
4. Super-resolution of the textures (`StyleRRDBNet` for the manifolds with styles from z, `RRDBNet` for
   the background) -> HR textures [B*K, 4, H, H] (raw rgb, sigmoid alpha) and [B, 3, H, H].
5. HR image: the LR intersection points are bilinearly up-sampled to H x H, each manifold's texture is
   looked up at xy / e, and the K + 1 samples per pixel are alpha-composited front to back.

Textures never depend on the camera when view dependence is locked (videos, multi-view grids), so
`manifold_textures` + `render_from_textures` renders an orbit by running steps 1-3 once per latent and only
intersections + lookups per frame; `render` itself goes through the same two calls, so both paths give
identical frames.

Parameter names and order equal the official `GramHDGenerator` (`representation.*`, then
`super_resolution.*`, then `super_resolution_bg.*`); released `ckpts/*.pt` state_dicts load with strict=True.
"""
import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import camera
from .compositing import composite_alpha, weighted_depth
from .gram import BACKGROUND_PLANE_Z, TRUNCATION_SAMPLES, TRUNCATION_SEED, GramGenerator
from .manifold import first_crossings
from .super_resolution import RRDBNet, StyleRRDBNet

# Background texture warp: linear (world = 0.24 u) for |u| <= 0.5, tan-stretched outside, so the 64
# texels cover world |x| <= 0.24 tan(0.5) + 0.12 = 0.251 with the finest texels in the middle.
BACKGROUND_WARP_SCALE = 0.24
BACKGROUND_WARP_KNEE = 0.5
# HR validity = bilinearly up-sampled LR validity above this threshold (only texels whose four LR
# neighbours all hit the manifold count as hits).
HR_VALID_THRESHOLD = 0.99


def background_warp(u):
    """Texture coordinate u in [-1, 1] -> world coordinate on the background plane (official tan warp)."""
    knee, scale = BACKGROUND_WARP_KNEE, BACKGROUND_WARP_SCALE
    inner = scale * u
    upper = scale * torch.tan(u - knee) + scale * knee
    lower = scale * torch.tan(u + knee) - scale * knee
    return torch.where(u > knee, upper, torch.where(u < -knee, lower, inner))


def background_unwarp(x):
    """Inverse of `background_warp`: world coordinate -> texture coordinate (used for the HR lookup)."""
    knee, scale = BACKGROUND_WARP_KNEE, BACKGROUND_WARP_SCALE
    inner = x / scale
    upper = torch.atan((x - scale * knee) / scale) + knee
    lower = torch.atan((x + scale * knee) / scale) - knee
    return torch.where(x > scale * knee, upper, torch.where(x < -scale * knee, lower, inner))


@dataclass
class ManifoldTextures:
    """Per-latent textures of a batch of B latents (K manifolds, HL = LR size, H = HR size).

    hr_maps [B*K, 4, H, H] (raw rgb, sigmoid alpha; map b*K + k = manifold k of latent b),
    hr_background [B, 3, H, H], lr_maps [B*K, 4, HL, HL] (rgb, alpha = (1 - exp(-0.04 sigma)) * valid),
    lr_background [B, 3, HL, HL]; rows run with world y ascending, columns with world x ascending.
    raw_frequencies / phases [B, F] are the (truncated) FiLM parameters, kept for the LR render.
    view_origin is None when view dependence is locked (camera-independent textures), else the [3]
    camera origin whose view directions coloured the textures.
    """
    hr_maps: torch.Tensor
    hr_background: torch.Tensor
    lr_maps: torch.Tensor
    lr_background: torch.Tensor
    raw_frequencies: torch.Tensor
    phases: torch.Tensor
    img_size: int
    lr_img_size: int
    view_origin: Optional[torch.Tensor] = None

    @property
    def batch(self):
        return self.raw_frequencies.shape[0]

    @property
    def lock_view_dependence(self):
        return self.view_origin is None


class GramHDGenerator(GramGenerator):
    """GRAM-HD generator (stage 2): a GRAM generator with 32-d feature heads plus two SR networks.

    `render(z, pitch, yaw, ...)` renders HR images [B, 3, H, W] in about [-1, 1] (HR rgb is not clamped, as
    in the official code); `forward(z)` is the training call.
    """

    is_hd = True
    # The folded FiLM evaluation rounds differently from the official op order; on the official GRAM-HD
    # fixture weights (perturbed, so sine arguments are large) that moves LR pixels by up to 7.6e-3,
    # against 0 with the plain order. The HD renders keep the official order.
    fold_film_layers = False

    def __init__(self, z_dim=256, img_size=256, lr_img_size=64, feature_dim=32, h_stddev=0.3, v_stddev=0.155,
                 h_mean=math.pi / 2, v_mean=math.pi / 2, sample_dist='gaussian', representation_kwargs=None,
                 renderer_kwargs=None, camera_kwargs=None, fg_kwargs=None, bg_kwargs=None):
        super().__init__(z_dim=z_dim, img_size=img_size, h_stddev=h_stddev, v_stddev=v_stddev, h_mean=h_mean,
                         v_mean=v_mean, sample_dist=sample_dist, representation_kwargs=representation_kwargs,
                         renderer_kwargs=renderer_kwargs, camera_kwargs=camera_kwargs, feature_dim=feature_dim)
        if not self.background:
            raise ValueError("GRAM-HD needs the background plane (renderer background=True)")
        if img_size % lr_img_size:
            raise ValueError(f"img_size {img_size} must be a multiple of lr_img_size {lr_img_size}")
        self.lr_img_size = lr_img_size
        self.scale_factor = img_size // lr_img_size
        self.feature_dim = feature_dim
        # Input channels of the foreground SR: rgb (3) + alpha (1) + feature.
        fg_kwargs = dict(fg_kwargs or {})
        # The official SR mapping network receives z itself, so its input width w_dim is z_dim.
        if fg_kwargs.setdefault('w_dim', z_dim) != z_dim:
            raise ValueError(f"super_resolution.kwargs.fg.w_dim = {fg_kwargs['w_dim']} is the input width of the SR "
                             f"mapping network, which receives z: expected generator.kwargs.z_dim = {z_dim}")
        self.super_resolution = StyleRRDBNet(4 + feature_dim, 4, self.scale_factor, **fg_kwargs)
        self.super_resolution_bg = RRDBNet(3, 3, self.scale_factor, **(bg_kwargs or {}))
        self.freeze_gram()
        self._style_center = None  # mean SR style [1, style_dim], not part of the state_dict
        self._stage1_config = None

    @classmethod
    def from_config(cls, config):
        generator_config = config['generator']
        kwargs = dict(generator_config['kwargs'])
        sr_kwargs = generator_config['super_resolution']['kwargs']
        generator = cls(representation_kwargs=generator_config['representation']['kwargs'],
                        renderer_kwargs=generator_config['renderer']['kwargs'], camera_kwargs=config['camera'],
                        fg_kwargs=sr_kwargs['fg'], bg_kwargs=sr_kwargs['bg'],
                        **{k: kwargs[k] for k in ('z_dim', 'img_size', 'lr_img_size', 'feature_dim', 'h_stddev',
                                                  'v_stddev', 'h_mean', 'v_mean', 'sample_dist')})
        generator._stage1_config = stage1_config(config)
        if kwargs.get('gram_model_file'):
            generator.load_gram_weights(kwargs['gram_model_file'])
        return generator

    # ------------------------------------------------------------------------------------------------
    # Stage-1 weights

    def freeze_gram(self):
        """Freeze the GRAM part except the feature heads (official stage 2 trains only those + the SR nets).

        Official EMA files store only parameters with requires_grad, so this also fixes the EMA order.
        """
        for name, parameter in self.representation.named_parameters():
            if '.output_feature.' not in name:
                parameter.requires_grad_(False)

    def load_gram_weights(self, source):
        """Copy a stage-1 GRAM generator (a GramGenerator or a checkpoint path) into the GRAM part.

        Paths go through `load_generator`, which takes the EMA weights of official `stepN_generator.pth`
        files (sibling `stepN_ema.pth`), as the official stage 2 does. The feature heads keep their init.
        A stage-1 file of another config is refused naming the file and what this config expects.
        """
        label = 'stage-1 generator'
        if not isinstance(source, GramGenerator):
            from . import load_generator
            label = f"stage-1 file {source}"
            # official files take this config's stage-1 part; ours carry their own, compared just below
            source = load_generator(source, default_config=self._stage1_config)
            mismatches = stage1_mismatches(getattr(source, 'config', None), self._stage1_config)
            if mismatches:
                raise ValueError(f"{label} is not this config's GRAM: " + '; '.join(mismatches[:3]))
        own = self.representation.state_dict()
        incoming = source.representation.state_dict()
        expected = {k for k in own if '.output_feature.' not in k}
        if set(incoming) != expected:
            missing, unexpected = sorted(expected - set(incoming)), sorted(set(incoming) - expected)
            raise ValueError(f"{label} does not match the GRAM part: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        with torch.no_grad():
            for key, tensor in incoming.items():
                if own[key].shape != tensor.shape:
                    raise ValueError(f"{label}: tensor representation.{key} has shape {tuple(tensor.shape)}, "
                                     f"this config's GRAM part expects {tuple(own[key].shape)}")
                own[key].copy_(tensor)
        self.freeze_gram()

    def gram_generator(self):
        """The frozen GRAM part as a stage-1 GramGenerator at the LR size, sharing no tensors with this one
        (the depth metric scores it: stage 2 leaves the geometry exactly as stage 1 made it)."""
        gram = GramGenerator.from_config(self._stage1_config)
        state = {k: v for k, v in self.representation.state_dict().items() if '.output_feature.' not in k}
        gram.representation.load_state_dict(state, strict=True)
        gram.config = self._stage1_config
        return gram.to(next(self.parameters()).device).eval()

    # ------------------------------------------------------------------------------------------------
    # Latent -> SR styles

    def styles(self, z, truncation_psi=1.0):
        """z [B, z_dim] -> foreground SR styles [B, style_dim], lerped towards the mean style when psi < 1."""
        style = self.super_resolution.styles(z)
        if truncation_psi != 1:
            center = self.style_truncation_center(z.device)
            style = center + truncation_psi * (style - center)
        return style

    @torch.no_grad()
    def style_truncation_center(self, device):
        """Mean style over the same 10k seeded latents as the FiLM truncation centre."""
        if self._style_center is None or self._style_center.device != torch.device(device):
            rng = torch.Generator().manual_seed(TRUNCATION_SEED)
            z = torch.randn(TRUNCATION_SAMPLES, self.z_dim, generator=rng).to(device)
            self._style_center = self.super_resolution.styles(z).mean(0, keepdim=True)
        return self._style_center

    def train(self, mode=True):
        self._style_center = None
        return super().train(mode)

    # ------------------------------------------------------------------------------------------------
    # Manifold gridding (z-independent)

    def texture_extent(self):
        """Half-width e of the texture grid in world x and y: the official fov / 100 (0.12 for the
        12-degree face camera), about the half-width of what the camera sees at the origin."""
        return self.camera['fov'] / 100

    def texture_grid(self, lr_size, device):
        """First crossings of the orthographic probe rays: points [R, K, 3], valid [R, K, 1], R = lr_size**2.

        Texel (row i, col j) = world (x_j, y_i) with x, y = linspace(-e, e, lr_size): rows run with world y
        ascending (upside down relative to camera images). The probe ray starts at z = 1 and takes the
        camera's depth samples, so its samples are z = 1 - t, t = linspace(ray_start, ray_end, S).
        """
        extent = self.texture_extent()
        coords = torch.linspace(-extent, extent, lr_size, device=device)
        y, x = torch.meshgrid(coords, coords, indexing='ij')
        depths = torch.linspace(self.camera['ray_start'], self.camera['ray_end'], self.num_samples, device=device)
        z = 1 - depths
        num_rays = lr_size * lr_size
        samples = torch.stack([x.reshape(-1, 1).expand(num_rays, self.num_samples),
                               y.reshape(-1, 1).expand(num_rays, self.num_samples),
                               z.reshape(1, -1).expand(num_rays, self.num_samples)], dim=-1)  # [R, S, 3]
        samples = samples.unsqueeze(0)
        field = self.representation.sample_network(samples)
        points, valid = first_crossings(samples, field, self.levels(device))
        return points[0], valid[0]

    def background_texture_points(self, lr_size, device):
        """World points [R, 3] of the background texels on the plane z = -0.12 (tan-warped grid)."""
        coords = background_warp(torch.linspace(-1, 1, lr_size, device=device))
        y, x = torch.meshgrid(coords, coords, indexing='ij')
        return torch.stack([x.reshape(-1), y.reshape(-1), torch.full_like(x.reshape(-1), BACKGROUND_PLANE_Z)], -1)

    def _view_directions(self, points, view_origin):
        """Unit directions [..., 3] from view_origin [3] to points [..., 3], or (0, 0, -1) when locked."""
        if view_origin is None:
            directions = torch.zeros_like(points)
            directions[..., 2] = -1
            return directions
        offset = points - view_origin.reshape(*([1] * (points.dim() - 1)), 3)
        return offset / torch.norm(offset, dim=-1, keepdim=True)

    def lr_textures(self, raw_frequencies, phases, lr_size, view_origin=None):
        """LR textures of B latents: (manifolds [B*K, 4 + F, HL, HL], background [B, 3, HL, HL]).

        Manifold channels: rgb, alpha = (1 - exp(-0.04 sigma)) * valid, feature. Colours use the view
        direction from `view_origin` [3], or (0, 0, -1) for every texel when it is None (locked).
        """
        batch = raw_frequencies.shape[0]
        device = raw_frequencies.device
        network = self.representation.rf_network
        with torch.no_grad():
            grid_points, grid_valid = self.texture_grid(lr_size, device)  # [R, K, 3], [R, K, 1]
        num_rays, num_levels, _ = grid_points.shape
        points = grid_points.reshape(1, -1, 3).expand(batch, -1, -1)
        rgb_sigma, features = network(points, self._view_directions(points, view_origin), raw_frequencies,
                                      phases, with_features=True)
        alpha = (1 - torch.exp(-self.delta_alpha * rgb_sigma[..., 3:])) * grid_valid.reshape(1, -1, 1)
        channels = torch.cat([rgb_sigma[..., :3], alpha, features], dim=-1)  # [B, R*K, C]
        manifolds = channels.reshape(batch, lr_size, lr_size, num_levels, -1).permute(0, 3, 4, 1, 2)
        manifolds = manifolds.reshape(batch * num_levels, -1, lr_size, lr_size)

        background_points = self.background_texture_points(lr_size, device).unsqueeze(0).expand(batch, -1, -1)
        background = network(background_points, self._view_directions(background_points, view_origin),
                             raw_frequencies, phases)[..., :3]
        background = background.reshape(batch, lr_size, lr_size, 3).permute(0, 3, 1, 2)
        return manifolds.contiguous(), background.contiguous()

    def super_resolve(self, manifolds, background, styles, maps_per_chunk=None):
        """LR textures -> HR textures: (manifolds [B*K, 4, H, H] raw rgb + sigmoid alpha, background [B, 3, H, H]).

        manifolds [B*K, 4 + F, HL, HL], background [B, 3, HL, HL], styles [B, style_dim]. The manifold SR runs in
        chunks of at most `maps_per_chunk` maps of one latent (a memory bound for 1024^2).
        """
        batch = styles.shape[0]
        num_levels = manifolds.shape[0] // batch
        if maps_per_chunk is None:
            maps_per_chunk = max(1, 2 ** 22 // (manifolds.shape[-1] * self.scale_factor) ** 2)
        chunks = []
        for b in range(batch):
            for start in range(0, num_levels, maps_per_chunk):
                rows = slice(b * num_levels + start, b * num_levels + min(num_levels, start + maps_per_chunk))
                chunks.append(self.super_resolution(manifolds[rows], styles[b:b + 1]))
        raw = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        # Only alpha is activated: the HR rgb stays raw (official), the consistency loss keeps it near [0, 1].
        hr_manifolds = torch.cat([raw[:, :3], torch.sigmoid(raw[:, 3:4])], dim=1)
        return hr_manifolds, self.super_resolution_bg(background)

    def _textures(self, raw_frequencies, phases, styles, lr_size, view_origin=None):
        manifolds, background = self.lr_textures(raw_frequencies, phases, lr_size, view_origin)
        hr_maps, hr_background = self.super_resolve(manifolds, background, styles)
        return ManifoldTextures(hr_maps=hr_maps, hr_background=hr_background, lr_maps=manifolds[:, :4],
                                lr_background=background, raw_frequencies=raw_frequencies, phases=phases,
                                img_size=lr_size * self.scale_factor, lr_img_size=lr_size, view_origin=view_origin)

    def _lr_size(self, img_size):
        img_size = int(img_size or self.img_size)
        if img_size % self.scale_factor:
            raise ValueError(f"img_size {img_size} is not a multiple of the SR scale factor {self.scale_factor}")
        return img_size // self.scale_factor

    def latent_parameters(self, z, truncation_psi=1.0):
        """What a latent z [B, z_dim] sets: (raw frequencies, phases, SR styles), the `styles` of `render`."""
        return self.mapping(z, truncation_psi) + (self.styles(z, truncation_psi),)

    def latent_center(self, device):
        """The truncation centre of `latent_parameters`: where an inversion starts."""
        return tuple(self.truncation_center(device)) + (self.style_truncation_center(device),)

    def manifold_textures(self, z, truncation_psi=1.0, img_size=None, styles=None):
        """Camera-independent textures of latents z [B, z_dim] (view dependence locked), for
        `render_from_textures`: compute once per latent, render any number of views. `styles`: the
        `latent_parameters` themselves in place of z (an inverted photo)."""
        raw_frequencies, phases, sr_styles = styles if styles is not None else self.latent_parameters(z,
                                                                                                      truncation_psi)
        return self._textures(raw_frequencies, phases, sr_styles, self._lr_size(img_size))

    # ------------------------------------------------------------------------------------------------
    # Rendering

    def lr_render(self, textures, origins, with_radiance=True, shared_camera=False):
        """The GRAM render at the LR size for cameras at origins [B, 3].

        Returns (LR image [B, 3, HL, HL] or None, LR depth [B, 1, HL, HL] or None, hits) where hits holds the
        unsorted intersections: points [B, R, K + 1, 3], valid [B, R, K + 1, 1] (last = background plane).
        Without `with_radiance` only the geometry is computed (all the HR image needs).
        """
        lr_size = textures.lr_img_size
        if not with_radiance:
            return None, None, self.ray_intersections(origins, lr_size, shared_camera=shared_camera)
        # Official quirk: every batch element's samples are sorted by distance from camera 0.
        color, depth, hits = self.render_rays(textures.raw_frequencies, textures.phases, origins, lr_size,
                                              lock_view_dependence=textures.lock_view_dependence, fast=True,
                                              shared_camera=shared_camera, sort_origin=origins[0],
                                              return_hits=True)
        return self._to_image(color, lr_size), depth.reshape(-1, lr_size, lr_size, 1).permute(0, 3, 1, 2), hits

    def hr_composite(self, textures, hits, origins, shared_camera=False, with_depth=True, rows_per_chunk=None):
        """HR colour [B, H*H, 3] and depth [B, H*H, 1] (None without `with_depth`) from LR intersections and HR
        textures, for cameras at origins [B, 3]: surfaces are sorted by their distance from camera 0 (official
        quirk), depth is the distance from each view's own camera (`shared_camera`: all views at camera 0, whose
        distances then are the depth already).

        HR points = bilinear (align_corners=True, i.e. corner-aligned like the camera's pixel centres)
        up-sampling of the LR points; HR validity = up-sampled validity > 0.99. Textures are looked up with
        align_corners=False although their grids are corner-aligned: an official half-texel quirk, kept so
        that released weights render as they were trained.
        """
        size, lr_size, batch = textures.img_size, textures.lr_img_size, textures.batch
        num_surfaces = hits['points'].shape[2]
        num_levels = num_surfaces - 1

        def upsample(values):  # [B, R, M, C] -> [B, M, C, H, H]
            channels = values.shape[-1]
            grid = values.expand(batch, -1, -1, -1).permute(0, 2, 3, 1)
            grid = grid.reshape(batch * num_surfaces, channels, lr_size, lr_size)
            up = F.interpolate(grid, size=(size, size), mode='bilinear', align_corners=True)
            return up.reshape(batch, num_surfaces, channels, size, size)

        points = upsample(hits['points'])
        valid = (upsample(hits['valid']) > HR_VALID_THRESHOLD).to(points.dtype)
        extent = self.texture_extent()
        # Texture coordinates [B*K, H, H, 2] (x -> columns, y -> rows) of each manifold; background unwarped.
        manifold_uv = (points[:, :num_levels, :2] / extent).reshape(batch * num_levels, 2, size, size)
        manifold_uv = manifold_uv.permute(0, 2, 3, 1)
        background_uv = background_unwarp(points[:, num_levels, :2]).permute(0, 2, 3, 1)  # [B, H, H, 2]

        if rows_per_chunk is None:
            rows_per_chunk = max(1, 2 ** 18 // (batch * size))
        colors, depths = [], []
        for top in range(0, size, rows_per_chunk):
            rows = slice(top, min(size, top + rows_per_chunk))
            height = rows.stop - rows.start
            manifold_rgba = F.grid_sample(textures.hr_maps, manifold_uv[:, rows], mode='bilinear',
                                          padding_mode='zeros', align_corners=False)  # [B*K, 4, h, H]
            background_rgb = F.grid_sample(textures.hr_background, background_uv[:, rows], mode='bilinear',
                                           padding_mode='reflection', align_corners=False)  # [B, 3, h, H]
            manifold_rgba = manifold_rgba.reshape(batch, num_levels, 4, height * size)
            background_rgb = background_rgb.reshape(batch, 1, 3, height * size)
            rgb = torch.cat([manifold_rgba[:, :, :3], background_rgb], dim=1)  # [B, M, 3, P]
            chunk_valid = valid[:, :, :, rows].reshape(batch, num_surfaces, 1, height * size)
            # The background plane is opaque (alpha 1, valid everywhere).
            alpha = torch.cat([manifold_rgba[:, :, 3:] * chunk_valid[:, :num_levels],
                               torch.ones_like(background_rgb[:, :, :1])], dim=1)  # [B, M, 1, P]
            offset = points[:, :, :, rows].reshape(batch, num_surfaces, 3, height * size)
            offset = offset - origins[0].reshape(1, 1, 3, 1)
            # |offset| written out: torch.norm over the strided coordinate axis is ~10x slower here.
            distances = torch.sqrt(offset[:, :, 0:1] ** 2 + offset[:, :, 1:2] ** 2 + offset[:, :, 2:3] ** 2)
            # -> [B, P, M, C] for the compositing along M, nearest first (contiguous: faster sort/gather).
            rgb, alpha, distances = (t.permute(0, 3, 1, 2).contiguous() for t in (rgb, alpha, distances))
            distances, order = torch.sort(distances, dim=-2)
            rgb = torch.gather(rgb, -2, order.expand(-1, -1, -1, 3))
            alpha = torch.gather(alpha, -2, order)
            color, depth, weights = composite_alpha(rgb, alpha, distances)
            if with_depth and not shared_camera:
                # Sorted from camera 0 (official), but each view's depth is measured from its own camera.
                own_offset = points[:, :, :, rows].reshape(batch, num_surfaces, 3, height * size)
                own_offset = own_offset - origins.reshape(-1, 1, 3, 1)
                own_distances = torch.sqrt(own_offset[:, :, 0:1] ** 2 + own_offset[:, :, 1:2] ** 2
                                           + own_offset[:, :, 2:3] ** 2).permute(0, 3, 1, 2)
                depth = weighted_depth(weights, torch.gather(own_distances, -2, order))
            colors.append(color)
            depths.append(depth)
        return torch.cat(colors, dim=1), torch.cat(depths, dim=1) if with_depth else None

    @staticmethod
    def _output_maps(manifolds, background):
        """Official map output: manifold maps [B*K, 4, h, w] then background maps (rgb, alpha 0) [B, 4, h, w]."""
        return torch.cat([manifolds, F.pad(background, (0, 0, 0, 0, 0, 1))], dim=0)

    def render_from_textures(self, textures, pitch, yaw, return_lr=False, return_depth=False, return_maps=False,
                             return_lr_depth=False):
        """Render precomputed textures from cameras at (pitch [B], yaw [B]) (official pose labels, float64 ok).

        Per frame this only finds the LR intersections (plus the LR radiance when `return_lr`), up-samples
        them and looks the textures up. Returns the HR image [B, 3, H, H], or a tuple (HR image, then LR image
        [B, 3, HL, HL] if return_lr, then HR depth [B, 1, H, H] if return_depth, then a dict of maps if
        return_maps: hr_maps [B*K + B, 4, H, H], lr_maps [B*K + B, 4, HL, HL], manifold maps first, then the
        background maps with alpha 0), then the LR depth [B, 1, HL, HL] if return_lr_depth. Depths are the
        composite distance along each pixel's ray (the HR one from the up-sampled intersections and HR alpha).
        """
        origins, shared_camera = self._camera_origins(pitch, yaw, textures.batch, textures.raw_frequencies.device)
        if textures.view_origin is not None and not torch.equal(origins[0], textures.view_origin):
            raise ValueError("these textures were coloured for another camera (view dependence not locked); "
                             "use render() or locked textures from manifold_textures()")
        lr_image, lr_depth, hits = self.lr_render(textures, origins, with_radiance=return_lr or return_lr_depth,
                                                  shared_camera=shared_camera)
        color, depth = self.hr_composite(textures, hits, origins, shared_camera, with_depth=return_depth)
        size = textures.img_size
        outputs = [self._to_image(color, size)]
        if return_lr:
            outputs.append(lr_image)
        if return_depth:
            outputs.append(depth.reshape(-1, size, size, 1).permute(0, 3, 1, 2))
        if return_maps:
            outputs.append({'hr_maps': self._output_maps(textures.hr_maps, textures.hr_background),
                            'lr_maps': self._output_maps(textures.lr_maps, textures.lr_background)})
        if return_lr_depth:
            outputs.append(lr_depth)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _camera_origins(self, pitch, yaw, batch, device):
        """Origins [B, 3] on `device` from float64-able angles (cast once, as the official scripts), and
        whether all cameras coincide (then the z-independent intersections are computed once)."""
        pitch = torch.as_tensor(pitch).reshape(-1).cpu()
        yaw = torch.as_tensor(yaw).reshape(-1).cpu()
        if pitch.shape[0] == 1 and batch > 1:
            pitch, yaw = pitch.expand(batch), yaw.expand(batch)
        if not (pitch.shape[0] == yaw.shape[0] == batch):
            raise ValueError(f"render: {batch} latents but pitch/yaw have {pitch.shape[0]}/{yaw.shape[0]} rows")
        origins = camera.origins_from_angles(pitch, yaw)
        return origins.to(device), bool((origins == origins[:1]).all())

    def render(self, z, pitch, yaw, img_size=None, truncation_psi=1.0, lock_view_dependence=False,
               return_depth=False, return_lr=False, return_maps=False, return_lr_depth=False, styles=None):
        """Render latents z [B, z_dim] from cameras at (pitch [B], yaw [B]) radians (official pose labels).

        img_size: HR size (default: the config's); the LR size is img_size / scale factor. Without
        `lock_view_dependence` the textures are coloured with view directions from camera 0. `styles`:
        (raw frequencies, phases, SR styles) [B, ...] in place of z's `latent_parameters` (an inverted
        photo; z and truncation_psi are then unused and z may be None). Returns as `render_from_textures`.
        """
        lr_size = self._lr_size(img_size)
        raw_frequencies, phases, sr_styles = styles if styles is not None else self.latent_parameters(z,
                                                                                                      truncation_psi)
        origins, _ = self._camera_origins(pitch, yaw, raw_frequencies.shape[0], raw_frequencies.device)
        view_origin = None if lock_view_dependence else origins[0]
        textures = self._textures(raw_frequencies, phases, sr_styles, lr_size, view_origin)
        return self.render_from_textures(textures, pitch, yaw, return_lr=return_lr, return_depth=return_depth,
                                         return_maps=return_maps, return_lr_depth=return_lr_depth)

    def forward(self, z, pitch=None, yaw=None, truncation_psi=1.0):
        """Training forward at poses from the prior (or the given float32 ones); view dependence on.

        Returns ((HR image [B, 3, H, H], LR image [B, 3, HL, HL], HR maps [B*K + B, 4, H, H],
        LR maps [B*K + B, 4, HL, HL]), poses [B, 2] = (pitch, yaw)). The LR render and the geometry carry
        no gradient (GRAM is frozen); gradients reach the feature heads and both SR networks.
        """
        if pitch is None:
            pitch, yaw = self.sample_poses(z.shape[0], z.device)
        origins = torch.stack([torch.sin(pitch) * torch.cos(yaw), torch.cos(pitch),
                               torch.sin(pitch) * torch.sin(yaw)], -1).to(torch.float32)
        raw_frequencies, phases = self.mapping(z, truncation_psi)
        textures = self._textures(raw_frequencies, phases, self.styles(z, truncation_psi), self.lr_img_size,
                                  view_origin=origins[0])
        with torch.no_grad():
            lr_image, _, hits = self.lr_render(textures, origins)
        color, _ = self.hr_composite(textures, hits, origins, with_depth=False)
        outputs = (self._to_image(color, textures.img_size), lr_image,
                   self._output_maps(textures.hr_maps, textures.hr_background),
                   self._output_maps(textures.lr_maps, textures.lr_background).detach())
        return outputs, torch.stack([pitch, yaw], -1)


# The parts of a GRAM config that decide its weights and what its manifolds are; a stage-1 file must agree
# on all of them with the stage-2 config's GRAM part (its pose prior and render size may differ).
_STAGE1_KEYS = ('kwargs.z_dim', 'representation', 'renderer.kwargs')


def _flatten(section, prefix):
    if not isinstance(section, dict):
        return {prefix: section}
    flat = {}
    for key, value in section.items():
        flat.update(_flatten(value, f"{prefix}.{key}"))
    return flat


def flat_differences(theirs, ours, prefix):
    """(key, their value, our value) for each leaf of two config sections that differs (a list and a tuple
    of the same items count as equal: JSON round trips turn one into the other)."""
    flat_theirs, flat_ours = _flatten(theirs, prefix), _flatten(ours, prefix)
    differences = []
    for key in sorted(set(flat_theirs) | set(flat_ours)):
        a, b = flat_theirs.get(key, '<absent>'), flat_ours.get(key, '<absent>')
        if a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            differences.append((key, a, b))
    return differences


def stage1_mismatches(stage1, expected):
    """'key = stage-1 value, expected value' for each GRAM setting in which the config `stage1` carried by a
    stage-1 file differs from `expected` (a `stage1_config`). [] when `stage1` is None (official files carry
    no config; their tensor shapes are checked instead)."""
    if not stage1:
        return []
    mismatches = []
    for path in _STAGE1_KEYS:
        theirs, ours = stage1['generator'], expected['generator']
        for key in path.split('.'):
            theirs, ours = (theirs or {}).get(key), (ours or {}).get(key)
        mismatches += [f"{key} = {a!r} there, expected {b!r}"
                       for key, a, b in flat_differences(theirs, ours, 'generator.' + path)]
    return mismatches


def stage1_config(config):
    """The GRAM (stage-1) config matching a GRAM-HD config: same networks, rendered at the LR size."""
    config = copy.deepcopy(config)
    generator = config['generator']
    kwargs = generator['kwargs']
    lr_size = kwargs.pop('lr_img_size', 64)
    for key in ('feature_dim', 'gram_model_file'):
        kwargs.pop(key, None)
    kwargs['img_size'] = lr_size
    generator['class'] = 'GramGenerator'
    generator.pop('super_resolution', None)
    generator['renderer']['class'] = 'manifold_renderer'
    config['global']['img_size'] = lr_size
    return config
