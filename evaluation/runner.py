"""The driver shared by eval.py and fid_evaluation.py: image sources -> metrics -> summary + JSON."""
import hashlib
import json
import os
import sys

import torch
from tqdm import tqdm

from rendering.view_jobs import render_batch
from utils.atomic import atomic_open

from . import consistency as consistency_metric
from . import cross_resolution as cross_resolution_metric
from . import geometry as geometry_metric
from . import inversion as inversion_metric
from . import fidelity, swd
from .fidelity import EvaluationError

METRIC_NAMES = ('fid', 'kid', 'is', 'swd', 'consistency', 'cross_resolution', 'depth', 'inversion')
# Metrics that render views of --ckpt themselves (not a set of fakes).
CHECKPOINT_METRICS = ('consistency', 'cross_resolution', 'depth', 'inversion')
FIDELITY_METRICS = ('fid', 'kid', 'is')
# Metrics that compare a set of fakes with a set of reals (the offline SWD needs no Inception weights).
IMAGE_SET_METRICS = FIDELITY_METRICS + ('swd',)
# Fakes rendered from a checkpoint when --num_fake is not given (GRAM-HD eval.py's --num_samples default).
DEFAULT_NUM_FAKE_FROM_CKPT = 10000
RAND_RULE = ('seeds 0..N-1; per seed one torch.Generator seeded with the seed draws z ~ N(0, I) and then '
             '(pitch, yaw) from the config camera prior (inference.py --type rand); view dependence on')
MANIFEST = 'manifest.json'


def parse_metrics(text):
    """'fid,kid,is,consistency' -> ordered unique list; unknown or empty names are errors."""
    names = []
    for item in str(text).split(','):
        name = item.strip().lower()
        if not name:
            continue
        if name not in METRIC_NAMES:
            raise EvaluationError(f"unknown metric {name!r} in --metrics {text!r}; expected a comma list of "
                                  f"{', '.join(METRIC_NAMES)}")
        if name not in names:
            names.append(name)
    if not names:
        raise EvaluationError(f"--metrics {text!r} names no metric; expected some of {', '.join(METRIC_NAMES)}")
    return names


# --------------------------------------------------------------------------------------------------------
# Fakes from a checkpoint


def checkpoint_identity(ckpt, config_name):
    """What a checkpoint's renders depend on: its bytes, the official EMA sibling it pulls in, the config."""
    from utils.checkpoints import official_ema_sibling

    sibling = official_ema_sibling(ckpt)
    return {'path': os.path.abspath(ckpt), 'sha256': fidelity.file_sha256(ckpt),
            'ema_sibling': None if sibling is None else {'path': os.path.abspath(sibling),
                                                         'sha256': fidelity.file_sha256(sibling)},
            'config': config_name}


def prior_description(generator):
    prior = generator.prior
    mode = prior.get('mode', 'gaussian')
    return (f"{mode} prior: yaw mean {prior['h_mean']:.6g} std/range {prior['h_stddev']:.6g}, pitch mean "
            f"{prior['v_mean']:.6g} std/range {prior['v_stddev']:.6g}")


@torch.no_grad()
def rand_sample(generator, seed, truncation, device):
    """uint8 HWC image of one seed under inference.py's `--type rand` rule (byte-identical to it)."""
    from generators.camera import sample_camera_angles

    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(1, generator.z_dim, generator=rng).to(device)
    pitch, yaw = sample_camera_angles(1, generator=rng, **generator.prior)
    images, _ = render_batch(generator, z, pitch.double(), yaw.double(), None, truncation, lock=False)
    return images[0]


def render_fakes(generator, out_dir, num, truncation, device, verbose=True):
    """Render seeds 0..num-1 as {seed:05d}.png into out_dir; returns the list of paths.

    One seed per call, as inference.py renders them, so the files equal `inference.py --type rand --seeds
    0-(num-1)` byte for byte.
    """
    from utils.images import save_png

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for seed in tqdm(range(num), desc='rendering fakes', unit='img', disable=not verbose, file=sys.stderr):
        path = os.path.join(out_dir, f'{seed:05d}.png')
        save_png(rand_sample(generator, seed, truncation, device), path)
        paths.append(path)
    return paths


