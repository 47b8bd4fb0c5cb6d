"""Train GRAM (and GRAM-HD stage 1) from a folder of posed images.

    python train.py --config FFHQ_default --data_dir datasets/ffhq --output_dir results/ffhq
    python train.py --config GRAM64_FFHQ --data_dir data/FFHQ --output_dir results/gram64 --total_step 100000
    CUDA_VISIBLE_DEVICES=2,3 python train.py ...            # one process per visible GPU
    torchrun --nnodes 2 --nproc_per_node 8 ... train.py ... # several machines
    python train.py --config TINY_GRAM --data_dir d --output_dir o --cpu_processes 2   # CPU, gloo

Re-running the same command continues from the newest intact checkpoint in --output_dir; --load_dir
resumes from another folder (ours or an official GRAM / GRAM-HD training folder). Ctrl-C or SIGTERM stops
at the end of the current step with a checkpoint (exit code 130 / 143).
"""
import argparse
import os
import sys

import configs
from datasets import DatasetError
from training.control import OutputDirBusy, TrainingStopped
from training.launch import launch
from training.losses import TrainingDiverged
from utils.atomic import DiskWriteError
from utils.checkpoints import CheckpointError
from utils.cli import (HelpFormatter, check_can_create, error_line, nonnegative_int, port, positive_int, seed,
                       writable_dir)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--config', default='FFHQ_default', help=f"one of: {', '.join(configs.config_names())}")
    parser.add_argument('--data_dir', required=True, help='folder of images with a poses/ subfolder')
    parser.add_argument('--output_dir', default=None, help='default: results/<config>')
    parser.add_argument('--load_dir', default=None, help='resume from this folder (ours or official)')
    parser.add_argument('--set_step', type=nonnegative_int, default=None,
                        help='resume from this step (default: newest)')
    parser.add_argument('--total_step', type=positive_int, default=None,
                        help='stop after this many steps (default: 150k FFHQ_default, 80k CATS_default, '
                             '70k CARLA_default, else 100k)')
    parser.add_argument('--sample_interval', type=positive_int, default=500,
                        help='steps between snapshots + latest files')
    parser.add_argument('--save_interval', type=positive_int, default=5000,
                        help='steps between step%%06d_*.pth checkpoints')
    parser.add_argument('--port', type=port, default=None,
                        help='MASTER_PORT for single-machine multi-process runs (default: any free port)')
    parser.add_argument('--patch_split', type=positive_int, default=None,
                        help='render + back-propagate G in this many strips (less memory, same gradient)')
    parser.add_argument('--training_path', default='fast', choices=('fast', 'low_memory', 'plain'),
                        help="G's training evaluation: 'fast' (default; culled points, fused FiLM-sine autograd), "
                             "'low_memory' (fast, recomputing each FiLM matmul in the backward: about a third "
                             "less activation memory, slower), 'plain' (stock autograd on every intersection, "
                             "as the official code; for comparison)")
    parser.add_argument('--seed', type=seed, default=None, help='default 0, or the seed of the resumed run')
    parser.add_argument('--num_workers', type=nonnegative_int, default=4,
                        help='data loader processes per training process (0: load in the training process)')
    parser.add_argument('--cpu_processes', type=positive_int, default=1,
                        help='without CUDA: processes to train with (gloo)')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY.PATH=VALUE',
                        help='change one config value, e.g. --set optimizer.sigma_lr=1.8e-3 (repeatable; values '
                             'are Python literals; the changed config is saved in every checkpoint: pass the '
                             'same --set flags when resuming)')
    parser.add_argument('--gram_model_file', default=None,
                        help='GRAM-HD stage 2: the stage-1 stepXXXXXX_generator.pth (its sibling EMA is used); '
                             'overrides generator.kwargs.gram_model_file of the config')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        config = configs.get_config(args.config)
    except KeyError as error:
        raise SystemExit(f"--config: {error.args[0]}")
    try:
        configs.apply_overrides(config, args.overrides)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    if args.output_dir is None:
        args.output_dir = os.path.join('results', args.config)
    # A file, a read-only folder or a full disk is one line now, not a traceback after the data is listed.
    check_can_create(args.output_dir, '--output_dir', folder=True)
    if os.path.isdir(args.output_dir):
        writable_dir(args.output_dir)  # proves a byte can be written (a full disk), creating nothing
    if args.gram_model_file is not None:
        if 'gram_model_file' not in config['generator']['kwargs']:
            raise SystemExit(f"--gram_model_file is for GRAM-HD (stage 2) configs; {args.config} is a GRAM config")
        config['generator']['kwargs']['gram_model_file'] = args.gram_model_file
    try:
        launch(config, vars(args), config_name=args.config)
    except TrainingStopped as stopped:
        if stopped.rank == 0:  # under torchrun every rank gets here
            print(stopped, file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        print("interrupted; nothing was saved since the last checkpoint", file=sys.stderr)
        return 130
    except (DatasetError, CheckpointError, TrainingDiverged, OutputDirBusy, DiskWriteError, FileNotFoundError,
            ValueError) as error:
        # A data-loader worker's error arrives wrapped in the worker's traceback: show its one line.
        raise SystemExit(f"error: {error_line(error)}")


if __name__ == '__main__':
    sys.exit(main())
