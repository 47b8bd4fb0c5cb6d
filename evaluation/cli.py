"""The command line of the metrics (`eval.py`; `fid_evaluation.py` runs it with GRAM's flags): flags,
the checks made before any work, and the printed summary. The metrics themselves are `evaluation.runner`.
"""
import argparse
import os

from utils.checkpoints import CheckpointError
from utils.cli import (HelpFormatter, check_can_create, default_device, device, nonnegative_float, nonnegative_int,
                       output_folder, positive_float, positive_int, seed, truncation)

from . import consistency, geometry
from .fidelity import EvaluationError
from .runner import evaluate, summary_lines


def build_eval_parser(description=None):
    """The flags of `eval.py` (fid_evaluation.py runs the same evaluation with a list of them)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    group = parser.add_argument_group('GRAM-HD eval.py flags')
    group.add_argument('--real_images_dir', default=None, help='folder of real images (searched recursively)')
    group.add_argument('--fake_images_dir', default=None, help='folder of generated *.png at the model resolution')
    group.add_argument('--tmp_dir', default='metrics/cache',
                       help='feature caches, rendered fakes and the default JSON output')
    group.add_argument('--image_size', type=positive_int, default=None,
                       help='evaluation resolution; default: the model (or fake image) resolution')
    group.add_argument('--num_fake', '--num_samples', dest='num_fake', type=positive_int, default=None,
                       help='fakes to use: default all in --fake_images_dir, or 10000 rendered from --ckpt')
    group.add_argument('--real_images_cache_name', default=None,
                       help='prefix of the real feature cache (default: from the folder path)')
    group.add_argument('--fake_images_cache_name', default=None,
                       help='prefix of the fake feature cache (default: from the folder or checkpoint path)')
    group.add_argument('--use_real_images_cache', action='store_true',
                       help='reuse the real features if a cache for the same content and protocol exists')
    group.add_argument('--use_fake_images_cache', action='store_true',
                       help='reuse the fake features if a cache for the same content and protocol exists (a complete '
                            'set of fakes rendered from the same --ckpt and settings is always reused)')

    group = parser.add_argument_group('fakes from a checkpoint')
    group.add_argument('--ckpt', default=None, help='generator checkpoint (ours, or official with --config)')
    group.add_argument('--config', default=None, help='config name, needed for official checkpoints')
    group.add_argument('--truncation', type=truncation, default=1.0,
                       help='psi in [0, 1] for fakes and consistency (1.0 = off)')

    group = parser.add_argument_group('metrics and engine')
    group.add_argument('--num_real', type=positive_int, default=None, help='real images to use (default: all)')
    group.add_argument('--metrics', default='fid,kid,is', help="comma list of fid, kid, is, swd (offline, no Inception weights), consistency, "
                            "cross_resolution (GRAM-HD: HR down-sampled vs LR, with the consistency flags), "
                            "depth (geometry against the procedural heads' true depth), inversion (held-out heads "
                            "put into the model and scored at unseen views)")
    group.add_argument('--feature_extractor_weights', default=None,
                       help='local inception-v3-compat weights (.pth) for machines without internet')
    group.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    group.add_argument('--batch_size', type=positive_int, default=64, help='feature-extractor batch size')
    group.add_argument('--output_json', default=None, help='result file (default: <tmp_dir>/<fake cache>.json)')
    group.add_argument('--num_workers', type=nonnegative_int, default=min(4, os.cpu_count() or 1),
                       help='image-loading worker processes (0: load in the main process)')
    group.add_argument('--quiet', action='store_true', help='no progress output on stderr')

    group = parser.add_argument_group('3D consistency (--metrics consistency)')
    group.add_argument('--consistency_seeds', default='0-15', help="seeds, e.g. '0-15' or '0,3,7'")
    group.add_argument('--consistency_views', type=positive_int, default=consistency.DEFAULT_NUM_VIEWS,
                       help='views in the yaw sweep')
    group.add_argument('--consistency_yaw_range', type=positive_float, default=consistency.DEFAULT_YAW_RANGE,
                       help='the sweep covers prior yaw mean +- this (radians)')
    group.add_argument('--depth_tolerance', type=positive_float, default=consistency.DEFAULT_DEPTH_TOLERANCE,
                       help='relative depth difference above which a pixel counts as occluded')
    group.add_argument('--consistency_size', type=positive_int, default=None,
                       help='render size of the sweep; default: the model resolution (GRAM-HD: its HR size). '
                            'E.g. a stage-1 GRAM at its GRAM-HD model\'s HR size, to compare the two')
    group = parser.add_argument_group('geometry against the procedural heads (--metrics depth)')
    group.add_argument('--depth_num', type=positive_int, default=geometry.DEFAULT_NUM,
                       help='latents (seeds 0..N-1) and true heads compared per view')
    group.add_argument('--depth_size', type=positive_int, default=None,
                       help='depth map resolution; default: the model resolution')
    group.add_argument('--depth_truth_seed', type=seed, default=geometry.DEFAULT_TRUTH_SEED,
                       help='procedural dataset seed of the true heads (held out: the README data uses seed 0)')
    group = parser.add_argument_group('inversion of held-out procedural heads (--metrics inversion; GRAM)')
    group.add_argument('--inversion_num', type=positive_int, default=20,
                       help='held-out heads (of --depth_truth_seed), each inverted from a frontal and a side view')
    group.add_argument('--inversion_steps', type=positive_int, default=None,
                       help='steps of each fit (default: invert.py\'s)')
    group.add_argument('--inversion_ceiling_steps', type=positive_int, default=None,
                       help='steps of the ceiling fit to all 21 views (default: --inversion_steps)')
    group.add_argument('--inversion_mirror', type=nonnegative_float, default=None,
                       help="weight of the mirrored input view in each fit (default: invert.py's --mirror_weight)")
    group.add_argument('--inversion_finetune_steps', type=nonnegative_int, default=0,
                       help='also fine-tune the radiance network this many steps after each fit (invert.py '
                            '--finetune_steps) and score that')
    group.add_argument('--inversion_estimate_pose', action='store_true',
                       help='also fit each input from the camera invert.py estimates (no --pose) and score the pose')
    return parser


def run(argv=None, description=None, **overrides):
    """Parse argv (eval.py's flags), apply programmatic overrides (fid_evaluation.py), evaluate, print the
    summary; returns the result dict. Unusable input ends the program with one line."""
    options = build_eval_parser(description).parse_args(argv)
    for key, value in overrides.items():
        setattr(options, key, value)
    # A result file that could never be written is found before hours of rendering and feature extraction.
    if options.output_json is not None:
        check_can_create(options.output_json, '--output_json')
    check_can_create(options.tmp_dir, '--tmp_dir', folder=True)
    try:
        with output_folder(options.tmp_dir, '--tmp_dir'):  # removed again when a failed run wrote nothing
            result = evaluate(options)
    except (EvaluationError, CheckpointError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from error
    print('\n'.join(summary_lines(result)))
    if 'output_json_error' in result:
        raise SystemExit(f"error: the metrics above were not saved: {result['output_json_error']}")
    return result
