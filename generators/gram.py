"""GRAM generator: manifold predictor + radiance network + manifold renderer.

Parameter names and order equal the official `GramGenerator` (`representation.sample_network.*`, then
`representation.rf_network.*`), so official `generator.pth` files load with strict=True and the EMA
shadow lists of `ema.pth` map onto `parameters()` by position.
"""
import contextlib
import math

import torch
import torch.nn as nn

from . import camera
from .compositing import composite, sample_alpha, transmittance, weighted_depth
from .manifold import ManifoldPredictor, background_plane_points, first_crossings, manifold_levels
from .radiance import RadianceNetwork

# World plane of the face/cat background (GRAM, GRAM-HD).
BACKGROUND_PLANE_Z = -0.12
# Latents averaged for the truncation centre; drawn from a fixed seed (the official code is unseeded).
TRUNCATION_SAMPLES = 10000
TRUNCATION_SEED = 0

# Inexact rendering options (README: "Inexact options"); every default is the exact float32 render.
# Radiance MLP precision: the manifold field, intersections, sorting and compositing always stay float32.
RADIANCE_PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# Early ray termination evaluates this many depth-sorted surfaces of every ray at a time before testing
# the transmittance. Fewer skip more points (FFHQ_default with opaque surfaces: 95% / 90% / 81% skipped
# for 1 / 2 / 4) but mean more, smaller MLP calls; 1 was a few % slower than 2 and 4 on CPU.
EARLY_TERMINATION_GROUP = 2

# How the culled radiance evaluation runs (README Performance):
# - 'per_latent': a Python loop over latents, each packing its contributing points by boolean indexing
#   (a host sync per latent) and folding its FiLM into its own weights; fastest on CPU, where kernel
#   launches are cheap and every skipped point is saved work;
# - 'batched': all latents at once; contributing points are compacted per latent into one [B, C] block
#   (C = the largest count, the one host sync) and every FiLM layer is one batched matmul with the
#   latents' folded weights, so the kernels and syncs of a call do not grow with the batch (GPUs);
# - 'auto': 'batched' on CUDA, 'per_latent' elsewhere.
RADIANCE_PATHS = ('auto', 'per_latent', 'batched')
# Automatic chunk sizes on CUDA: this share of the free memory (the allocator needs slack), and the bytes a
# ray needs, estimated as the manifold field's activations plus, per latent, every manifold point in the
# radiance MLP's two buffers and bookkeeping, times a safety factor.
CUDA_CHUNK_MEMORY_SHARE = 0.5
CUDA_CHUNK_SAFETY = 1.5
CPU_CHUNK_POINTS = 2 ** 19


def resolve_radiance_path(path, device):
    """The concrete path ('per_latent' or 'batched') that `path` means on `device`."""
    if path not in RADIANCE_PATHS:
        raise ValueError(f"radiance_path must be one of {', '.join(map(repr, RADIANCE_PATHS))}, got {path!r}")
    if path == 'auto':
        return 'batched' if torch.device(device).type == 'cuda' else 'per_latent'
    return path


def compact_rows(mask):
    """Per-row compaction of mask [B, P] without a loop over rows.

    Returns (index [B, C], slot [B, P]) with C = the largest row count: index[b, :count_b] are the
    positions of row b's True entries in order (the rest of the row points at position 0, a filler whose
    result nobody reads), and slot[b, p] is where position p landed, or C for a False entry. Reading
    results back with `gather(values padded by one zero column, slot)` puts zeros at the False entries.
    Reading C costs one host sync, whatever B is.
    """
    batch, count = mask.shape
    capacity = int(mask.sum(1).max()) if batch * count else 0
    slot = torch.where(mask, torch.cumsum(mask, 1) - 1, capacity)
    index = torch.zeros(batch, capacity + 1, dtype=torch.long, device=mask.device)
    # False entries all land in the extra column C, which is dropped: which of them wins does not matter
    index.scatter_(1, slot, torch.arange(count, device=mask.device).expand(batch, -1))
    return index[:, :capacity], slot


def check_inexact_options(fast, precision, early_termination, tf32, compile):
    """Raise ValueError naming the bad value; the options only exist on the fast path."""
    if precision not in RADIANCE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, RADIANCE_PRECISIONS))}, got {precision!r}")
    if not 0 <= early_termination < 1:  # also rejects NaN
        raise ValueError(f"early_termination is a transmittance threshold in [0, 1) (0 = off), "
                         f"got {early_termination!r}")
    inexact = precision != 'fp32' or early_termination > 0 or tf32 or compile
    if inexact and not fast:
        raise ValueError("precision, early_termination, tf32 and compile are options of the fast path; "
                         "fast=False is the exact reference path that evaluates every intersection")


