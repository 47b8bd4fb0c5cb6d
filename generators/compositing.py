"""Alpha compositing of the samples on a ray (GRAM's `fancy_integration`)."""
import torch

# Added to every (1 - alpha) in the transmittance product, as pi-GAN/GRAM do, so it never reaches exactly 0.
TRANSMITTANCE_EPS = 1e-10


def composite(rgb_sigma, distances, valid, delta_alpha, delta_final, is_background=None, white_back=False,
              last_back=False):
    """Composite sorted samples front to back.

    rgb_sigma [B, R, M, 4] (rgb, sigma), distances [B, R, M, 1] ascending along M, valid [B, R, M, 1] 0/1,
    is_background [B, R, M, 1] bool or None. GRAM uses a constant step `delta_alpha` instead of the real
    distances between samples; the farthest sample and the background plane get `delta_final`.
    Returns (rgb [B, R, 3], depth [B, R, 1], weights [B, R, M, 1]).
    """
    alpha = sample_alpha(rgb_sigma[..., 3:], valid, delta_alpha, delta_final, is_background)
    return composite_alpha(rgb_sigma[..., :3], alpha, distances, white_back=white_back, last_back=last_back)


def sample_alpha(sigma, valid, delta_alpha, delta_final, is_background=None, ends_ray=True):
    """Opacity of sorted samples: 1 - exp(-delta * sigma), 0 where the intersection is invalid.

    sigma, valid [B, R, M, 1]; delta is `delta_alpha`, or `delta_final` on the background plane and, when
    the M samples run to the end of the ray (`ends_ray`), on the farthest one. A front slice of a ray
    (early ray termination) passes ends_ray=False: its last sample is not the farthest.
    """
    # At least float32: under autocast (AMP) sigma is float16, where delta_final = 1e10 does not fit (the
    # official code got inf there, i.e. alpha = 1 for sigma > 0, which float32 gives too).
    deltas = torch.full(sigma.shape, delta_alpha, dtype=torch.promote_types(sigma.dtype, torch.float32),
                        device=sigma.device)
    if ends_ray:
        deltas[..., -1, :] = delta_final
    if is_background is not None:
        deltas = torch.where(is_background, torch.full_like(deltas, delta_final), deltas)
    return (1 - torch.exp(-deltas * sigma)) * valid


def transmittance(alpha):
    """Transmittance in front of each sorted sample and behind the last one: [B, R, M, 1] -> [B, R, M + 1, 1].

    T_0 = 1, T_i = prod_{j < i} (1 - alpha_j + eps): the fraction of a ray's light that reaches sample i.
    """
    shifted = torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + TRANSMITTANCE_EPS], dim=-2)
    return torch.cumprod(shifted, dim=-2)


def composite_alpha(rgb, alpha, distances, white_back=False, last_back=False):
    """Composite sorted samples whose opacities are already known (GRAM-HD's HR textures store alpha).

    rgb [B, R, M, 3], alpha [B, R, M, 1], distances [B, R, M, 1], all sorted front to back along M.
    Returns (rgb [B, R, 3], depth [B, R, 1], weights [B, R, M, 1]) as `composite`.
    """
    weights = alpha * transmittance(alpha)[..., :-1, :]
    weight_total = weights.sum(dim=-2)
    if last_back:
        weights = weights.clone()
        weights[..., -1, :] += 1 - weight_total
    color = torch.sum(weights * rgb, dim=-2)
    depth = weighted_depth(weights, distances)
    if white_back:
        color = color + 1 - weight_total
    return color, depth, weights


def weighted_depth(weights, distances):
    """Depth [B, R, 1] of a composite: the weight-averaged distance of its samples (weights, distances
    [B, R, M, 1], in the same sorted order)."""
    return torch.sum(weights * distances, dim=-2) / weights.sum(dim=-2)
