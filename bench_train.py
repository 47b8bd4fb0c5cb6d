"""Training-step benchmark: seconds per iteration (one D step + one G step) and peak memory for a config.

    python bench_train.py --config GRAM64_FFHQ --iterations 3                # the config's batch (8)
    python bench_train.py --config GRAM64_FFHQ --iterations 2 --batch_size 2 # reduced batch (CPU)
    python bench_train.py --config FFHQ_default --patch_split 4             # strip-wise G backward
    python bench_train.py --config FFHQ_default --saved_only --training_path plain  # sizes the G graph only

Real images are random tensors and real poses come from the camera prior, so no dataset is needed; the
step is the config's training one (stage 1 `training.gan3d`, GRAM-HD stage 2 `training.sr_gan3d`; the
stage-2 GRAM part is random here, the cost is the same), AMP on CUDA, fp32 on CPU. The first iteration is
reported separately (allocator and cuDNN warm-up). Peak memory is CUDA max allocated on GPU, the
process's peak RSS on CPU (a high-water mark of the whole process, model building included), and the peak
above what was held before step 0.

`--saved_only` runs no step: it renders one image with gradients strip by strip and adds up the bytes
autograd saves for G's backward (each storage once per strip), the activation memory a full-image G
forward would hold, without the memory to hold it (FFHQ_default at 256^2 on a laptop).
"""
import argparse
import json
import sys

import configs
from generators.gram import RADIANCE_PATHS
from training.benchmark import benchmark, saved_activation_bytes
from utils.cli import positive_int


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='GRAM64_FFHQ', help=f"one of: {', '.join(configs.config_names())}")
    parser.add_argument('--iterations', type=positive_int, default=3, help='timed iterations after the first')
    parser.add_argument('--batch_size', type=positive_int, default=None, help="default: the config's per-GPU batch")
    parser.add_argument('--patch_split', type=positive_int, default=None)
    parser.add_argument('--training_path', default='fast', choices=('fast', 'low_memory', 'plain'),
                        help="G's training evaluation (see train.py --training_path)")
    parser.add_argument('--radiance_path', default='auto', choices=RADIANCE_PATHS,
                        help="how the culled radiance evaluation runs: auto = batched on CUDA, per_latent on CPU")
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    parser.add_argument('--saved_only', action='store_true',
                        help="no training step: size the activations one image's G forward keeps for backward")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        raise SystemExit("--iterations must be >= 1")
    if args.saved_only:
        result = saved_activation_bytes(args.config, args.training_path, device=args.device or 'cpu')
        print(f"{result['config']} at {result['img_size']}^2, {result['training_path']} path: "
              f"{result['saved_for_backward_mb']:.0f} MiB saved for G's backward per image (fp32)")
        return _write_json(result, args.json)
    result = benchmark(args.config, args.iterations, args.batch_size, args.patch_split, args.device,
                       training_path=args.training_path, radiance_path=args.radiance_path)
    print(f"{result['config']} on {result['device']} ({result['training_path']} path, radiance "
          f"{result['radiance_path']}, amp {result['amp']}, "
          f"{result['threads']} threads): batch "
          f"{result['batch_size']} (split {result['batch_split']}, patch_split {result['patch_split']}), "
          f"{result['seconds_per_iteration']:.3f} s/iteration (median of {result['iterations']}; first "
          f"{result['first_iteration_s']:.3f} s), {result['images_per_s']:.2f} images/s, peak memory "
          f"{result['peak_memory_mb']:.0f} MiB ({result['peak_memory_kind']}; "
          f"{result['peak_above_start_mb']:.0f} MiB above the {result['start_memory_mb']:.0f} MiB before step 0)")
    return _write_json(result, args.json)


def _write_json(result, path):
    if path:
        with open(path, 'w', encoding='utf-8') as stream:
            json.dump(result, stream, indent=2)
    return result


if __name__ == '__main__':
    main()
    sys.exit(0)
