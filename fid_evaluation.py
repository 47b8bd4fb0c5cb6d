"""GRAM's fid_evaluation.py flags on the eval.py engine (torch-fidelity FID / KID / IS).

    python fid_evaluation.py --generator_file pretrained_models/FFHQ_default/generator.pth \\
        --config FFHQ_default --real_images_dir data/FFHQ --num_real_images 20000 --num_images 20000

As GRAM's script: fakes are rendered afresh into --output_dir as {index:05d}.png (poses from the training
prior, psi 1.0, view dependence on, the EMA weights when the sibling ema.pth exists), and the metrics
are printed and written to <output_dir>/metrics.txt (plus metrics.json with the protocol).
Differences, on purpose: seeds 0..N-1 make the fakes reproducible (GRAM drew unseeded CUDA latents); real
images come from --real_images_dir, centre-cropped and LANCZOS-resized (GRAM ran its training dataset
loader, random horizontal flips included, and reused an existing EvalImages folder without checking it);
real features are cached by folder content, so a changed folder is never reused stale; only the files
rendered by this run are evaluated, even if --output_dir holds older ones.
GRAM's defaults (8000 real, 1000 fake) are kept; its README numbers are FID-20k / KID-20k (x100).
"""
import argparse
import os
import sys

from evaluation import cli as eval_cli
from evaluation.runner import summary_lines
from utils.cli import HelpFormatter, default_device, device, nonnegative_int, output_folder, positive_int


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--generator_file', default='./pretrained_models/FFHQ_default/generator.pth',
                        help='checkpoint (the sibling ema.pth is used when present)')
    parser.add_argument('--output_dir', default='./experiments/fid_evaluation/FFHQ_default',
                        help='rendered fakes, metrics.txt and metrics.json')
    parser.add_argument('--config', default=None,
                        help="config name; official files default to FFHQ_default (the GRAM script's default), "
                             "checkpoints of this project carry their own")
    parser.add_argument('--num_real_images', type=positive_int, default=8000, help='real images to use')
    parser.add_argument('--num_images', type=positive_int, default=1000, help='fake images to render')
    parser.add_argument('--no_watermark', action='store_true',
                        help='accepted for compatibility: evaluation fakes are never watermarked')
    parser.add_argument('--real_images_dir', default=None,
                        help='folder of real images (GRAM read its dataset; required here)')
    parser.add_argument('--tmp_dir', default='metrics/cache', help='feature caches')
    parser.add_argument('--feature_extractor_weights', default=None,
                        help='local inception-v3-compat weights (.pth) for machines without internet')
    parser.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    parser.add_argument('--batch_size', type=positive_int, default=64, help='feature-extractor batch size')
    parser.add_argument('--num_workers', type=nonnegative_int, default=None,
                        help="image-loading worker processes (default: eval.py's)")
    parser.add_argument('--quiet', action='store_true', help='no progress output on stderr')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.real_images_dir is None:
        raise SystemExit("error: --real_images_dir is required (GRAM read real images from its dataset loader; "
                         "point this at the preprocessed training images)")
    eval_argv = ['--ckpt', args.generator_file, '--real_images_dir', args.real_images_dir,
                 '--num_real', str(args.num_real_images), '--num_fake', str(args.num_images),
                 '--metrics', 'fid,kid,is', '--truncation', '1.0', '--tmp_dir', args.tmp_dir,
                 '--device', args.device, '--batch_size', str(args.batch_size),
                 '--output_json', os.path.join(args.output_dir, 'metrics.json'),
                 # GRAM reused its prepared real images; features keyed by content make that safe here.
                 '--use_real_images_cache']
    if args.feature_extractor_weights is not None:
        eval_argv += ['--feature_extractor_weights', args.feature_extractor_weights]
    if args.num_workers is not None:
        eval_argv += ['--num_workers', str(args.num_workers)]
    if args.config is not None:
        eval_argv += ['--config', args.config]
    if args.quiet:
        eval_argv.append('--quiet')
    with output_folder(args.output_dir):  # a run that fails before rendering leaves no empty folder
        result = eval_cli.run(eval_argv, fake_render_dir=args.output_dir, num_real_flag='--num_real_images',
                              num_fake_flag='--num_images', default_config='FFHQ_default')
        # GRAM wrote the printed torch-fidelity dict to metrics.txt; ours names the protocol too.
        metrics = {key: result[key] for key in ('fid', 'kid', 'kid_x100', 'is_mean', 'is_std') if key in result}
        with open(os.path.join(args.output_dir, 'metrics.txt'), 'w') as stream:
            stream.write(repr(metrics) + '\n')
            stream.write('\n'.join(summary_lines(result)) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
