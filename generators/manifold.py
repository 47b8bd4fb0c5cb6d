"""Manifold predictor: a z-independent scalar field s(p) whose fixed iso-levels are GRAM's radiance manifolds.

Module and parameter names follow the official `GramSample` (`network.{0,2,4}`, `output_layer`) so that
official state_dicts load with strict=True.
"""
import math

import torch
import torch.nn as nn

# The manifold predictor always sees points scaled by 2/0.24, whatever the radiance box (`normalize`) is.
MANIFOLD_INPUT_SCALE = 2 / 0.24
# Below this |s_hi - s_lo| the official code takes the interval's far end instead of the linear root.
FLAT_INTERVAL_EPS = 0.05


def manifold_levels(levels_start, levels_end, num_levels, device='cpu'):
    """The fixed iso-levels, in descending order: linspace(start, end, K) [K]."""
    return torch.linspace(levels_start, levels_end, num_levels, device=device)


class ManifoldPredictor(nn.Module):
    """ReLU MLP 3 -> hidden x layer_num -> 1 with SAL-style geometric init (spheres around `center`).

    Input points [..., 3] in world space; output s(p) [..., 1].
    """

    def __init__(self, hidden_dim=128, layer_num=3, center=(0, 0, -1.5), init_radius=0.0):
        super().__init__()
        layers = []
        in_dim = 3
        for _ in range(layer_num):
            layers += [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True)]
            in_dim = hidden_dim
        self.network = nn.Sequential(*layers)
        self.output_layer = nn.Linear(hidden_dim, 1)
        # A plain attribute (not a buffer): official state_dicts do not contain it.
        self.center = torch.tensor(center, dtype=torch.float32)
        self.reset_parameters(init_radius)

    def reset_parameters(self, init_radius=0.0):
        # Geometric init (SAL, scaled by 10): s grows about linearly with the distance from the centre.
        for module in self.network:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, math.sqrt(2) / math.sqrt(module.out_features))
                nn.init.zeros_(module.bias)
        hidden = self.output_layer.in_features
        nn.init.constant_(self.output_layer.weight, 10 * math.sqrt(math.pi) / math.sqrt(hidden))
        nn.init.constant_(self.output_layer.bias, -init_radius)

    def forward(self, points):
        center = self.center.to(points.device, points.dtype)
        return self.output_layer(self.network(points * MANIFOLD_INPUT_SCALE - center))


def first_crossings(samples, field, levels, field_network=None):
    """Ray-manifold intersections by the official first-crossing rule.

    samples [B, R, S, 3] (points along each ray, nearest first), field [B, R, S, 1] (s at those points),
    levels [K]. For each level, the chosen interval is the first one nearest the camera in which the
    field drops through the level (s_hi <= level <= s_lo); rays without a crossing pick the last interval.
    Returns (points [B, R, K, 3], valid [B, R, K, 1] float 0/1). The point is the linear root when the
    interval is a crossing and |s_hi - s_lo| > 0.05, else the interval's far end; gradients reach the field
    only through that interpolation.

    With `field_network` (the field given without gradients), the field is re-evaluated with gradients
    only at the two ends of the intervals that are interpolated, typically half of the samples: the same
    decisions and, up to rounding, the same points and gradients, for half the field's backward memory.
    """
    batch, num_rays, num_samples, _ = samples.shape
    num_levels = levels.shape[0]
    s_lo = field[:, :, :-1]  # [B, R, S-1, 1]
    s_hi = field[:, :, 1:]
    levels = levels.to(field.dtype).reshape(1, 1, 1, -1)
    crossing = (s_hi <= levels) & (levels <= s_lo)  # [B, R, S-1, K]
    # argmax of (+-1) * descending weights == the first crossing; ties cannot occur between crossings.
    order = torch.linspace(num_samples - 1, 0, num_samples - 1, device=field.device, dtype=field.dtype)
    score = torch.where(crossing, order.reshape(1, 1, -1, 1), -order.reshape(1, 1, -1, 1))
    chosen = score.argmax(dim=2)  # [B, R, K]
    valid = torch.gather(crossing, 2, chosen.unsqueeze(2)).squeeze(2)  # [B, R, K]

    index = chosen.unsqueeze(-1)  # [B, R, K, 1]
    lo_value = torch.gather(s_lo.expand(-1, -1, -1, num_levels), 2, chosen.unsqueeze(2)).squeeze(2).unsqueeze(-1)
    hi_value = torch.gather(s_hi.expand(-1, -1, -1, num_levels), 2, chosen.unsqueeze(2)).squeeze(2).unsqueeze(-1)
    lo_point = torch.gather(samples[:, :, :-1], 2, index.expand(-1, -1, -1, 3))
    hi_point = torch.gather(samples[:, :, 1:], 2, index.expand(-1, -1, -1, 3))

    level = levels.reshape(1, 1, -1, 1)
    step = hi_value - lo_value
    steep = step.abs() > FLAT_INTERVAL_EPS
    if field_network is not None:
        interpolated = (valid.unsqueeze(-1) & steep)[..., 0]  # [B, R, K]
        ends = field_network(torch.cat([lo_point[interpolated], hi_point[interpolated]]))  # [2n, 1]
        lo_value, hi_value = lo_value.clone(), hi_value.clone()
        lo_value[interpolated], hi_value[interpolated] = ends.chunk(2)
        step = hi_value - lo_value
    safe_step = torch.where(steep, step, torch.full_like(step, FLAT_INTERVAL_EPS))
    root = ((hi_value - level) * lo_point + (level - lo_value) * hi_point) / safe_step
    points = torch.where(valid.unsqueeze(-1) & steep, root, hi_point)
    return points, valid.unsqueeze(-1).to(samples.dtype)


def background_plane_points(ray_origins, ray_directions, plane_z=-0.12):
    """Intersections [B, R, 1, 3] of world rays with the fixed background plane z = plane_z."""
    distance = (plane_z - ray_origins[..., 2:3]) / ray_directions[..., 2:3]
    return (ray_origins + distance * ray_directions).unsqueeze(2)