@contextlib.contextmanager
def tf32_matmuls(enabled):
    """Inside the block, CUDA float32 matmuls and cuDNN convolutions may use TF32 (inputs rounded to a
    10-bit mantissa); the previous library settings are restored on exit. CPU kernels ignore both flags."""
    if not enabled:
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


class Representation(nn.Module):
    """Holds the two networks under the official names `sample_network` and `rf_network`."""

    def __init__(self, z_dim, hidden_dim=256, normalize=0.24, sigma_clamp_mode='softplus',
                 rgb_clamp_mode='widen_sigmoid', hidden_dim_sample=128, layer_num_sample=3, center=(0, 0, -1.5),
                 init_radius=0.0, feature_dim=0, sigma_bias_init=0.0):
        super().__init__()
        self.sample_network = ManifoldPredictor(hidden_dim_sample, layer_num_sample, center, init_radius)
        self.rf_network = RadianceNetwork(z_dim, hidden_dim, normalize, sigma_clamp_mode=sigma_clamp_mode,
                                          rgb_clamp_mode=rgb_clamp_mode, feature_dim=feature_dim)
        if sigma_bias_init:
            # Not an official option (the demo config's): added to the first σ head's bias, so each manifold
            # starts partly opaque instead of at softplus(0) * delta_alpha ~ 0.03 (the plane then carries
            # most of every pixel from step 0). Draws no random numbers: the other weights are unchanged.
            with torch.no_grad():
                self.rf_network.output_sigma[0].bias.add_(float(sigma_bias_init))


