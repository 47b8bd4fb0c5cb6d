"""Putting a photo into a GRAM or GRAM-HD generator: fit the latent parameters that render it from a camera.

GRAM maps z through its mapping network to one (frequency, phase) pair per FiLM layer and channel; each
layer has its own slice, so that vector acts like StyleGAN's W+ and is what gets optimised here (as pi-GAN's
inverse_render.py and NeRFInvertor do; README "Putting a photo into the model"); GRAM-HD adds the SR styles.
The fit starts at the mean parameters of the mapping networks (the truncation centre), is pulled back
towards them, and is perturbed by noise that decays to zero, which keeps it from settling into a latent that
only explains the one view; a mirrored view can stand for the far side. GRAM's manifolds do not depend on
the latent: the fit changes colour and opacity on fixed surfaces only. The camera is given, estimated from 5
face landmarks (`align_photo`), or searched for (`estimate_pose`), and can be refined with the latent.
`finetune_radiance` goes past what the latent can express by fitting GRAM's radiance network itself.

A latent file (`save_latent` / `load_latent`) holds the fitted parameters, the camera they were fitted from
and the checkpoint they belong to; `inference.py --latent` renders it in place of a seed.
"""
import math
import os

import numpy as np
import torch

from .views import frontal_angles

LATENT_FORMAT = 'gram-pytorch-latent'
LATENT_VERSION = 1
# Defaults of the fit (measured on the shipped model at 32^2, README "Inversion").
DEFAULT_STEPS = 200
DEFAULT_LR = 0.02
DEFAULT_MEAN_PULL = 1e-4
DEFAULT_NOISE = 0.05
DEFAULT_MIRROR_WEIGHT = 0.0
# Pose estimation (estimate_pose, then fit_latent's pose refinement): short fits per candidate camera.
PROBE_STEPS = 15
DEFAULT_POSE_LR = 0.005
# Fine-tuning of the radiance network after the latent fit (finetune_radiance).
DEFAULT_FINETUNE_LR = 1e-4
DEFAULT_GEOMETRY_WEIGHT = 1.0
FINETUNE_WARMUP = 20  # steps of linear learning-rate warm-up


class InversionError(ValueError):
    """An input the inversion cannot use, with the file / value and what was expected."""


def _read_photo(path):
    from PIL import Image

    from utils.images import read_rgb

    try:
        return read_rgb(path)
    except FileNotFoundError:
        raise InversionError(f"--image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise InversionError(f"cannot read --image {path}: {str(error).replace(repr(str(path)), '').strip()}; "
                             "expected a PNG or JPEG photo") from None


# preprocess_dataset.py's default face crop; the training images are read from it with a LANCZOS resize.
FACE_CROP_SIZE = 256


def align_photo(path, landmarks_path, size=FACE_CROP_SIZE):
    """A raw face photo and its 5 landmarks (a Deep3DFaceRecon-style text file, 5 lines of 'x y': eyes, nose,
    mouth corners) -> (the crop preprocess_dataset.py --cate faces makes of it, a PIL image size x size;
    its camera as (pitch, yaw) offsets from frontal, radians, the label the FFHQ reader gives that crop)."""
    from datasets import ffhq_pose_labels
    from utils import alignment

    image = _read_photo(path)
    try:
        landmarks = alignment.read_lm5p(landmarks_path)
    except FileNotFoundError:
        raise InversionError(f"--landmarks {landmarks_path} does not exist") from None
    except ValueError as error:
        raise InversionError(f"--landmarks {error}") from None
    try:
        aligned = alignment.align_face(image, landmarks, size)
    except ValueError as error:
        raise InversionError(f"--landmarks {landmarks_path}: {error}") from None
    rx, ry, _ = alignment.face_angles_from_landmarks(landmarks, image.height)
    pitch, yaw = ffhq_pose_labels(rx, ry)
    return aligned, (pitch - math.pi / 2, yaw - math.pi / 2)


