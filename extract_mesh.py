"""Coloured meshes of GRAM's 3D shapes, one set of files per seed.

    python extract_mesh.py                                   # the shipped model, seeds 0-3, 128^3
    python extract_mesh.py --ckpt pretrained/FFHQ_default/generator.pth --config FFHQ_default --seeds 0 \
        --resolution 256 --formats ply,obj,glb --manifolds --mrc

Per seed, in --output_dir:
    mesh_{seed}.ply       the alpha surface: marching cubes (scikit-image) of GRAM's per-sample opacity
                          alpha = 1 - exp(-delta_alpha * sigma) of the radiance network on an R^3 grid of
                          the cube [-h, h]^3 (h = the rays' depth band around the origin, 0.12 for faces),
                          at alpha = --level; closed (the cube's faces cap it); vertex colours = the radiance
                          network's colour at each vertex seen along the vertex normal (--color_view)
    mesh_{seed}.obj/.glb  the same mesh (--formats)
    volume_{seed}.mrc     the alpha volume (--mrc)
    manifolds_{seed}.ply  GRAM's own surfaces (--manifolds): every iso-level of the z-independent manifold
                          field, cut to the part the camera prior sees, RGBA = colour and alpha there
    mesh_{seed}.png       pictures from the frontal side (--preview; needs matplotlib): the alpha mesh
    manifolds_{seed}.png  shaded; the manifolds unshaded, composited by their alpha as GRAM composites them
World units: the camera sits on the unit sphere; +y up, the frontal camera on +z.
GRAM-HD checkpoints: the shapes and colours are those of their GRAM part (the 64^2 radiance field).
"""
import os
import sys
import time

from tqdm import tqdm

from generators import surfaces
from rendering.inversion import latent_or_exit
from rendering.meshing import (CHUNK_BYTES_PER_POINT, VOLUME_BYTES_PER_SAMPLE, build_mesh_parser, check_args,
                               extract_seed, manifold_surfaces)
from rendering.view_jobs import DEMO_CHECKPOINT, load_or_exit, seeds_or_exit
from utils.cli import output_folder
from utils.resources import require_memory


def build_parser():
    return build_mesh_parser(__doc__)


def main(argv=None):
    args = check_args(build_parser().parse_args(argv))
    seeds = seeds_or_exit(args.seeds)
    if args.ckpt is None:
        if not os.path.isfile(DEMO_CHECKPOINT):
            raise SystemExit(f"no --ckpt given and the shipped model {DEMO_CHECKPOINT} is missing")
        args.ckpt = DEMO_CHECKPOINT
    volumes = 2 if args.manifolds else 1  # the manifold field's volume is kept while each seed's is built
    require_memory(volumes * args.resolution ** 3 * VOLUME_BYTES_PER_SAMPLE + args.chunk * CHUNK_BYTES_PER_POINT,
                   f"--resolution {args.resolution} ({volumes} x {args.resolution}^3 grid samples) with --chunk "
                   f"{args.chunk}", args.device, advice='use a smaller --resolution or --chunk')
    with output_folder(args.output_dir):  # checked before the model loads; removed again if nothing is written
        generator = load_or_exit(args.ckpt, args.config, args.device)
        latents = {}
        if args.latent is not None:
            seeds, latents = latent_or_exit(generator, args.latent, args.ckpt)
        half_extent = args.half_extent or surfaces.default_half_extent(generator)
        start = time.time()
        total = args.resolution * (len(seeds) + (1 if args.manifolds else 0))
        try:
            with tqdm(total=total, desc='volume slabs', unit='slab') as progress:
                manifolds = None
                if args.manifolds:
                    manifolds = manifold_surfaces(generator, args.resolution, half_extent, args.chunk, progress)
                results = [extract_seed(generator, seed, args, half_extent, progress, manifolds, latents.get(seed))
                           for seed in seeds]
        except OSError as error:  # a disk that fills up or a folder removed while writing
            raise SystemExit(f"error: cannot write to --output_dir {args.output_dir}: {error.strerror or error} "
                             f"({error.filename or 'while saving'})")
        for summary, _ in results:
            print(summary)
        missing = [seed for seed, (_, written) in zip(seeds, results) if not written]
        print(f"wrote meshes of {len(seeds) - len(missing)} of {len(seeds)} seed(s) to {args.output_dir} in "
              f"{time.time() - start:.1f} s ({args.resolution}^3 grid over [-{half_extent:g}, {half_extent:g}]^3)")
        if missing:  # exits non-zero: a script or a batch job must not take "no mesh" for a mesh
            reason = next(summary for summary, written in results if not written).split('no mesh written: ')[-1]
            raise SystemExit(f"error: no mesh for seed(s) {', '.join(map(str, missing))}: {reason}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