class GramGenerator(nn.Module):
    """GRAM generator.

    `render(z, pitch, yaw)` is the public rendering call; `forward(z)` samples poses from the prior (training).
    Images are [B, 3, H, W] in [-1, 1] (2 * composite - 1), row 0 = top (+y).
    """

    # Use `RadianceNetwork.forward_folded` for gradient-free culled renders (see `radiance`).
    fold_film_layers = True
    # Training forward: 'fast' culls points that cannot contribute and runs the FiLM layers through the
    # fused FiLM-sine autograd (`RadianceNetwork.forward_fused`); 'low_memory' is 'fast' that recomputes
    # each FiLM matmul in the backward instead of keeping its output; 'plain' evaluates every intersection
    # with stock autograd ops, as the official code does (the reference benchmarks and tests compare with).
    training_path = 'fast'
    TRAINING_PATHS = ('fast', 'low_memory', 'plain')
    # How the culled radiance evaluation runs, rendering and training alike (RADIANCE_PATHS); `render`
    # and `render_rays` take it per call too.
    radiance_path = 'auto'

    def __init__(self, z_dim=256, img_size=256, h_stddev=0.3, v_stddev=0.155, h_mean=math.pi / 2,
                 v_mean=math.pi / 2, sample_dist='gaussian', representation_kwargs=None, renderer_kwargs=None,
                 camera_kwargs=None, feature_dim=0):
        super().__init__()
        self.z_dim = z_dim
        self.img_size = img_size
        self.prior = dict(h_stddev=h_stddev, v_stddev=v_stddev, h_mean=h_mean, v_mean=v_mean, mode=sample_dist)
        self.representation = Representation(z_dim, feature_dim=feature_dim, **(representation_kwargs or {}))
        renderer = dict(num_samples=64, num_manifolds=24, levels_start=23, levels_end=8, delta_alpha=0.04,
                        delta_final=1e10, last_back=False, white_back=False, background=True, view_dependence=True)
        renderer.update(renderer_kwargs or {})
        # False: colours never depend on the view direction, in training too (every point is seen along the
        # locked direction). Not an official option: a small generator on the procedural heads otherwise
        # paints view-dependent pictures on one surface instead of learning shape (README "The shipped model").
        self.view_dependence = bool(renderer['view_dependence'])
        self.num_samples = renderer['num_samples']
        self.background = renderer['background']
        self.num_levels = renderer['num_manifolds'] - (1 if self.background else 0)
        self.levels_range = (renderer['levels_start'], renderer['levels_end'])
        self.delta_alpha = renderer['delta_alpha']
        # Without a background plane the farthest sample is an ordinary one (official rule).
        self.delta_final = renderer['delta_final'] if self.background else renderer['delta_alpha']
        self.white_back = renderer['white_back']
        self.last_back = renderer['last_back']
        self.camera = dict(fov=12, ray_start=0.88, ray_end=1.12)
        self.camera.update(camera_kwargs or {})
        self._truncation_center = None  # (raw frequencies [1, F], phases [1, F]), not part of the state_dict

    @classmethod
    def from_config(cls, config):
        generator = config['generator']
        kwargs = dict(generator['kwargs'])
        return cls(representation_kwargs=generator['representation']['kwargs'],
                   renderer_kwargs=generator['renderer']['kwargs'], camera_kwargs=config['camera'],
                   **{k: kwargs[k] for k in ('z_dim', 'img_size', 'h_stddev', 'v_stddev', 'h_mean', 'v_mean',
                                             'sample_dist')})

    # ------------------------------------------------------------------------------------------------
    # Latent -> FiLM parameters

    def mapping(self, z, truncation_psi=1.0):
        """z [B, z_dim] -> (raw frequencies, phases), each [B, (layers+1) * hidden]."""
        raw_frequencies, phases = self.representation.rf_network.mapping_network(z)
        if truncation_psi != 1:
            center_frequencies, center_phases = self.truncation_center(z.device)
            raw_frequencies = center_frequencies + truncation_psi * (raw_frequencies - center_frequencies)
            phases = center_phases + truncation_psi * (phases - center_phases)
        return raw_frequencies, phases

    def latent_parameters(self, z, truncation_psi=1.0):
        """What a latent z [B, z_dim] sets: its FiLM parameters (raw frequencies, phases), `render`'s `styles`."""
        return self.mapping(z, truncation_psi)

    def latent_center(self, device):
        """The truncation centre of `latent_parameters`: where an inversion starts."""
        return tuple(self.truncation_center(device))

    @torch.no_grad()
    def truncation_center(self, device):
        """Mean FiLM parameters over 10k latents from a fixed seed (reproducible, unlike the official code)."""
        if self._truncation_center is None or self._truncation_center[0].device != torch.device(device):
            rng = torch.Generator().manual_seed(TRUNCATION_SEED)
            z = torch.randn(TRUNCATION_SAMPLES, self.z_dim, generator=rng).to(device)
            raw_frequencies, phases = self.representation.rf_network.mapping_network(z)
            self._truncation_center = (raw_frequencies.mean(0, keepdim=True), phases.mean(0, keepdim=True))
        return self._truncation_center

    def train(self, mode=True):
        self._truncation_center = None  # weights may change while training
        return super().train(mode)

    # ------------------------------------------------------------------------------------------------
    # Geometry

    def levels(self, device):
        """The fixed iso-levels [K], built once per device (no per-call allocation in the render loop)."""
        device = torch.device(device)
        cache = self.__dict__.setdefault('_levels_cache', {})
        if device not in cache:
            cache[device] = manifold_levels(self.levels_range[0], self.levels_range[1], self.num_levels, device)
        return cache[device]

    def ray_intersections(self, origins, img_size, pixel_range=None, shared_camera=False):
        """Ray-manifold intersections for cameras at origins [B, 3].

        Returns a dict with points [B, R, M, 3], valid [B, R, M, 1], is_background [B, R, M, 1] (or None),
        ray_origins [B, R, 3], ray_directions [B, R, 3]; M = levels (+1 background plane), R = pixels in
        `pixel_range` (all by default). With `shared_camera` (all origins equal) the z-independent field is
        evaluated once and broadcast over the batch.
        """
        batch = origins.shape[0]
        if shared_camera and batch > 1:
            single = self.ray_intersections(origins[:1], img_size, pixel_range)
            return {k: (v.expand(batch, *v.shape[1:]) if v is not None else None) for k, v in single.items()}
        fov, ray_start, ray_end = self.camera['fov'], self.camera['ray_start'], self.camera['ray_end']
        cam2world, ray_origins, ray_directions = camera.world_rays(origins, img_size, fov, pixel_range)
        samples = camera.coarse_samples(cam2world, img_size, fov, ray_start, ray_end, self.num_samples,
                                        pixel_range)
        sample_network = self.representation.sample_network
        if torch.is_grad_enabled() and self.training_path != 'plain':
            # Gradients reach the field only at the ends of interpolated intervals: keep the graph of those.
            with torch.no_grad():
                field = sample_network(samples)
            points, valid = first_crossings(samples, field, self.levels(origins.device), sample_network)
        else:
            field = sample_network(samples)
            points, valid = first_crossings(samples, field, self.levels(origins.device))
        is_background = None
        if self.background:
            plane = background_plane_points(ray_origins, ray_directions, BACKGROUND_PLANE_Z)
            points = torch.cat([points, plane], dim=2)
            valid = torch.cat([valid, torch.ones_like(valid[:, :, :1])], dim=2)
            is_background = torch.zeros_like(valid, dtype=torch.bool)
            is_background[:, :, -1] = True
        return dict(points=points, valid=valid, is_background=is_background, ray_origins=ray_origins,
                    ray_directions=ray_directions)

    # ------------------------------------------------------------------------------------------------
    # Radiance

    def radiance(self, points, directions, raw_frequencies, phases, contributing=None, precision='fp32',
                 compile=False, radiance_path=None):
        """rgb/sigma [B, R, M, 4] at points [B, R, M, 3] seen along directions [B, R, M, 3] (or one shared
        direction [3], e.g. the locked view direction).

        With a `contributing` mask [B, R, M] the network runs only on those points and the others get
        rgb = sigma = 0 (they must be points whose alpha is 0 or whose weight is hidden behind the opaque
        background plane, so the composite does not change). Without gradients that path uses the folded
        FiLM evaluation (`RadianceNetwork.forward_folded`; the stock one where `fold_film_layers` is off),
        with gradients the fused FiLM-sine autograd (`RadianceNetwork.forward_fused`). The inexact options `precision` (a RADIANCE_PRECISIONS key) and
        `compile` (torch.compile of `forward_folded`) exist on the folded path only. `radiance_path`
        (RADIANCE_PATHS; default: the generator's `radiance_path`) picks the per-latent loop or the batched
        evaluation of the culled points; both compute the same values.
        """
        network = self.representation.rf_network
        batch, num_rays, num_points, _ = points.shape
        shared_direction = directions.dim() == 1
        folded = self.fold_film_layers and not torch.is_grad_enabled()
        if (precision != 'fp32' or compile) and not (folded and contributing is not None):
            raise ValueError(f"precision={precision!r} / compile={compile} apply to the gradient-free culled "
                             "(folded) radiance evaluation only; this call has gradients enabled, no culling "
                             "mask or a generator that keeps the official operation order")
        dtype = RADIANCE_PRECISIONS[precision]
        if contributing is None:
            if shared_direction:
                directions = directions.expand_as(points)
            out = network(points.reshape(batch, -1, 3), directions.reshape(batch, -1, 3), raw_frequencies, phases)
            return out.reshape(batch, num_rays, num_points, 4)
        if resolve_radiance_path(radiance_path or self.radiance_path, points.device) == 'batched':
            return self._radiance_batched(points, directions, raw_frequencies, phases, contributing, folded, dtype,
                                          compile)
        evaluate_folded = self._compiled_forward_folded() if compile else network.forward_folded
        out = points.new_zeros(batch, num_rays, num_points, 4)
        for b in range(batch):  # FiLM parameters differ per latent, so pack each latent's points separately
            mask = contributing[b]
            selected_points = points[b][mask]
            selected_directions = directions if shared_direction else directions[b][mask]
            if folded:
                # torch.compile specialises point counts 0 and 1 (a recompilation each): run those eagerly
                evaluate = evaluate_folded if selected_points.shape[0] > 1 else network.forward_folded
                selected = evaluate(selected_points, selected_directions, raw_frequencies[b], phases[b], dtype=dtype)
            else:
                if shared_direction:
                    selected_directions = selected_directions.expand_as(selected_points)
                if torch.is_grad_enabled():
                    selected = network.forward_fused(selected_points, selected_directions, raw_frequencies[b],
                                                     phases[b], recompute=self.training_path == 'low_memory')
                else:  # a generator that keeps the official operation order (GRAM-HD's fixture-exact renders)
                    selected = network(selected_points.unsqueeze(0), selected_directions.unsqueeze(0),
                                       raw_frequencies[b:b + 1], phases[b:b + 1])[0]
            out[b][mask] = selected.to(out.dtype)
        return out

    def _radiance_batched(self, points, directions, raw_frequencies, phases, contributing, folded, dtype, compile):
        """`radiance` on the contributing points of all latents at once: [B, R, M, 4], zeros elsewhere.

        Each latent's contributing points are compacted into a [B, C] block (`compact_rows`: C is the
        largest count, the call's one host sync; at one camera every latent has the same points, so nothing
        is padded), evaluated by the batched network forms, and read back by one gather. The number of
        kernels does not depend on B. Filler slots of shorter rows are evaluated on a real point and never
        read, so they get no gradient.
        """
        network = self.representation.rf_network
        batch, num_rays, num_points, _ = points.shape
        index, slot = compact_rows(contributing.reshape(batch, -1))
        capacity = index.shape[1]
        selected_points = torch.gather(points.reshape(batch, -1, 3), 1, index.unsqueeze(-1).expand(-1, -1, 3))
        if directions.dim() == 1:
            selected_directions = directions
        elif directions.stride(2) == 0:  # one direction per ray (expanded over its points): gather by ray
            ray_index = torch.div(index, num_points, rounding_mode='floor').unsqueeze(-1).expand(-1, -1, 3)
            selected_directions = torch.gather(directions[:, :, 0], 1, ray_index)
        else:
            selected_directions = torch.gather(directions.reshape(batch, -1, 3), 1,
                                               index.unsqueeze(-1).expand(-1, -1, 3))
        if folded:
            # as on the per-latent path, compiled graphs are not specialised to 0 or 1 points
            evaluate = self._compiled_forward_folded() if compile and capacity > 1 else network.forward_folded
            values = evaluate(selected_points, selected_directions, raw_frequencies, phases, dtype=dtype)
        else:
            if selected_directions.dim() == 1:
                selected_directions = selected_directions.expand_as(selected_points)
            if torch.is_grad_enabled():
                values = network.forward_fused(selected_points, selected_directions, raw_frequencies, phases,
                                               recompute=self.training_path == 'low_memory')
            else:  # the official operation order, all latents in one call (as the official code evaluates)
                values = network(selected_points, selected_directions, raw_frequencies, phases)
        values = values.to(points.dtype)
        values = torch.cat([values, values.new_zeros(batch, 1, values.shape[-1])], dim=1)
        out = torch.gather(values, 1, slot.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        return out.reshape(batch, num_rays, num_points, -1)

    def _compiled_forward_folded(self):
        """`RadianceNetwork.forward_folded` under torch.compile, built on first use and kept with the
        generator. Culled point counts change every call, so shapes are dynamic: one compilation per
        direction layout (per point or shared), precision and path (per latent or batched) instead of one
        per count."""
        if getattr(self, '_forward_folded_compiled', None) is None:
            compiled = torch.compile(self.representation.rf_network.forward_folded, dynamic=True)

            def evaluate(points, directions, raw_frequencies, phases, **kwargs):
                # A latent's FiLM vectors are views at offset b * F into the batch's; dynamo would guard on
                # that offset and recompile for the next latent. Copies (F floats) start at offset 0.
                return compiled(points, directions, raw_frequencies.clone(), phases.clone(), **kwargs)
            self._forward_folded_compiled = evaluate
        return self._forward_folded_compiled

    def _radiance_front_to_back(self, points, directions, raw_frequencies, phases, contributing, order,
                                sorted_valid, sorted_is_background, threshold, **radiance_options):
        """`radiance` with early ray termination; [B, R, M, 4] in level order, as `radiance` returns.

        The surfaces of each ray are evaluated in depth order (`order` [B, R, M, 1] sorts them; the sorted
        valid / is_background masks come with it), EARLY_TERMINATION_GROUP at a time. Once the transmittance
        in front of a group is below `threshold`, the ray's remaining points are skipped (rgb = sigma = 0).
        The weights of skipped points sum to at most that transmittance, so a composite colour moves by at
        most threshold * max|rgb|.
        """
        if contributing is None:
            raise ValueError("early ray termination needs the fast path's culling mask (render with fast=True)")
        batch, num_rays, num_points, _ = points.shape
        depth_rank = torch.argsort(order[..., 0], dim=-1)  # [B, R, M]: depth position of each surface
        light = points.new_ones(batch, num_rays, 1)  # transmittance in front of the current group
        rgb_sigma = None
        for start in range(0, num_points, EARLY_TERMINATION_GROUP):
            end = min(start + EARLY_TERMINATION_GROUP, num_points)
            evaluated = contributing & (depth_rank >= start) & (depth_rank < end) & (light >= threshold)
            group = self.radiance(points, directions, raw_frequencies, phases, evaluated, **radiance_options)
            # groups are disjoint and zero outside their points, so the sum is exact
            rgb_sigma = group if rgb_sigma is None else rgb_sigma + group
            if end < num_points:
                sigma = torch.gather(group[..., 3:], -2, order[:, :, start:end])
                background = None if sorted_is_background is None else sorted_is_background[:, :, start:end]
                alpha = sample_alpha(sigma, sorted_valid[:, :, start:end], self.delta_alpha, self.delta_final,
                                     background, ends_ray=False)
                light = light * transmittance(alpha)[:, :, -1]
        return rgb_sigma

    def render_rays(self, raw_frequencies, phases, origins, img_size, pixel_range=None,
                    lock_view_dependence=False, fast=True, shared_camera=False, sort_origin=None,
                    return_hits=False, precision='fp32', early_termination=0.0, tf32=False, compile=False,
                    radiance_path=None, return_background_weight=False):
        """Render pixels of cameras at origins [B, 3] with the given FiLM parameters.

        Returns (rgb [B, R, 3] in [0, 1]-ish composite space, depth [B, R, 1]), then the composite weight of
        the background plane [B, R, 1] with `return_background_weight` (0 without a plane), then the
        `ray_intersections` dict (unsorted, level order) with `return_hits`. Samples are sorted by their distance from their own
        ray origin, or from `sort_origin` [3] when given (GRAM-HD measures from batch element 0's camera);
        the depth is always the distance from the ray's own origin.
        `fast` skips the radiance network on points that cannot contribute (invalid intersections and
        points behind the background plane); `fast=False` is the plain reference path that evaluates
        every intersection of every latent, as the official code does. `precision`, `early_termination`,
        `tf32` and `compile` are the inexact options of `render`; they act on the radiance MLP only, so the
        intersections (a discontinuous validity decision) stay exact float32. `radiance_path` is
        `radiance`'s (default: the generator's).
        """
        hits = self.ray_intersections(origins, img_size, pixel_range, shared_camera=shared_camera)
        points, valid, is_background = hits['points'], hits['valid'], hits['is_background']
        batch, num_rays, num_points, _ = points.shape
        reference = hits['ray_origins'].unsqueeze(2) if sort_origin is None else sort_origin.reshape(1, 1, 1, 3)
        distances = torch.norm(points - reference, dim=-1, keepdim=True)
        if lock_view_dependence or not self.view_dependence:
            # every point is seen along (0, 0, -1): the textures of GRAM-HD videos rely on this
            directions = torch.tensor([0.0, 0.0, -1.0], dtype=points.dtype, device=points.device)
        else:
            directions = hits['ray_directions'].unsqueeze(2).expand(-1, -1, num_points, -1)
        if batch != raw_frequencies.shape[0]:
            raise ValueError(f"{raw_frequencies.shape[0]} latents for {batch} cameras")

        contributing = None
        if fast:
            contributing = valid[..., 0] > 0
            if is_background is not None:
                background_distance = distances[:, :, -1:, 0]
                contributing = contributing & ((distances[..., 0] <= background_distance) | is_background[..., 0])

        distances, order = torch.sort(distances, dim=-2)
        valid = torch.gather(valid.expand(batch, -1, -1, -1), -2, order)
        if is_background is not None:
            is_background = torch.gather(is_background.expand(batch, -1, -1, -1), -2, order)
        with tf32_matmuls(tf32):
            if early_termination > 0:
                rgb_sigma = self._radiance_front_to_back(points, directions, raw_frequencies, phases, contributing,
                                                         order, valid, is_background, early_termination,
                                                         precision=precision, compile=compile,
                                                         radiance_path=radiance_path)
            else:
                rgb_sigma = self.radiance(points, directions, raw_frequencies, phases, contributing,
                                          precision=precision, compile=compile, radiance_path=radiance_path)
        rgb_sigma = torch.gather(rgb_sigma, -2, order.expand(-1, -1, -1, 4))
        color, depth, weights = composite(rgb_sigma, distances, valid, self.delta_alpha, self.delta_final,
                                          is_background, white_back=self.white_back, last_back=self.last_back)
        if sort_origin is not None:
            # The sort (and so the image) keeps GRAM-HD's camera-0 quirk, but the depth a caller gets is the
            # distance from each ray's own camera: camera 0's distances are no depth for the other views of
            # a batch (a 3D-consistency sweep renders its views in one batch).
            own_distances = torch.norm(points - hits['ray_origins'].unsqueeze(2), dim=-1, keepdim=True)
            own_distances = torch.gather(own_distances.expand(batch, -1, -1, -1), -2, order)
            depth = weighted_depth(weights, own_distances)
        outputs = (color, depth)
        if return_background_weight:
            # how much of the pixel the plane paints: a generator that draws its subject on the plane has ~1
            outputs += ((weights * is_background).sum(dim=-2) if is_background is not None
                        else torch.zeros_like(depth),)
        if return_hits:
            outputs += (hits,)
        return outputs

    # ------------------------------------------------------------------------------------------------
    # Public entry points

    def render(self, z, pitch, yaw, img_size=None, truncation_psi=1.0, lock_view_dependence=False,
               return_depth=False, fast=True, chunk_points=None, precision='fp32', early_termination=0.0,
               tf32=False, compile=False, radiance_path=None, return_background_weight=False, styles=None):
        """Render latents z [B, z_dim] from cameras at (pitch [B], yaw [B]) radians (official pose labels).
        `styles`: the FiLM parameters themselves, (raw frequencies, phases) [B, (layers+1) * hidden] each, in
        place of z's mapping (an inverted photo; z and truncation_psi are then unused and z may be None).

        Angles may be float64; the camera origin is computed in float64 and cast once. Pixels are rendered
        in chunks of about `chunk_points` manifold-field samples (a memory bound; no effect on values,
        rays are independent); by default 2**19 on CPU, and on CUDA as many rays as fit in half the free
        memory (`rays_per_chunk`). `fast=False` is the plain reference path (see `render_rays`);
        `radiance_path` picks how the fast path evaluates its culled points (RADIANCE_PATHS; default: the
        generator's `radiance_path`, 'auto' = batched on CUDA, per latent on CPU). Returns images
        [B, 3, H, W] in [-1, 1], then depth [B, 1, H, W] (distance along the ray) with `return_depth`, then
        the background plane's composite weight [B, 1, H, W] with `return_background_weight`.

        Inexact options of the fast path (the defaults are exact; errors measured in README "Inexact
        options"), all acting on the radiance MLP only:
        - precision: 'fp32', 'bf16' or 'fp16', the dtype the MLP runs in (its output is float32);
        - early_termination: a transmittance threshold T in [0, 1); a ray's points behind a transmittance
          below T are not evaluated. Each colour moves by at most ~T (2T in image units);
        - tf32: CUDA float32 matmuls may use TF32 (no effect on CPU);
        - compile: torch.compile the MLP evaluation (the first call compiles).
        """
        check_inexact_options(fast, precision, early_termination, tf32, compile)
        if styles is not None:
            z = styles[0]  # its rows and device stand for the latents'
        radiance_path = radiance_path or self.radiance_path
        resolve_radiance_path(radiance_path, z.device)  # a bad name fails before any work
        img_size = int(img_size or self.img_size)
        pitch = torch.as_tensor(pitch).reshape(-1).cpu()
        yaw = torch.as_tensor(yaw).reshape(-1).cpu()
        if pitch.shape[0] == 1 and z.shape[0] > 1:
            pitch, yaw = pitch.expand(z.shape[0]), yaw.expand(z.shape[0])
        if not (pitch.shape[0] == yaw.shape[0] == z.shape[0]):
            raise ValueError(f"render: z has {z.shape[0]} rows but pitch/yaw have {pitch.shape[0]}/{yaw.shape[0]}")
        origins_cpu = camera.origins_from_angles(pitch, yaw)
        shared_camera = bool((origins_cpu == origins_cpu[:1]).all())
        origins = origins_cpu.to(z.device)
        raw_frequencies, phases = styles if styles is not None else self.mapping(z, truncation_psi)
        # Rays are independent: render in chunks of pixels so that 256^2 and up fit in laptop memory.
        num_rays = img_size * img_size
        rays_per_chunk = self.rays_per_chunk(z.shape[0], num_rays, z.device, chunk_points, shared_camera, precision,
                                             fast)
        chunks = []
        for start in range(0, num_rays, rays_per_chunk):
            chunks.append(self.render_rays(raw_frequencies, phases, origins, img_size,
                                           pixel_range=(start, min(num_rays, start + rays_per_chunk)),
                                           lock_view_dependence=lock_view_dependence, fast=fast,
                                           shared_camera=shared_camera, precision=precision,
                                           early_termination=early_termination, tf32=tf32, compile=compile,
                                           radiance_path=radiance_path,
                                           return_background_weight=return_background_weight))
        color = torch.cat([chunk[0] for chunk in chunks], dim=1)
        outputs = (self._to_image(color, img_size),)
        as_maps = lambda index: (torch.cat([chunk[index] for chunk in chunks], dim=1)  # noqa: E731
                                 .reshape(-1, img_size, img_size, 1).permute(0, 3, 1, 2))
        if return_depth:
            outputs += (as_maps(1),)
        if return_background_weight:
            outputs += (as_maps(2),)
        return outputs if len(outputs) > 1 else outputs[0]

    def rays_per_chunk(self, batch, num_rays, device, chunk_points=None, shared_camera=False, precision='fp32',
                       fast=True):
        """Rays `render` evaluates at once for `batch` latents: chunk_points // (batch * num_samples) when
        given, else that with CPU_CHUNK_POINTS off CUDA; on CUDA the rays whose estimated working memory
        fits in CUDA_CHUNK_MEMORY_SHARE of the free memory (torch.cuda.mem_get_info), so that a large GPU
        renders a whole image, or a whole batch, at once. The plain path (`fast=False`) keeps about four
        activations per point alive (Linear output, FiLM product and sum, sine) instead of two buffers."""
        device = torch.device(device)
        if chunk_points is None and device.type == 'cuda':
            free_bytes, _ = torch.cuda.mem_get_info(device)
            field_bytes = self.num_samples * (3 * self.representation.sample_network.output_layer.in_features + 16) * 4
            num_points = self.num_levels + (1 if self.background else 0)
            itemsize = (RADIANCE_PRECISIONS[precision] or torch.float32).itemsize
            point_bytes = (2 if fast else 4) * self.representation.rf_network.hidden_dim * itemsize + 160
            ray_bytes = CUDA_CHUNK_SAFETY * (field_bytes * (1 if shared_camera else batch)
                                             + batch * num_points * point_bytes)
            return int(max(1, min(num_rays, CUDA_CHUNK_MEMORY_SHARE * free_bytes // ray_bytes)))
        chunk_points = CPU_CHUNK_POINTS if chunk_points is None else chunk_points
        return max(1, chunk_points // (batch * self.num_samples))

    def sample_poses(self, batch, device, generator=None):
        """(pitch [B], yaw [B]) float32 from the config's camera prior."""
        return camera.sample_camera_angles(batch, device=device, generator=generator, **self.prior)

    def forward(self, z, pitch=None, yaw=None, img_size=None, truncation_psi=1.0, pixel_range=None,
                lock_view_dependence=False):
        """Training forward: renders z [B, z_dim] at poses drawn from the prior (or the given ones).

        Returns (images [B, 3, H, W], poses [B, 2] = (pitch, yaw)); with `pixel_range` = (start, end), only
        those flattened pixels are rendered and images is [B, 3, end - start] (patch-wise training).
        Origins are computed in float32 on the device from the float32 poses (what training does).
        """
        img_size = int(img_size or self.img_size)
        if pitch is None:
            pitch, yaw = self.sample_poses(z.shape[0], z.device)
        origins = torch.stack([torch.sin(pitch) * torch.cos(yaw), torch.cos(pitch),
                               torch.sin(pitch) * torch.sin(yaw)], -1).to(torch.float32)
        raw_frequencies, phases = self.mapping(z, truncation_psi)
        if self.training_path not in self.TRAINING_PATHS:
            raise ValueError(f"training_path must be one of {self.TRAINING_PATHS}, got {self.training_path!r}")
        color, _ = self.render_rays(raw_frequencies, phases, origins, img_size, pixel_range=pixel_range,
                                    lock_view_dependence=lock_view_dependence,
                                    fast=self.training_path != 'plain')
        poses = torch.stack([pitch, yaw], -1)
        if pixel_range is not None:
            return (color * 2 - 1).permute(0, 2, 1), poses
        return self._to_image(color, img_size), poses

    @staticmethod
    def _to_image(color, img_size):
        return (color * 2 - 1).reshape(-1, img_size, img_size, 3).permute(0, 3, 1, 2).contiguous()
