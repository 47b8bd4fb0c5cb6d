"""GRAM-HD's stage-2 process (official `SRGan3DProcess`): per iteration one D step, then one G step.

    train_step(run, real_images, real_poses, step) -> dict of floats (loss terms, grad norms, scale)
    train_step(..., latents=(z_D, z_G), poses=(poses_D, poses_G))  # given draws, as in stage 1

The generator is a `GramHDGenerator` whose GRAM part holds the stage-1 EMA(0.999) weights
(`gram_model_file` in the config) and stays frozen; only the feature heads and both SR networks train
(the optimizer and the EMAs hold the parameters with requires_grad, see training/state.py). The
discriminator is `GramEncoderPatchDiscriminator` (logit, pose, patch logits), trained from scratch.

    D: softplus(D(fake)) + softplus(-D(real)) + patch_lambda [softplus(P(fake)) + softplus(-P(real))]
       + R1 + pos_lambda MSE(pose fake) + real_pos_lambda MSE(pose real)
       R1 = r1_lambda / 2 E||d/dx sum_b [D(x) + patch_lambda mean_patches P(x)]||^2   (r1_patch; else D only)
    G (per micro-batch of batch_size / batch_split, divided by batch_split, accumulated):
       softplus(-D(fake)) + patch_lambda softplus(-P(fake)) + pos_lambda MSE(pose) + L_cons
       L_cons = cons_lambda mean((down_s(I_HR) - I_LR)^2) + cons_lambda mean((down_s(M_HR) - M_LR)^2)

Means are over the batch and the patch positions. Everything else (AMP, loss-scale floor, gradient
averaging over ranks, clipping, EMA updates, per-step random streams) is the stage-1 machinery of gan3d.py.
"""
import os

import torch.nn.functional as F
from PIL import Image

from generators.super_resolution import bicubic_downsample

from . import gan3d
from .gan3d import _chunks, _latents, _process_kwargs, _sample_poses, finish_generator_step, frozen, run_iteration
from .losses import check_finite, d_adversarial, g_adversarial, pose_loss, r1_penalty


def consistency_loss(hr_images, lr_images, hr_maps, lr_maps, scale, cons_lambda):
    """Cross-resolution consistency: (image term, maps term), each cons_lambda * MSE after an
    anti-aliased bicubic down-sampling of the HR side by `scale`.

    hr_images [B, 3, H, H], lr_images [B, 3, H/s, H/s], hr_maps [M, 4, H, H], lr_maps [M, 4, H/s, H/s]
    (M = B * K manifold maps + B background maps). The LR side is the frozen GRAM's output (a target).
    """
    image_term = F.mse_loss(bicubic_downsample(hr_images.float(), scale), lr_images.detach().float())
    maps_term = F.mse_loss(bicubic_downsample(hr_maps.float(), scale), lr_maps.detach().float())
    return cons_lambda * image_term, cons_lambda * maps_term


def _settings(run):
    kwargs, chunk = _process_kwargs(run)
    use_patch = bool(kwargs.get('use_patch_d', True))
    patch_lambda = float(kwargs.get('patch_lambda', 0.1)) if use_patch else 0.0
    return kwargs, chunk, use_patch, patch_lambda


def check_stage2_start(config, dataset, resuming):
    """Refuse, before any model is built, a stage-2 run that cannot learn what it should: a fresh run
    without the stage-1 GRAM (`gram_model_file`; a resumed run takes it from its own generator checkpoint),
    or real images smaller than the HR size, which the loader would up-sample: the SR nets would then learn
    to paint that blur. (Larger images are down-sampled, as the official transform does.)"""
    if config['process']['class'] != 'SRGan3DProcess':
        return
    stage1_file = config['generator']['kwargs'].get('gram_model_file')
    if not resuming and not stage1_file:
        raise ValueError("GRAM-HD stage 2 starts from a trained GRAM: pass --gram_model_file (or set "
                         "config['generator']['kwargs']['gram_model_file']) to the stage-1 "
                         "stepXXXXXX_generator.pth (its sibling stepXXXXXX_ema.pth supplies the EMA weights)")
    if not resuming and not os.path.isfile(stage1_file):
        raise ValueError(f"stage-1 file {stage1_file} (--gram_model_file) does not exist; expected a stage-1 "
                         "stepXXXXXX_generator.pth or one of this project's GRAM checkpoints")
    hr_size = int(config['generator']['kwargs']['img_size'])
    for index in sorted({0, len(dataset) - 1}):
        path = dataset.image_path(index)
        with Image.open(path) as image:
            width, height = image.size
        if min(width, height) < hr_size:
            raise ValueError(f"{path} is {width}x{height}, but stage 2 trains its super-resolution at "
                             f"{hr_size}x{hr_size} (generator.kwargs.img_size): expected real images of at least "
                             f"{hr_size}x{hr_size} (preprocess_dataset.py --size {hr_size} or more)")


