"""GRAM's stage-1 process (official `Gan3DProcess`, also GRAM-HD stage 1): per iteration one D step, then
one G step.

    train_step(run, real_images, real_poses, step) -> dict of floats (loss terms, grad norms, scale)
    train_step(..., latents=(z_D, z_G), poses=(poses_D, poses_G))  # given draws instead of the step's stream

The stage-2 process (GRAM-HD `SRGan3DProcess`, training/sr_gan3d.py) is another function with the same
signature, registered in training/loop.py under its config['process']['class'] name.
"""
import contextlib

import torch

from .distributed import all_reduce_gradients
from .losses import check_finite, d_adversarial, g_adversarial, pose_loss, r1_penalty
from .state import step_generator


def strip_ranges(img_size, patch_split):
    """Flattened row-major pixel ranges of `patch_split` horizontal strips covering an S x S image.

    Any count from 1 to S*S works (strip k is [floor(k N / P), floor((k+1) N / P))); the official README
    asked for powers of 2 only because its strips had to divide the image evenly.
    """
    total = int(img_size) ** 2
    patch_split = int(patch_split)
    if not 1 <= patch_split <= total:
        raise ValueError(f"patch_split must be between 1 and {total} (pixels of a {img_size}x{img_size} image), "
                         f"got {patch_split}")
    return [(total * k // patch_split, total * (k + 1) // patch_split) for k in range(patch_split)]


def render_fakes(generator, z, pitch, yaw, patch_split=None):
    """Images [B, 3, S, S] at the given poses, rendered whole or strip by strip (same pixels; strips only
    bound the activation memory)."""
    if not patch_split:
        return generator(z, pitch, yaw)[0]
    size = generator.img_size
    strips = [generator(z, pitch, yaw, pixel_range=r)[0] for r in strip_ranges(size, patch_split)]
    return torch.cat(strips, dim=-1).reshape(z.shape[0], 3, size, size)


@contextlib.contextmanager
def frozen(module):
    """No parameter gradients for `module` inside (D during the G step: G only needs dL/dimage)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def _process_kwargs(run):
    kwargs = run.config['process']['kwargs']
    batch_split = int(kwargs.get('batch_split', 1))
    batch_size = int(run.config['global']['batch_size'])
    if batch_size % batch_split:
        raise ValueError(f"config: global.batch_size {batch_size} is not divisible by process.kwargs.batch_split "
                         f"{batch_split}")
    return kwargs, batch_size // batch_split


def _sample_poses(run, batch, rng, given=None):
    """(pitch [b], yaw [b]) on the run's device: drawn from the prior with `rng`, or the rows of `given`
    [b, 2] = (pitch, yaw) when a caller fixed the step's poses (the official-step fixture does)."""
    if given is not None:
        return given[:, 0].to(run.device), given[:, 1].to(run.device)
    pitch, yaw = run.generator.sample_poses(batch, 'cpu', generator=rng)
    return pitch.to(run.device), yaw.to(run.device)


def _latents(run, batch, rng, given=None):
    """z [batch, z_dim] (CPU): the step's draw, or `given` after a shape check."""
    if given is None:
        return torch.randn(batch, run.generator.z_dim, generator=rng)
    if tuple(given.shape) != (batch, run.generator.z_dim):
        raise ValueError(f"given latents have shape {tuple(given.shape)}; expected ({batch}, {run.generator.z_dim})")
    return given


def _chunks(z, chunk, given_poses=None):
    """z's batch_split chunks, each with its rows of the given poses [B, 2] (None: drawn per chunk)."""
    if given_poses is not None and tuple(given_poses.shape) != (z.shape[0], 2):
        raise ValueError(f"given poses have shape {tuple(given_poses.shape)}; expected ({z.shape[0]}, 2) = "
                         "(pitch, yaw) per latent")
    pose_chunks = [None] * len(z.split(chunk)) if given_poses is None else given_poses.split(chunk)
    return zip(z.split(chunk), pose_chunks)


def _optimizer_step(run, module, optimizer):
    """Average grads over ranks, unscale, clip (config grad_clip), step. Returns the pre-clip grad norm.

    Only trainable parameters take part (GRAM-HD stage 2 freezes the GRAM part of its generator)."""
    params = [p for p in module.parameters() if p.requires_grad]
    all_reduce_gradients(params, run.world_size)
    run.scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, float(run.config['optimizer']['grad_clip']))
    run.scaler.step(optimizer)
    return grad_norm


def draw_fakes(run, batch, rng, render, z=None, poses=None):
    """Fakes for a D step (stages 1 and 2): `batch` latents in batch_split chunks, fresh prior poses per
    chunk, no gradients. render(z [b, z_dim], pitch [b], yaw [b]) -> images. Returns (images, poses [B, 2]).
    `z` [B, z_dim] and `poses` [B, 2] replace the draws from `rng` when given."""
    _, chunk = _process_kwargs(run)
    z = _latents(run, batch, rng, z)
    fakes, fake_poses = [], []
    with torch.no_grad(), run.autocast():
        for z_chunk, given_poses in _chunks(z, chunk, poses):
            pitch, yaw = _sample_poses(run, z_chunk.shape[0], rng, given_poses)
            fakes.append(render(z_chunk.to(run.device), pitch, yaw))
            fake_poses.append(torch.stack([pitch, yaw], -1))
    return torch.cat(fakes), torch.cat(fake_poses)


def discriminator_step(run, real_images, real_poses, rng, step, z=None, poses=None):
    kwargs, _ = _process_kwargs(run)
    generator, discriminator = run.generator, run.discriminator
    fakes, fake_poses = draw_fakes(
        run, real_images.shape[0], rng,
        lambda z, pitch, yaw: render_fakes(generator, z, pitch, yaw, run.patch_split), z, poses)

    gamma = float(kwargs.get('r1_lambda', 0))
    use_r1 = gamma > 0 and step % int(kwargs.get('r1_interval', 1)) == 0
    real = real_images.to(run.device, non_blocking=True).requires_grad_(use_r1)
    real_poses = real_poses.to(run.device, non_blocking=True)
    with run.autocast():
        real_logits, real_predicted_poses = discriminator(real)
    terms = {}
    if use_r1:
        terms['r1'] = r1_penalty(real_logits, real, gamma, run.scaler)
    with run.autocast():
        fake_logits, fake_predicted_poses = discriminator(fakes)
    terms['d_real'], terms['d_fake'] = d_adversarial(real_logits, fake_logits)
    return finish_discriminator_step(run, discriminator, terms, step, (fake_predicted_poses, fake_poses),
                                     (real_predicted_poses, real_poses))


def finish_discriminator_step(run, discriminator, terms, step, fake_pose_pair, real_pose_pair):
    """Add the pose terms to the D loss `terms`, check them, back-propagate and step D (stages 1 and 2).

    fake_pose_pair / real_pose_pair = (predicted [B, 2], target [B, 2]). Returns the logged values.
    """
    kwargs = run.config['process']['kwargs']
    terms['d_pose_fake'] = float(kwargs['pos_lambda']) * pose_loss(*fake_pose_pair)
    # Without dataset poses (real_pose False) there is no target for D's pose head on reals.
    if run.config['dataset']['kwargs'].get('real_pose', True) and float(kwargs.get('real_pos_lambda', 0)) > 0:
        terms['d_pose_real'] = float(kwargs['real_pos_lambda']) * pose_loss(*real_pose_pair)
    values, overflows = check_finite(terms, step, 'discriminator', run.scaler, overflow_terms=('r1',))

    run.optimizer_D.zero_grad(set_to_none=True)
    run.scaler.scale(sum(terms.values())).backward()
    grad_norm = _optimizer_step(run, discriminator, run.optimizer_D)
    values['d_loss'] = sum(v for k, v in values.items() if k not in overflows)
    values['d_grad_norm'] = float(grad_norm)
    if overflows:
        values['r1_overflow'] = 1.0  # the scaler skips this D update and lowers the scale
    return values


def _generator_terms(run, logits, predicted_poses, poses, step):
    kwargs = run.config['process']['kwargs']
    terms = {'g_adv': g_adversarial(logits),
             'g_pose': float(kwargs['pos_lambda']) * pose_loss(predicted_poses, poses)}
    values, _ = check_finite(terms, step, 'generator')
    return sum(terms.values()), values


def _generator_chunk(run, z, pitch, yaw, step):
    with run.autocast():
        images, poses = run.generator(z, pitch, yaw)
        logits, predicted_poses = run.discriminator(images)
    loss, values = _generator_terms(run, logits, predicted_poses, poses, step)
    run.scaler.scale(loss).backward()
    return values


def _generator_chunk_patchwise(run, z, pitch, yaw, step):
    """Same gradient as `_generator_chunk` with the activation memory of one strip (official patch_split):
    render all strips without grad, take dL/dimage through D, then re-render each strip with grad and
    back-propagate its slice of dL/dimage. Costs one extra G forward."""
    ranges = strip_ranges(run.generator.img_size, run.patch_split)
    with torch.no_grad(), run.autocast():
        images = render_fakes(run.generator, z, pitch, yaw, run.patch_split)
    images = images.detach().requires_grad_(True)
    poses = torch.stack([pitch, yaw], -1)
    with run.autocast():
        logits, predicted_poses = run.discriminator(images)
    loss, values = _generator_terms(run, logits, predicted_poses, poses, step)
    (image_grad,) = torch.autograd.grad(run.scaler.scale(loss), images)
    image_grad = image_grad.flatten(2)  # [B, 3, S*S], row-major like the strips
    for start, end in ranges:
        with run.autocast():
            strip, _ = run.generator(z, pitch, yaw, pixel_range=(start, end))
        strip.backward(image_grad[..., start:end].to(strip.dtype))
    return values


def generator_step(run, rng, step, z=None, poses=None):
    _, chunk = _process_kwargs(run)
    z = _latents(run, int(run.config['global']['batch_size']), rng, z)
    run.optimizer_G.zero_grad(set_to_none=True)
    chunk_values = []
    with frozen(run.discriminator):
        for z_chunk, given_poses in _chunks(z, chunk, poses):
            pitch, yaw = _sample_poses(run, z_chunk.shape[0], rng, given_poses)
            forward = _generator_chunk_patchwise if run.patch_split else _generator_chunk
            chunk_values.append(forward(run, z_chunk.to(run.device), pitch, yaw, step))
    # Official quirk kept: chunk losses are batch means and are NOT divided by batch_split, so the step's
    # gradient is the sum over chunks (D's loss is a mean over the whole batch). The official learning
    # rates and grad_clip were tuned with this scaling. Logged values are the mean over chunks.
    values = finish_generator_step(run, chunk_values)
    values['g_loss'] = values['g_adv'] + values['g_pose']
    return values


def finish_generator_step(run, chunk_values):
    """Step G once its chunks have back-propagated (stages 1 and 2): optimizer step, the iteration's loss-
    scale update, both EMAs. chunk_values: each chunk's logged dict. Returns their mean plus g_grad_norm."""
    grad_norm = _optimizer_step(run, run.generator, run.optimizer_G)
    run.scaler.update()  # once per iteration, after G (official): D overflows also lower the scale
    run.ema.update(run.generator)
    run.ema2.update(run.generator)
    values = {k: sum(v[k] for v in chunk_values) / len(chunk_values) for k in chunk_values[0]}
    values['g_grad_norm'] = float(grad_norm)
    return values


def run_iteration(run, real_images, real_poses, step, discriminator_step, generator_step, latents=None, poses=None):
    """One iteration of either stage: the step's random stream, the loss-scale floor, the D step, the G step.
    discriminator_step(run, real_images, real_poses, rng, step, z, poses) and generator_step(run, rng, step,
    z, poses) return dicts of logged values; latents = (z_D, z_G) and poses = (poses_D, poses_G), when given,
    replace their draws (see train_step)."""
    z_D, z_G = (None, None) if latents is None else latents
    poses_D, poses_G = (None, None) if poses is None else poses
    rng = step_generator(run.seed, run.rank, step)
    if run.scaler.is_enabled() and run.scaler.get_scale() < 1:
        run.scaler.update(1.0)  # official floor: the scale never stays below 1
    values = discriminator_step(run, real_images, real_poses, rng, step, z_D, poses_D)
    values.update(generator_step(run, rng, step, z_G, poses_G))
    values['scale'] = run.scaler.get_scale() if run.scaler.is_enabled() else 1.0
    return values


def train_step(run, real_images, real_poses, step, latents=None, poses=None):
    """One iteration: D step on (real_images [B, 3, S, S], real_poses [B, 2]) and fakes, then G step.

    latents = (z_D, z_G), each [B, z_dim], and poses = (poses_D, poses_G), each [B, 2] = (pitch, yaw), replace
    the step's own draws (either may be given alone); everything else still comes from the step's random
    stream. This is how one iteration is replayed against the official code (tests/test_train_step_fixture.py).
    """
    return run_iteration(run, real_images, real_poses, step, discriminator_step, generator_step, latents, poses)