def _read_manifest(folder):
    """The manifest of a render folder, or None when absent or unreadable (then the fakes are re-rendered)."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as stream:
            return json.load(stream)
    except (OSError, ValueError) as error:
        fidelity.warn(f"ignoring unreadable render manifest {path} ({error}); rendering the fakes again")
        return None


def _file_sizes(files):
    return {os.path.basename(path): os.path.getsize(path) for path in files}


def rendered_fake_set(generator, ckpt_id, num_fake, truncation, device, tmp_dir, cache_name, reuse, verbose):
    """Fakes rendered from a checkpoint into `<tmp_dir>/<prefix>-<key>/`; `reuse` governs their features.

    The key hashes the checkpoint bytes (and its EMA sibling), the config, the number of images, psi, the
    sampling rule, the resolution and the device type, so renders of another model or setting never mix.
    A complete set (its manifest, written last, matches and lists every file with its size) is always
    reused: the renders are a function of the key, so a retry after a later failure (Inception weights, the
    JSON) does not render them again.
    """
    fields = {'checkpoint': ckpt_id, 'num_fake': num_fake, 'truncation': truncation, 'rule': RAND_RULE,
              'image_size': generator.img_size, 'device_type': torch.device(device).type}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    prefix = fidelity.sanitize_name(cache_name or 'fake_' + os.path.splitext(os.path.basename(ckpt_id['path']))[0])
    folder = os.path.join(tmp_dir, f'{prefix}-{key}')
    files = [os.path.join(folder, f'{seed:05d}.png') for seed in range(num_fake)]
    manifest = _read_manifest(folder)
    manifest = dict(manifest) if isinstance(manifest, dict) else {}
    recorded = manifest.pop('files', None)
    if (manifest == fields and all(os.path.isfile(path) for path in files)
            and recorded == _file_sizes(files)):
        if verbose:
            print(f"reusing {num_fake} rendered fakes in {folder}", file=sys.stderr)
    else:
        if os.path.isfile(os.path.join(folder, MANIFEST)):
            os.remove(os.path.join(folder, MANIFEST))  # incomplete until the new manifest is written
        files = render_fakes(generator, folder, num_fake, truncation, device, verbose)
        _write_json(dict(fields, files=_file_sizes(files)), os.path.join(folder, MANIFEST))
    return fidelity.fake_image_set(folder, files=files, cache_name=prefix, reuse_cache=reuse)


# --------------------------------------------------------------------------------------------------------
# The whole evaluation


def _write_json(payload, path):
    with atomic_open(path, 'w') as stream:
        json.dump(payload, stream, indent=2, sort_keys=False)
        stream.write('\n')


def _load_generator(options):
    import configs
    from generators import load_generator

    if isinstance(options.config, str):
        try:
            configs.get_config(options.config)
        except KeyError as error:  # its message lists the known names
            raise EvaluationError(f"--config: {error.args[0]}") from error
    if not os.path.isfile(options.ckpt):
        raise EvaluationError(f"--ckpt file not found: {options.ckpt}")
    generator = load_generator(options.ckpt, config=options.config, device=options.device,
                               default_config=getattr(options, 'default_config', None))
    config_name = options.config if isinstance(options.config, str) else generator.config_name
    return generator, checkpoint_identity(options.ckpt, config_name)


# What a metric holds per image pixel (SWD: every image as float32 RGB and its Laplacian pyramid) and per
# image (Inception: a 2048-d float64 feature); a rendered fake is a PNG of at most 3 bytes per pixel.
SWD_BYTES_PER_PIXEL = 3 * 4 * 2
FEATURE_BYTES = 2048 * 8
# The consistency sweep and the depth metric keep float32 RGB + depth of every view of a seed / latent set.
VIEW_BYTES_PER_PIXEL = 4 * 4 * 2


def check_job_fits(options, metrics, image_size, num_fake, num_real, render_dir, generator):
    """End with one line, before anything is rendered or read, when the counts and sizes of the metrics
    (--num_fake, --num_real, --image_size, --consistency_views / _size, --depth_num / _size) would not fit
    in memory, or the fakes to render not on the disk."""
    from utils.resources import require_disk, require_memory

    pixels = image_size * image_size if image_size else 0
    if render_dir is not None:
        require_disk(num_fake * pixels * 3, render_dir, f"rendering --num_fake {num_fake} fakes of {image_size}^2")
    held, terms = 0, []
    if 'swd' in metrics:
        held += (num_fake + num_real) * pixels * SWD_BYTES_PER_PIXEL
        terms.append(f"SWD over {num_fake} + {num_real} images of {image_size}^2")
    if {'fid', 'kid', 'is'} & set(metrics):
        held += (num_fake + num_real) * FEATURE_BYTES
        terms.append(f"{num_fake} + {num_real} Inception features")
    if generator is not None and {'consistency', 'cross_resolution'} & set(metrics):
        size = getattr(options, 'consistency_size', None) or int(generator.img_size)
        held += options.consistency_views * size * size * VIEW_BYTES_PER_PIXEL
        terms.append(f"--consistency_views {options.consistency_views} at {size}^2")
    if generator is not None and 'depth' in metrics:
        size = getattr(options, 'depth_size', None) or int(getattr(generator, 'lr_img_size', generator.img_size))
        num = getattr(options, 'depth_num', geometry_metric.DEFAULT_NUM)
        held += 2 * num * size * size * VIEW_BYTES_PER_PIXEL  # the model's and the truth's
        terms.append(f"--depth_num {num} at {size}^2")
    if held:
        require_memory(held, '; '.join(terms), options.device, advice='use smaller counts or sizes')


def evaluate(options):
    """Run the metrics described by `options` (the eval.py namespace); returns the result dict.

    Extra optional attributes used by fid_evaluation.py: `fake_render_dir` (render the fakes there, always
    afresh, instead of a keyed folder under tmp_dir) and `num_real_flag`/`num_fake_flag` (flag names for
    error messages).
    """
    metrics = parse_metrics(options.metrics)
    fidelity_metrics = [m for m in metrics if m in FIDELITY_METRICS]
    set_metrics = [m for m in metrics if m in IMAGE_SET_METRICS]
    verbose = not getattr(options, 'quiet', False)
    if options.batch_size < 1:
        raise EvaluationError(f"--batch_size must be >= 1, got {options.batch_size}")
    if options.num_workers < 0:
        raise EvaluationError(f"--num_workers must be >= 0, got {options.num_workers}")
    if options.image_size is not None and options.image_size < 1:
        raise EvaluationError(f"--image_size must be >= 1, got {options.image_size}")
    fake_render_dir = getattr(options, 'fake_render_dir', None)
    from_checkpoint = bool(set_metrics) and options.fake_images_dir is None
    if set_metrics and options.fake_images_dir is None and options.ckpt is None:
        raise EvaluationError("FID/KID/IS/SWD need fakes: pass --fake_images_dir, or --ckpt (and --config for "
                              "official checkpoints) to render them")
    for name in CHECKPOINT_METRICS:
        if name in metrics and options.ckpt is None:
            raise EvaluationError(f"--metrics {name} renders views with depth: pass --ckpt")
    if options.fake_images_dir is not None and options.ckpt is not None:
        if 'consistency' not in metrics:
            fidelity.warn(f"--ckpt {options.ckpt} is not used: the fakes are read from --fake_images_dir")
        elif verbose:
            print(f"fakes are read from {options.fake_images_dir}; --ckpt is used for the consistency metric",
                  file=sys.stderr)
    if {'fid', 'kid', 'swd'} & set(set_metrics) and options.real_images_dir is None:
        raise EvaluationError("FID, KID and SWD need real images: pass --real_images_dir")

    # Everything a run can find wrong without rendering is checked before the fakes are rendered: the real
    # images, the sizes and counts against memory and disk, the Inception weights (fetched now when there is
    # no local file).
    real_set = None
    if {'fid', 'kid', 'swd'} & set(set_metrics):
        real_set = fidelity.real_image_set(options.real_images_dir, options.num_real,
                                           options.real_images_cache_name, options.use_real_images_cache,
                                           flag=getattr(options, 'num_real_flag', '--num_real'))

    generator = ckpt_id = None
    if options.ckpt is not None and (from_checkpoint or set(CHECKPOINT_METRICS) & set(metrics)):
        generator, ckpt_id = _load_generator(options)

    planned_fake, planned_size = 0, options.image_size
    if set_metrics and from_checkpoint:
        planned_fake = DEFAULT_NUM_FAKE_FROM_CKPT if options.num_fake is None else options.num_fake
        planned_size = planned_size or int(generator.img_size)
    elif set_metrics:
        fake_set = fidelity.fake_image_set(options.fake_images_dir, options.num_fake,
                                           options.fake_images_cache_name, options.use_fake_images_cache,
                                           flag=getattr(options, 'num_fake_flag', '--num_fake'))
        planned_fake = len(fake_set)
        planned_size = planned_size or fidelity.check_fake_sizes(fake_set.files[:1], None)
    check_job_fits(options, metrics, planned_size, planned_fake, len(real_set) if real_set is not None else 0,
                   (fake_render_dir or options.tmp_dir) if set_metrics and from_checkpoint else None, generator)
    weights = None
    if fidelity_metrics:
        weights = fidelity.weights_identity(options.feature_extractor_weights)
        if weights['path'] is None:
            fidelity.create_extractor(weights, options.device)

    result = {}
    protocol = {'metrics': metrics, 'device': str(options.device)}
    json_name = None
    if set_metrics:
        if from_checkpoint:
            image_size = int(generator.img_size)
            if options.image_size is not None and options.image_size != image_size:
                raise EvaluationError(f"--image_size {options.image_size} but {options.ckpt} renders "
                                      f"{image_size}x{image_size}; fakes are never resized: omit --image_size "
                                      f"(it defaults to the model resolution)")
            num_fake = DEFAULT_NUM_FAKE_FROM_CKPT if options.num_fake is None else options.num_fake
            if num_fake < 1:
                raise EvaluationError(f"{getattr(options, 'num_fake_flag', '--num_fake')} must be >= 1, "
                                      f"got {num_fake}")
            if fake_render_dir is not None:
                files = render_fakes(generator, fake_render_dir, num_fake, options.truncation, options.device,
                                     verbose)
                # Rendered afresh every run: caching their features would only pile up files.
                fake_set = fidelity.fake_image_set(fake_render_dir, files=files, cache=False)
            else:
                fake_set = rendered_fake_set(generator, ckpt_id, num_fake, options.truncation, options.device,
                                             options.tmp_dir, options.fake_images_cache_name,
                                             options.use_fake_images_cache, verbose)
            fake_origin = {'checkpoint': ckpt_id, 'truncation': float(options.truncation),
                           'pose_sampling': f"{RAND_RULE}; {prior_description(generator)}"}
        else:  # fake_set: listed above, before the size check
            image_size = fidelity.check_fake_sizes(fake_set.files, options.image_size)
            fake_origin = {'checkpoint': None, 'truncation': None,
                           'pose_sampling': f"unknown: fakes read from {fake_set.source} (not rendered here)"}
        if 'swd' in set_metrics:
            result['swd'], protocol['swd'] = swd_metric(fake_set, real_set, image_size, fake_origin, verbose)
            json_name = fake_set.cache_name({'metric': 'swd'}) or 'metrics'
    if fidelity_metrics:
        values, details = fidelity.compute_fidelity(
            fake_set, real_set, fidelity_metrics, image_size, weights=weights, device=options.device,
            batch_size=options.batch_size, cache_root=options.tmp_dir, num_workers=options.num_workers,
            verbose=verbose)
        result.update(values)
        json_name = details['fake_cache_name'] or 'metrics'
        protocol.update({
            'num_real': details['num_real'],
            'num_fake': details['num_fake'],
            'image_size': image_size,
            'resize_method': {'real': fidelity.REAL_RESIZE, 'fake': fidelity.FAKE_RESIZE,
                              'inception_input': fidelity.INCEPTION_INPUT},
            'truncation': fake_origin['truncation'],
            'pose_sampling': fake_origin['pose_sampling'],
            'feature_extractor': {'name': fidelity.FEATURE_EXTRACTOR, 'weights': weights},
            'library': f"torch-fidelity {fidelity.torch_fidelity_version()}",
            'fid_formula': details['fid_formula'],
            'kid': details['kid'],
            'isc': details['isc'],
            'rng_seed': details['rng_seed'],
            'fake_images': {'source': fake_set.source, 'available': fake_set.available,
                            'selection': fake_set.selection, 'cache_name': details['fake_cache_name'],
                            'features': details['fake_features'], 'checkpoint': fake_origin['checkpoint']},
            'real_images': None if real_set is None else {
                'source': real_set.source, 'available': real_set.available, 'selection': real_set.selection,
                'cache_name': details['real_cache_name'], 'features': details['real_features']},
            'cache_root': os.path.abspath(options.tmp_dir),
        })

    def checkpoint_metric(name, total, unit, compute):
        """Run compute(progress) for a metric that renders views of --ckpt itself; file its result."""
        nonlocal json_name
        progress = tqdm(total=total, desc=name, unit=unit, disable=not verbose, file=sys.stderr)
        try:
            scores = compute(progress)
        except ValueError as error:
            raise EvaluationError(f"{name}: {error}") from error
        finally:
            progress.close()
        scores['protocol']['checkpoint'] = ckpt_id
        result[name] = scores
        protocol[name] = scores['protocol']
        if json_name is None:
            # keyed by the protocol too: depth at 32^2 and at 64^2 are two results, not one overwritten
            key = hashlib.sha256(json.dumps(scores['protocol'], sort_keys=True, default=str).encode()).hexdigest()[:8]
            json_name = (f'{name}-' + fidelity.sanitize_name(os.path.splitext(os.path.basename(options.ckpt))[0])
                         + f'-{key}')

    if {'consistency', 'cross_resolution'} & set(metrics):
        from utils.seeds import parse_seeds

        try:
            seeds = parse_seeds(options.consistency_seeds)
        except ValueError as error:
            raise EvaluationError(f"--consistency_seeds: {error}") from error
    if 'consistency' in metrics:
        checkpoint_metric('consistency', len(seeds), 'seed', lambda progress: consistency_metric.evaluate_consistency(
            generator, seeds, options.consistency_views, options.consistency_yaw_range, options.truncation,
            options.depth_tolerance, options.device, progress, getattr(options, 'consistency_size', None)))
    if 'cross_resolution' in metrics:
        checkpoint_metric('cross_resolution', len(seeds), 'seed',
                          lambda progress: cross_resolution_metric.evaluate_cross_resolution(
            generator, seeds, options.consistency_views, options.consistency_yaw_range, options.truncation,
            options.device, progress))
    if 'depth' in metrics:
        checkpoint_metric('depth', len(geometry_metric.VIEWS), 'view',
                          lambda progress: geometry_metric.evaluate_geometry(
            generator, num=getattr(options, 'depth_num', geometry_metric.DEFAULT_NUM),
            size=getattr(options, 'depth_size', None), truncation=options.truncation,
            truth_seed=getattr(options, 'depth_truth_seed', geometry_metric.DEFAULT_TRUTH_SEED),
            device=options.device, progress=progress))

    if 'inversion' in metrics:
        def run_inversion(progress):
            inversion_metric.check_comparable(generator)
            return inversion_metric.evaluate_inversion(
                generator, num=getattr(options, 'inversion_num', inversion_metric.DEFAULT_NUM),
                truth_seed=getattr(options, 'depth_truth_seed', geometry_metric.DEFAULT_TRUTH_SEED),
                steps=getattr(options, 'inversion_steps', None) or inversion_metric.inversion.DEFAULT_STEPS,
                ceiling_steps=getattr(options, 'inversion_ceiling_steps', None), progress=progress,
                mirror_weight=(inversion_metric.inversion.DEFAULT_MIRROR_WEIGHT
                               if getattr(options, 'inversion_mirror', None) is None else options.inversion_mirror),
                estimate_pose=bool(getattr(options, 'inversion_estimate_pose', False)),
                finetune_steps=getattr(options, 'inversion_finetune_steps', 0) or 0)
        checkpoint_metric('inversion', getattr(options, 'inversion_num', inversion_metric.DEFAULT_NUM), 'head',
                          run_inversion)

    result['protocol'] = protocol
    output_json = options.output_json or os.path.join(options.tmp_dir, f'{json_name}.json')
    try:
        _write_json(result, output_json)
    except OSError as error:
        # The metrics took long to compute: they are still returned (and printed by eval.py), with the reason.
        result['output_json_error'] = f"cannot write {output_json}: {error.strerror or error}"
    else:
        result['output_json'] = os.path.abspath(output_json)
    return result


def _load_all(image_set, image_size, verbose):
    dataset = image_set.dataset(image_size)
    return torch.stack([dataset[i] for i in tqdm(range(len(dataset)), desc=f'{image_set.role} images',
                                                   unit='img', disable=not verbose, file=sys.stderr)])


def swd_metric(fake_set, real_set, image_size, fake_origin, verbose):
    """ProGAN SWD x1e3 between the fake and real sets (offline: no downloaded weights)."""
    values = swd.swd(_load_all(fake_set, image_size, verbose), _load_all(real_set, image_size, verbose))
    protocol = {'definition': swd.PROTOCOL, 'num_fake': len(fake_set), 'num_real': len(real_set),
                'image_size': image_size, 'real_resize': fidelity.REAL_RESIZE, 'fake_resize': fidelity.FAKE_RESIZE,
                'truncation': fake_origin['truncation'], 'pose_sampling': fake_origin['pose_sampling'],
                'fake_source': fake_set.source, 'real_source': real_set.source}
    return {'mean': values['mean'], 'per_level': {str(k): v for k, v in values['per_level'].items()}}, protocol


def summary_lines(result):
    """Human-readable lines: every metric with its protocol."""
    lines = []
    if 'fid' in result:
        lines.append(f"FID: {result['fid']:.4f}")
    if 'kid' in result:
        lines.append(f"KID: {result['kid']:.6f} +- {result['kid_std']:.6f}   (x100: {result['kid_x100']:.4f} "
                     f"+- {result['kid_x100_std']:.4f})")
    if 'is_mean' in result:
        lines.append(f"IS: {result['is_mean']:.4f} +- {result['is_std']:.4f}")
    protocol = result['protocol']
    if 'image_size' in protocol:
        size = f"{protocol['image_size']}x{protocol['image_size']}"
        if protocol['num_real'] is not None:
            lines.append(f"protocol: {protocol['num_real']} real vs {protocol['num_fake']} fake images at {size}; "
                         f"reals: {protocol['resize_method']['real']}; fakes: {protocol['resize_method']['fake']}")
        else:
            lines.append(f"protocol: {protocol['num_fake']} fake images at {size}; fakes: "
                         f"{protocol['resize_method']['fake']}")
        truncation = protocol['truncation']
        lines.append(f"          fakes: psi {truncation if truncation is not None else 'unknown'}; poses: "
                     f"{protocol['pose_sampling']}")
        weights = protocol['feature_extractor']['weights']
        settings = [f"{protocol['feature_extractor']['name']} (weights: {weights['path'] or weights['source']})",
                    protocol['library']]
        if 'kid' in result:
            settings.append(f"KID subsets {protocol['kid']['subsets']} x {protocol['kid']['subset_size']}")
        if 'is_mean' in result:
            settings.append(f"IS splits {protocol['isc']['splits']}")
        settings.append(f"rng seed {protocol['rng_seed']}")
        lines.append('          ' + ', '.join(settings))
    if 'swd' in result:
        levels = ', '.join(f"{size}^2: {value:.2f}" for size, value in result['swd']['per_level'].items())
        swd_protocol = protocol['swd']
        lines.append(f"SWD x1e3: {result['swd']['mean']:.3f} (per level {levels})")
        lines.append(f"          {swd_protocol['num_real']} real vs {swd_protocol['num_fake']} fake images at "
                     f"{swd_protocol['image_size']}^2; {swd_protocol['definition']}")
    if 'consistency' in result:
        scores = result['consistency']
        cons = scores['protocol']
        lines.append(f"consistency: PSNR {scores['psnr_mean']:.2f} +- {scores['psnr_std']:.2f} dB, L1 "
                     f"{scores['l1_mean']:.5f} +- {scores['l1_std']:.5f} (co-visible {scores['covisible_mean']:.1%})")
        lines.append(f"          {cons['num_seeds']} seed(s), {cons['num_views']} views, yaw +-{cons['yaw_range']} "
                     f"rad, {cons['image_size']}x{cons['image_size']}, psi {cons['truncation']}, depth tolerance "
                     f"{cons['depth_tolerance']}")
    if 'cross_resolution' in result:
        lines.extend(cross_resolution_metric.summary_lines(result['cross_resolution']))
    if 'depth' in result:
        lines.extend(geometry_metric.summary_lines(result['depth']))
    if 'inversion' in result:
        lines.extend(inversion_metric.summary_lines(result['inversion']))
    if 'output_json' in result:
        lines.append(f"wrote {result['output_json']}")
    return lines
