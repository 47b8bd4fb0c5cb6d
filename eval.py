"""FID / KID / IS (torch-fidelity) and 3D consistency, with GRAM-HD's eval.py flags and a stated protocol.

    # GRAM-HD style: a folder of rendered fakes against a folder of real images
    python inference.py --ckpt ckpts/ffhq256.pt --config GRAMHD256_FFHQ --type rand --seeds 0-19999 \\
        --truncation 1.0 --output_dir fakes/ffhq256
    python eval.py --real_images_dir data/FFHQ --fake_images_dir fakes/ffhq256 --num_real 20000

    # or render the fakes straight from a checkpoint (same rule as inference.py --type rand)
    python eval.py --ckpt ckpts/ffhq256.pt --config GRAMHD256_FFHQ --real_images_dir data/FFHQ \\
        --num_fake 20000 --num_real 20000 --metrics fid,kid,is,consistency

Protocol (recorded in the JSON next to every number):
- reals: all png/jpg/jpeg under --real_images_dir (recursive) or --num_real of them (seeded subset),
  RGB, centre crop, PIL LANCZOS resize to --image_size (default: the model resolution);
- fakes: *.png of --fake_images_dir (never resized: they must be image_size x image_size), or --num_fake
  (default 10000) images rendered from --ckpt with seeds 0..N-1, poses from the config prior, view
  dependence on, psi = --truncation (1.0);
- torch-fidelity's inception-v3-compat features (TF-2015 Inception port, bilinear resize to 299 inside);
  FID on the 2048-d pool features; KID (torch-fidelity) with 100 subsets of 1000 (fewer images: the subset
  shrinks, with a warning), reported raw and x100; IS (torch-fidelity) with 10 splits; rng seed 2020.
Feature caches are keyed by folder content and protocol; --use_*_images_cache reuses a matching cache,
otherwise it is recomputed. Results are printed and written to --output_json (default: in --tmp_dir).
"""
import sys

from evaluation import cli


def build_parser():
    return cli.build_eval_parser(__doc__)


def run(argv=None, **overrides):
    """eval.py's evaluation of argv (see `evaluation.cli.run`); returns the result dict."""
    return cli.run(argv, description=__doc__, **overrides)


def main(argv=None):
    run(argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
