"""Loss terms of GRAM / GRAM-HD stage 1 (non-saturating GAN, R1, pose regression) and the finite check.

Means are over the batch (and both angles for the pose MSE), as in the official process.
"""
import math

import torch
import torch.nn.functional as F


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or inf; the message names the step and the term."""


def d_adversarial(real_logits, fake_logits):
    """(softplus(-D(real)).mean(), softplus(D(fake)).mean()): non-saturating logistic loss for D."""
    return F.softplus(-real_logits.float()).mean(), F.softplus(fake_logits.float()).mean()


def g_adversarial(fake_logits):
    """softplus(-D(G(z))).mean(): non-saturating logistic loss for G."""
    return F.softplus(-fake_logits.float()).mean()


def pose_loss(predicted, target):
    """MSE between predicted and true (pitch, yaw) [B, 2], mean over batch and angles.

    Euclidean in angles, as the official code: no wrap-around for CARLA's 360-degree yaw.
    """
    return F.mse_loss(predicted.float(), target.float())


def r1_penalty(real_logits, real_images, gamma, scaler=None):
    """R1 = gamma/2 * mean_b ||d sum(D(x_real)) / d x_b||^2, differentiable (create_graph).

    Under AMP the gradient is taken of the *scaled* logits (the fp16 backward would underflow otherwise)
    and multiplied back by 1/scale, as the official process does. With a disabled scaler (CPU) the scale
    is 1. `real_images` must have requires_grad and be the input that produced `real_logits`.
    """
    logit_sum = real_logits.float().sum()
    scale = 1.0
    if scaler is not None and scaler.is_enabled():
        logit_sum = scaler.scale(logit_sum)
        scale = scaler.get_scale()
    (gradient,) = torch.autograd.grad(logit_sum, real_images, create_graph=True)
    gradient = gradient.float() * (1.0 / scale)
    return 0.5 * gamma * gradient.pow(2).flatten(1).sum(1).mean()


def check_finite(terms, step, phase, scaler=None, overflow_terms=()):
    """Raise TrainingDiverged naming the step and term when a loss term is NaN or inf.

    `terms` maps names to 0-d tensors; returns them as floats (one host sync for all). Terms named in
    `overflow_terms` (R1, whose gradient is taken of the loss-scaled logits) may overflow in fp16 while the
    GradScaler's scale is above 1: that is a scale problem the scaler handles by skipping the step and
    halving the scale, so those are reported as overflows (second return value) instead of stopping.
    """
    values = torch.stack([t.detach().float() for t in terms.values()]).cpu().tolist()
    values = dict(zip(terms, values))
    scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
    overflows = []
    for name, value in values.items():
        if math.isfinite(value):
            continue
        if name in overflow_terms and scale > 1.0:
            overflows.append(name)
            continue
        raise TrainingDiverged(f"step {step}: {phase} loss term '{name}' is {value} (all terms: "
                               + ', '.join(f'{k}={v:.4g}' for k, v in values.items())
                               + "). Stopped before this update; nothing was saved after the last checkpoint. "
                               "Resume from the last checkpoint, e.g. with a lower learning rate or grad_clip.")
    return values, overflows