def load_target(path, img_size, image=None):
    """The photo at `path` (or the PIL `image` already read from it) as [1, 3, S, S] in [-1, 1] at the
    model's size S.

    The photo must already be a crop like the training images (square, the head centred as
    preprocess_dataset.py aligns it, or `align_photo`'s crop); it is only resized. A non-square image is
    refused rather than squashed.
    """
    from PIL import Image

    image = _read_photo(path) if image is None else image
    width, height = image.size
    if width != height:
        raise InversionError(f"--image {path} is {width}x{height}; expected a square crop aligned like the training "
                             "images (preprocess_dataset.py crops them)")
    if width < 16:
        raise InversionError(f"--image {path} is {width}x{height}; expected at least 16x16")
    if width != img_size:
        image = image.resize((img_size, img_size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def check_pose(generator, pitch_offset, yaw_offset):
    """Offsets (radians) from the frontal camera inside the model's camera prior (mean +- 3 std), else an
    InversionError naming the value and the range."""
    prior = generator.prior
    for name, value, std in (('pitch', pitch_offset, prior['v_stddev']), ('yaw', yaw_offset, prior['h_stddev'])):
        limit = max(3 * float(std), 0.05)
        if not math.isfinite(value) or abs(value) > limit:
            raise InversionError(f"--pose {name} {value:g} rad is outside the model's camera range (+-{limit:.2f} rad "
                                 f"from frontal, 3 standard deviations of its {name} prior)")


def fit_latent(generator, target, pitch, yaw, steps=DEFAULT_STEPS, lr=DEFAULT_LR, mean_pull=DEFAULT_MEAN_PULL,
               noise=DEFAULT_NOISE, progress=None, seed=0, mirror_weight=0.0, pose_lr=0.0):
    """Latent parameters that render `target` [V, 3, S, S] from the
    V cameras (pitch [V], yaw [V]) (official pose labels, radians; V = 1 for a photo, more for the
    ceiling of the inversion metric: one latent fitted to all its true views): GRAM's FiLM parameters (raw
    frequencies, phases) [1, D] each, and for GRAM-HD also the SR styles [1, D_sr] (`latent_parameters`;
    S is then the HR size). Adam on offsets from the mean parameters;
    loss = mean squared error + mean_pull * mean squared offset; Gaussian noise of std `noise` x the
    parameters' spread is added to the rendered parameters and decays linearly to 0 at 3/4 of the steps.
    `mirror_weight` > 0 adds each view's mirror view to the fit with that weight: the image flipped
    left-right, seen from the camera mirrored in the world's plane x = 0 (yaw -> pi - yaw). For a left-right
    symmetric subject (faces; the procedural heads' shapes) it is a view of the far side: a symmetry prior.
    `pose_lr` > 0 optimises the cameras too (a pitch and a yaw offset per view, Adam at that learning rate in
    radians, decaying linearly to 0; the images depend smoothly on the camera through the ray-manifold
    intersections).
    Returns (styles, history, (pitch [V], yaw [V]) float64 of the final cameras) with history the squared
    error of the given views per step."""
    device = next(generator.parameters()).device
    target = target.to(device)
    num_given = target.shape[0]
    given_pitch = torch.as_tensor(pitch, dtype=torch.float64).detach().reshape(-1).cpu()
    given_yaw = torch.as_tensor(yaw, dtype=torch.float64).detach().reshape(-1).cpu()
    pose_offsets = torch.zeros(2, given_pitch.shape[0], dtype=torch.float64, requires_grad=pose_lr > 0)

    def cameras():
        pitch_now, yaw_now = given_pitch + pose_offsets[0], given_yaw + pose_offsets[1]
        if mirror_weight > 0:
            return torch.cat([pitch_now, pitch_now]), torch.cat([yaw_now, math.pi - yaw_now])
        return pitch_now, yaw_now

    view_weights = torch.ones(num_given, device=device)
    if mirror_weight > 0:
        target = torch.cat([target, torch.flip(target, dims=[-1])])
        view_weights = torch.cat([view_weights, torch.full((num_given,), float(mirror_weight), device=device)])
    size = target.shape[-1]
    means = [tensor.detach().clone() for tensor in generator.latent_center(device)]
    with torch.no_grad():  # the spread of each parameter over latents scales the noise
        rng = torch.Generator().manual_seed(seed)
        sample = generator.latent_parameters(torch.randn(256, generator.z_dim, generator=rng).to(device))
        spreads = [values.std(dim=0, keepdim=True) for values in sample]
    offsets = [torch.zeros_like(mean, requires_grad=True) for mean in means]
    groups = [{'params': offsets, 'lr': lr}]
    if pose_lr > 0:
        groups.append({'params': [pose_offsets], 'lr': pose_lr})
    optimizer = torch.optim.Adam(groups)
    noise_rng = torch.Generator(device=device).manual_seed(seed + 1)
    history = []
    was_training = generator.training
    trainable = [param.requires_grad for param in generator.parameters()]
    generator.eval()
    for param in generator.parameters():
        param.requires_grad_(False)
    try:
        for step in range(steps):
            scale = noise * max(0.0, 1 - step / max(1, 0.75 * steps))
            if pose_lr > 0:
                optimizer.param_groups[1]['lr'] = pose_lr * (1 - step / steps)
            styles = []
            for mean, offset, spread in zip(means, offsets, spreads):
                jitter = torch.randn(mean.shape, generator=noise_rng, device=device) * spread * scale
                styles.append(mean + offset + jitter)
            views = target.shape[0]
            pitch_now, yaw_now = cameras()
            image = generator.render(None, pitch_now, yaw_now, img_size=size, lock_view_dependence=True,
                                     styles=tuple(style.expand(views, -1) for style in styles))
            view_errors = torch.mean((image - target) ** 2, dim=(1, 2, 3))  # [V]
            loss = torch.sum(view_weights * view_errors) / num_given
            regulariser = mean_pull * sum(torch.mean(offset ** 2) for offset in offsets)
            optimizer.zero_grad(set_to_none=True)
            (loss + regulariser).backward()
            optimizer.step()
            history.append(float(view_errors[:num_given].detach().mean()))
            if progress is not None:
                progress.set_postfix(loss=f"{history[-1]:.4f}", psnr=f"{psnr_from_mse(history[-1]):.1f}")
                progress.update(1)
    finally:
        for param, was_trainable in zip(generator.parameters(), trainable):
            param.requires_grad_(was_trainable)
        generator.train(was_training)
    styles = tuple((mean + offset).detach() for mean, offset in zip(means, offsets))
    final_pose = ((given_pitch + pose_offsets[0]).detach(), (given_yaw + pose_offsets[1]).detach())
    return styles, history, final_pose


def _parabola_vertex(values, losses, best):
    """The abscissa of the minimum of the parabola through the best candidate and its two neighbours (equally
    spaced `values`), kept within half a spacing of the best; the best itself at either end."""
    if best == 0 or best == len(values) - 1:
        return float(values[best])
    left, centre, right = losses[best - 1], losses[best], losses[best + 1]
    curvature = left - 2 * centre + right
    spacing = float(values[1] - values[0])
    shift = 0.0 if curvature <= 0 else 0.5 * (left - right) / curvature
    return float(values[best]) + max(-0.5, min(0.5, shift)) * spacing


def estimate_pose(generator, target, probe_steps=PROBE_STEPS, progress=None):
    """(pitch, yaw) offsets from the frontal camera (radians) of a photo `target` [1, 3, S, S] whose camera is
    not known: a search by short fits (`probe_steps` each, no noise) whose final error says how well a camera
    explains the photo. Yaw first, on candidates 0.2 rad apart across the prior (+-2 std, at most +-0.8) at
    pitch 0; then pitch -0.15, 0, +0.15 at the best yaw; each refined to the vertex of the parabola through
    the best candidate and its neighbours. `fit_latent(pose_lr=...)` refines the result further."""
    yaw_values, pitch_values = _pose_candidates(generator)

    def probe_error(pitch_offset, yaw_offset):
        _, history, _ = fit_latent(generator, target, *frontal_angles(pitch_offset, yaw_offset), steps=probe_steps,
                                   noise=0.0)
        if progress is not None:
            progress.update(1)
        return history[-1]

    yaw_errors = [probe_error(0.0, float(yaw)) for yaw in yaw_values]
    best_yaw = min(range(len(yaw_values)), key=yaw_errors.__getitem__)
    yaw_offset = _parabola_vertex(yaw_values, yaw_errors, best_yaw)
    pitch_errors = [probe_error(float(pitch), yaw_offset) for pitch in pitch_values]
    best_pitch = min(range(len(pitch_values)), key=pitch_errors.__getitem__)
    pitch_offset = _parabola_vertex(pitch_values, pitch_errors, best_pitch)
    return pitch_offset, yaw_offset


def _pose_candidates(generator):
    """(yaw offsets, pitch offsets) float64 that `estimate_pose` probes: yaws 0.2 rad apart across +-2 std of
    the prior (at most +-0.8), pitches -0.15, 0, +0.15."""
    steps_each = max(1, int(round(min(0.8, 2 * float(generator.prior['h_stddev'])) / 0.2)))
    yaw_values = torch.linspace(-steps_each * 0.2, steps_each * 0.2, 2 * steps_each + 1, dtype=torch.float64)
    return yaw_values, torch.tensor([-0.15, 0.0, 0.15], dtype=torch.float64)


def probe_count(generator):
    """How many probe fits `estimate_pose` runs for this generator's prior (for a progress bar)."""
    return sum(len(values) for values in _pose_candidates(generator))


def finetune_radiance(generator, styles, target, pitch, yaw, steps, lr=DEFAULT_FINETUNE_LR,
                      geometry_weight=DEFAULT_GEOMETRY_WEIGHT, num_views=8, seed=0, progress=None):
    """A copy of `generator` whose radiance network is fitted further to the photo `target` [1, 3, S, S] seen
    from (pitch, yaw), with the fitted FiLM parameters `styles`: what the latent alone cannot express
    (pi-GAN / NeRFInvertor-style fine-tuning). The manifold network stays frozen, so the surfaces do not
    move; what could still flatten the head is opacity moving between them, so a regulariser holds the
    expected depth and the background plane's share (1 - the head's opacity) at `num_views` cameras drawn
    from the prior (fixed by `seed`; two per step) to the model's before fine-tuning:
        loss = MSE(photo) + geometry_weight * (L1(depth) + L1(plane share))  at those views.
    Returns (the fine-tuned generator, history of the photo's squared error per step). `generator` is not
    changed."""
    import copy

    device = next(generator.parameters()).device
    target = target.to(device)
    tuned = copy.deepcopy(generator).eval()
    radiance_parameters = []
    for name, param in tuned.named_parameters():
        trains = name.startswith('representation.rf_network.') and '.mapping_network.' not in name
        param.requires_grad_(trains)
        if trains:
            radiance_parameters.append(param)
    styles = tuple(style.detach().to(device) for style in styles)
    size = target.shape[-1]
    view_pitch, view_yaw = generator.sample_poses(num_views, 'cpu', generator=torch.Generator().manual_seed(seed))
    view_pitch, view_yaw = view_pitch.double(), view_yaw.double()

    def geometry(model, index):
        _, depth, plane = model.render(None, view_pitch[index], view_yaw[index], img_size=size,
                                       lock_view_dependence=True, return_depth=True, return_background_weight=True,
                                       styles=tuple(style.expand(len(index), -1) for style in styles))
        return depth, plane

    with torch.no_grad():
        reference = geometry(generator, list(range(num_views)))
    optimizer = torch.optim.Adam(radiance_parameters, lr=lr)
    history = []
    for step in range(steps):
        # Adam's first steps move every weight by the full lr whatever its gradient; a SIREN's output swings
        # with that (the photo's PSNR dropped 5 dB over the first 10 steps at 1e-4 without the warm-up).
        optimizer.param_groups[0]['lr'] = lr * min(1.0, (step + 1) / FINETUNE_WARMUP)
        image = tuned.render(None, pitch, yaw, img_size=size, lock_view_dependence=True, styles=styles)
        photo_error = torch.mean((image - target) ** 2)
        index = [(2 * step) % num_views, (2 * step + 1) % num_views]
        depth, plane = geometry(tuned, index)
        drift = (torch.mean(torch.abs(depth - reference[0][index])) +
                 torch.mean(torch.abs(plane - reference[1][index])))
        optimizer.zero_grad(set_to_none=True)
        (photo_error + geometry_weight * drift).backward()
        optimizer.step()
        history.append(float(photo_error.detach()))
        if progress is not None:
            progress.set_postfix(loss=f"{history[-1]:.4f}", psnr=f"{psnr_from_mse(history[-1]):.1f}")
            progress.update(1)
    for param in tuned.parameters():
        param.requires_grad_(False)
    return tuned, history


def psnr_from_mse(mse):
    """PSNR (dB) of images in [-1, 1] (peak-to-peak 2) from their mean squared error."""
    return 10 * math.log10(4 / max(mse, 1e-12))


def checkpoint_fingerprint(path):
    """The first 16 hex digits of a checkpoint file's sha256: a latent belongs to one generator."""
    from utils.checkpoints import file_sha256

    return file_sha256(path)[:16]


def save_latent(path, styles, ckpt, pitch_offset, yaw_offset, source_image, history):
    """Write a latent file: the FiLM parameters (and GRAM-HD's SR styles), the fitted camera (offsets from frontal, radians), the image
    it was fitted to and the checkpoint (path + fingerprint) it belongs to."""
    from utils.checkpoints import atomic_save

    extra = {'sr_styles': styles[2].cpu()} if len(styles) > 2 else {}
    atomic_save({'format': LATENT_FORMAT, 'format_version': LATENT_VERSION,
                 'raw_frequencies': styles[0].cpu(), 'phases': styles[1].cpu(), **extra,
                 'pose_offset': [float(pitch_offset), float(yaw_offset)], 'image': os.path.abspath(source_image),
                 'checkpoint': os.path.abspath(ckpt), 'checkpoint_sha256': checkpoint_fingerprint(ckpt),
                 'final_loss': history[-1] if history else None}, path)


def save_finetuned(path, generator, source_ckpt):
    """Write a fine-tuned generator (`finetune_radiance`) as a self-describing checkpoint of its config, naming
    the checkpoint it was fine-tuned from."""
    from utils.checkpoints import atomic_save, make_checkpoint

    state = {key: value.detach().cpu() for key, value in generator.state_dict().items()}
    atomic_save(make_checkpoint('generator', generator.config, 0,
                                {'state_dict': state, 'finetuned_from': os.path.abspath(source_ckpt)},
                                getattr(generator, 'config_name', None)), path)


def load_latent(path, generator, ckpt=None):
    """The latent parameters of a latent file (`fit_latent`'s) on the generator's device; InversionError naming the
    file when it is not a latent file or does not fit the generator (its width, or another checkpoint)."""
    from utils.checkpoints import CheckpointError, load_file

    try:
        record = load_file(path)
    except (CheckpointError, FileNotFoundError) as error:
        raise InversionError(f"--latent: {error}") from None
    if not isinstance(record, dict) or record.get('format') != LATENT_FORMAT:
        raise InversionError(f"--latent {path} is not a latent file written by invert.py (format {LATENT_FORMAT})")
    device = next(generator.parameters()).device
    styles = (record['raw_frequencies'].to(device), record['phases'].to(device))
    expected = generator.truncation_center(device)[0].shape[-1]
    if styles[0].shape[-1] != expected:
        raise InversionError(f"--latent {path} holds {styles[0].shape[-1]} FiLM parameters per kind but the "
                             f"generator has {expected}: it was fitted with another model ({record.get('checkpoint')})")
    is_hd = getattr(generator, 'is_hd', False)
    if is_hd != ('sr_styles' in record):
        fitted, given = ('GRAM-HD', 'GRAM') if 'sr_styles' in record else ('GRAM', 'GRAM-HD')
        raise InversionError(f"--latent {path} was fitted with a {fitted} model ({record.get('checkpoint')}), but "
                             f"this checkpoint is {given}: invert the photo with this checkpoint")
    if is_hd:
        styles += (record['sr_styles'].to(device),)
        expected = generator.latent_center(device)[2].shape[-1]
        if styles[2].shape[-1] != expected:
            raise InversionError(f"--latent {path} holds {styles[2].shape[-1]} SR styles but the generator has "
                                 f"{expected}: it was fitted with another model ({record.get('checkpoint')})")
    if ckpt is not None and os.path.isfile(ckpt) and record.get('checkpoint_sha256') != checkpoint_fingerprint(ckpt):
        import sys
        print(f"warning: --latent {path} was fitted with {record.get('checkpoint')}, not {ckpt}; rendering it "
              "anyway (same network widths)", file=sys.stderr)
    return styles, record


def latent_or_exit(generator, path, ckpt, view_types=()):
    """([name], {name: latent parameters}) of a --latent file for a script, or one line saying why it cannot be
    rendered (a view type that needs seeds, an unusable file). name: the file name's stem."""
    unusable = [name for name in view_types if name in ('rand', 'interpolation')]
    if unusable:
        raise SystemExit(f"error: --latent renders one latent from fixed views; --type {unusable[0]} needs seeds")
    try:
        styles, _ = load_latent(path, generator, ckpt)
    except InversionError as error:
        raise SystemExit(f"error: {error}")
    name = os.path.splitext(os.path.basename(path))[0]
    return [name], {name: styles}