def _check_run(run):
    if not getattr(run.generator, 'is_hd', False):
        raise ValueError("SRGan3DProcess (GRAM-HD stage 2) needs a GramHDGenerator; config generator class is "
                         f"{run.config['generator']['class']!r}")
    if run.patch_split:
        raise ValueError("--patch_split is a stage-1 (GRAM) option; GRAM-HD stage 2 bounds memory with "
                         "process.kwargs.batch_split instead")


def discriminator_step(run, real_images, real_poses, rng, step, z=None, poses=None):
    kwargs, _, use_patch, patch_lambda = _settings(run)
    generator, discriminator = run.generator, run.discriminator
    # D sees the HR image only; the LR image and the maps matter for G's consistency loss.
    fakes, fake_poses = gan3d.draw_fakes(run, real_images.shape[0], rng,
                                         lambda z, pitch, yaw: generator(z, pitch, yaw)[0][0], z, poses)

    gamma = float(kwargs.get('r1_lambda', 0))
    use_r1 = gamma > 0 and step % int(kwargs.get('r1_interval', 1)) == 0
    real = real_images[:, :3].to(run.device, non_blocking=True).requires_grad_(use_r1)
    real_poses = real_poses.to(run.device, non_blocking=True)
    with run.autocast():
        real_logits, real_predicted_poses, real_patches = discriminator(real)
    terms = {}
    if use_r1:
        r1_logits = real_logits.float().reshape(-1)
        if use_patch and kwargs.get('r1_patch', True):
            r1_logits = r1_logits + patch_lambda * real_patches.float().mean(1)
        terms['r1'] = r1_penalty(r1_logits, real, gamma, run.scaler)
    with run.autocast():
        fake_logits, fake_predicted_poses, fake_patches = discriminator(fakes)
    terms['d_real'], terms['d_fake'] = d_adversarial(real_logits, fake_logits)
    if use_patch:
        patch_real, patch_fake = d_adversarial(real_patches, fake_patches)
        terms['d_patch_real'], terms['d_patch_fake'] = patch_lambda * patch_real, patch_lambda * patch_fake
    return gan3d.finish_discriminator_step(run, discriminator, terms, step, (fake_predicted_poses, fake_poses),
                                           (real_predicted_poses, real_poses))


def _generator_chunk(run, z, pitch, yaw, step, batch_split):
    kwargs, _, use_patch, patch_lambda = _settings(run)
    with run.autocast():
        (hr_images, lr_images, hr_maps, lr_maps), poses = run.generator(z, pitch, yaw)
        logits, predicted_poses, patches = run.discriminator(hr_images)
    terms = {'g_adv': g_adversarial(logits)}
    if use_patch:
        terms['g_patch'] = patch_lambda * g_adversarial(patches)
    terms['g_pose'] = float(kwargs['pos_lambda']) * pose_loss(predicted_poses, poses)
    terms['g_cons_image'], terms['g_cons_maps'] = consistency_loss(
        hr_images, lr_images, hr_maps, lr_maps, run.generator.scale_factor, float(kwargs.get('cons_lambda', 0)))
    values, _ = check_finite(terms, step, 'generator')
    run.scaler.scale(sum(terms.values()) / batch_split).backward()
    return values


def generator_step(run, rng, step, z=None, poses=None):
    _, chunk, _, _ = _settings(run)
    z = _latents(run, int(run.config['global']['batch_size']), rng, z)
    chunks = list(_chunks(z, chunk, poses))
    run.optimizer_G.zero_grad(set_to_none=True)
    chunk_values = []
    with frozen(run.discriminator):
        for z_chunk, given_poses in chunks:
            pitch, yaw = _sample_poses(run, z_chunk.shape[0], rng, given_poses)
            chunk_values.append(_generator_chunk(run, z_chunk.to(run.device), pitch, yaw, step, len(chunks)))
    values = finish_generator_step(run, chunk_values)
    values['g_cons'] = values['g_cons_image'] + values['g_cons_maps']
    values['g_loss'] = sum(values[k] for k in ('g_adv', 'g_patch', 'g_pose', 'g_cons') if k in values)
    return values


def train_step(run, real_images, real_poses, step, latents=None, poses=None):
    """One iteration: D step on (real_images [B, 3, S, S], real_poses [B, 2]) and HR fakes, then G step.

    latents = (z_D, z_G) and poses = (poses_D, poses_G) replace the step's own draws, as in stage 1's
    `gan3d.train_step` (tests/test_train_step_fixture_hd.py replays the official stage-2 step with them).
    """
    _check_run(run)
    return run_iteration(run, real_images, real_poses, step, discriminator_step, generator_step, latents, poses)
