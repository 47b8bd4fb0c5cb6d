"""Meshes of GRAM's 3D shapes: the alpha surface of one latent and GRAM's own manifolds, written as files
(`extract_mesh.py` is the command line; `invert.py` and `viewer.py` mesh through `extract_seed` too).
The geometry (volumes, marching cubes, vertex colours) is `generators.surfaces`; this is the file layer.
"""
import argparse
import os

import numpy as np

from generators import surfaces
from utils.cli import HelpFormatter, default_device, device, finite_float, positive_int, seed_list, truncation
from utils.images import save_png
from utils.meshes import MESH_FORMATS, colors_to_uint8, make_mesh, render_mesh_preview, save_mesh, save_mrc
from utils.seeds import latent_for_seed

DEFAULT_RESOLUTION = 128  # about 20 s per seed for the shipped model on one CPU core; use 256+ on a GPU
# Bytes per grid sample held at once: the float32 volume, marching cubes' working copies and the sample
# coordinates of a slab; and per point of a network call (--chunk): the widest layers' activations.
VOLUME_BYTES_PER_SAMPLE = 16
CHUNK_BYTES_PER_POINT = 8 * 1024


def build_mesh_parser(description=None):
    """The flags of `extract_mesh.py` (and, parsed from a list, the settings other scripts mesh a latent with)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument('--ckpt', '--generator_file', dest='ckpt', default=None,
                        help='checkpoint (default: the shipped model ckpts/synthetic_heads.pt)')
    parser.add_argument('--config', default=None, help='config name (needed for official checkpoints)')
    parser.add_argument('--seeds', type=seed_list, default='0-3', help="e.g. 0-3 or 0,5,7 (inclusive ranges)")
    parser.add_argument('--latent', default=None,
                        help="a latent file of invert.py, in place of the seeds (mesh_<file name>.ply ...)")
    parser.add_argument('--output_dir', default='meshes')
    parser.add_argument('--resolution', type=positive_int, default=DEFAULT_RESOLUTION,
                        help=f'grid samples per axis (default {DEFAULT_RESOLUTION}; 256+ on a GPU)')
    parser.add_argument('--level', type=finite_float, default=None,
                        help=f'alpha iso-level in (0, 1); default {surfaces.DEFAULT_ALPHA_LEVEL} (a sample that stops '
                             'half the light), or half the largest alpha in the cube when alpha never reaches it')
    parser.add_argument('--half_extent', type=finite_float, default=None,
                        help='half side h of the cube [-h, h]^3 in world units (default: the rays\' depth band, '
                             '0.12 for faces/cats, 0.3 for CARLA)')
    parser.add_argument('--truncation', type=truncation, default=0.7,
                        help='psi in [0, 1], as inference.py (1.0 = none)')
    parser.add_argument('--formats', default='ply', help=f"comma list of {', '.join(MESH_FORMATS)}; ply always")
    parser.add_argument('--color_view', default='normal', choices=('normal', 'frontal'),
                        help='colour each vertex as seen along its normal (default) or from the frontal camera')
    parser.add_argument('--manifolds', action='store_true', help="also write GRAM's manifolds (manifolds_{seed}.ply)")
    parser.add_argument('--mrc', action='store_true', help='also write the alpha volume (volume_{seed}.mrc)')
    parser.add_argument('--preview', action='store_true', help='also write mesh_{seed}.png (matplotlib)')
    parser.add_argument('--chunk', type=positive_int, default=surfaces.DEFAULT_CHUNK, help='points per network call')
    parser.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    return parser


def check_args(args):
    """Bad flags end the program with a one-line reason."""
    if args.resolution < 8 or args.resolution > 2048:
        raise SystemExit(f"--resolution must be between 8 and 2048, got {args.resolution}")
    if args.level is not None and not 0 < args.level < 1:
        raise SystemExit(f"--level is an alpha in (0, 1), got {args.level}")
    if args.half_extent is not None and not 0 < args.half_extent <= 1:
        raise SystemExit(f"--half_extent must be in (0, 1] (world units, camera radius 1), got {args.half_extent}")
    formats = [name.strip().lower().lstrip('.') for name in args.formats.split(',') if name.strip()]
    for name in formats:
        if name not in MESH_FORMATS:
            raise SystemExit(f"--formats: unknown format {name!r}; expected a comma list of {', '.join(MESH_FORMATS)}")
    args.formats = ['ply'] + [name for name in formats if name != 'ply']
    return args


def manifold_surfaces(generator, resolution, half_extent, chunk, progress):
    """GRAM's manifolds seen by the camera prior: (vertices, faces, normals, level index per vertex); the
    field is z-independent, so this runs once for all seeds."""
    device = next(generator.parameters()).device
    field = surfaces.evaluate_volume(lambda points: surfaces.manifold_field(generator, points, chunk), resolution,
                                     half_extent, device, progress=progress)
    parts, offset = [], 0
    for index, level in enumerate(generator.levels('cpu').tolist()):
        vertices, faces, normals = surfaces.extract_surface(field, level, half_extent, inside='below', closed=False)
        seen = surfaces.seen_by_prior(generator, vertices, normals)
        vertices, faces, normals = surfaces.keep_vertices(vertices, faces, normals, seen)
        parts.append((vertices, faces + offset, normals, np.full(len(vertices), index)))
        offset += len(vertices)
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def extract_seed(generator, seed, args, half_extent, progress, manifolds=None, styles=None):
    """Write the files of one seed (or of the FiLM parameters `styles` of an inverted photo, named `seed`);
    returns (a one-line summary, whether the alpha mesh was written)."""
    device = next(generator.parameters()).device
    if styles is not None:
        field = surfaces.LatentField(generator, styles[0].to(device), styles[1].to(device), args.chunk)  # FiLM
    else:
        z = latent_for_seed(seed, generator.z_dim).to(device)
        field = surfaces.LatentField.from_latent(generator, z, args.truncation, args.chunk)
    volume = surfaces.evaluate_volume(field.alpha, args.resolution, half_extent, device, progress=progress)
    step = 2 * half_extent / (args.resolution - 1)
    if args.mrc:
        save_mrc(volume, os.path.join(args.output_dir, f'volume_{seed}.mrc'), step, (-half_extent,) * 3)
    summary = f"seed {seed}: alpha in [{volume.min():.3g}, {volume.max():.3g}], "
    level = args.level
    if level is None:
        level = surfaces.DEFAULT_ALPHA_LEVEL
        if float(volume.max()) <= level:
            # a nearly transparent model (or one early in training) still gets a surface to look at
            level = float(volume.max()) / 2
            summary += f"level {level:.3g} (half the largest alpha: it never reaches {surfaces.DEFAULT_ALPHA_LEVEL}), "
    vertices, faces, normals = surfaces.extract_surface(volume, level, half_extent)
    if len(faces):
        rgb, _ = surfaces.vertex_colors(field, vertices, normals, args.color_view)
        mesh = make_mesh(vertices, faces, colors_to_uint8(rgb), normals)
        for extension in args.formats:
            save_mesh(mesh, os.path.join(args.output_dir, f'mesh_{seed}.{extension}'))
        if args.preview:
            save_png(render_mesh_preview(vertices, faces, colors_to_uint8(rgb), half_extent),
                     os.path.join(args.output_dir, f'mesh_{seed}.png'))
        summary += f"mesh: {len(vertices)} vertices, {len(faces)} faces, watertight {mesh.is_watertight}"
    elif float(volume.max()) <= 0:
        summary += "no mesh written: alpha is 0 everywhere in the cube (the model is fully transparent there)"
    else:
        summary += (f"no mesh written: alpha peaks at {float(volume.max()):.3g} in the cube, below --level {level:g}; "
                    f"pass a --level below {float(volume.max()):.3g}")
    if manifolds is not None:
        m_vertices, m_faces, m_normals, _ = manifolds
        m_rgb, m_alpha = surfaces.vertex_colors(field, m_vertices, m_normals, args.color_view)
        save_mesh(make_mesh(m_vertices, m_faces, colors_to_uint8(m_rgb, m_alpha), m_normals),
                  os.path.join(args.output_dir, f'manifolds_{seed}.ply'))
        if args.preview:  # composited by alpha: a model that paints on the background plane shows ~nothing
            save_png(render_mesh_preview(m_vertices, m_faces, colors_to_uint8(m_rgb, m_alpha), half_extent,
                                         composite_alpha=True),
                     os.path.join(args.output_dir, f'manifolds_{seed}.png'))
        summary += f"; manifolds: {len(m_vertices)} vertices, alpha <= {float(m_alpha.max(initial=0)):.3g}"
    return summary, bool(len(faces))
