"""Writing meshes (.ply / .obj / .glb via trimesh) and volumes (.mrc via mrcfile), atomically."""
import os

import numpy as np

from .atomic import atomic_open, atomic_path

MESH_FORMATS = ('ply', 'obj', 'glb')


def colors_to_uint8(rgb, alpha=None):
    """rgb [V, 3] in [0, 1] (and alpha [V, 1] in [0, 1], else opaque) -> uint8 RGBA [V, 4]."""
    rgb = np.clip(np.nan_to_num(np.asarray(rgb, np.float64)), 0, 1)
    alpha = np.ones((rgb.shape[0], 1)) if alpha is None else np.clip(np.asarray(alpha, np.float64), 0, 1)
    return np.round(np.concatenate([rgb, alpha.reshape(-1, 1)], axis=1) * 255).astype(np.uint8)


def make_mesh(vertices, faces, rgba=None, normals=None):
    """A trimesh.Trimesh with vertex colours (uint8 RGBA [V, 4]) and normals, vertices kept as given."""
    import trimesh

    if len(vertices) == 0:
        raise ValueError("make_mesh: the mesh is empty (no surface at this level)")
    return trimesh.Trimesh(vertices=np.asarray(vertices), faces=np.asarray(faces), vertex_colors=rgba,
                           vertex_normals=normals, process=False)


def save_mesh(mesh, path):
    """Write a trimesh mesh; the format comes from the extension: .ply (binary, vertex colours with alpha),
    .obj (vertex colours as `v x y z r g b`), .glb (binary glTF, COLOR_0)."""
    extension = os.path.splitext(path)[1].lower().lstrip('.')
    if extension not in MESH_FORMATS:
        raise ValueError(f"unknown mesh format {extension!r} of {path}; expected one of {', '.join(MESH_FORMATS)}")
    if extension == 'ply':
        data = mesh.export(file_type='ply', encoding='binary')
    elif extension == 'obj':
        data = mesh.export(file_type='obj', include_color=True, include_normals=mesh.vertex_normals is not None)
    else:
        data = mesh.export(file_type='glb')
    with atomic_open(path, 'wb') as stream:
        stream.write(data.encode() if isinstance(data, str) else data)


def save_mrc(volume, path, voxel_size, origin):
    """Write a volume [X, Y, Z] (indexed x, y, z) as .mrc with its voxel size and world origin (in the
    file's units; mrcfile stores the data z-major, so it is transposed to [Z, Y, X])."""
    import mrcfile

    with atomic_path(path) as temp:
        with mrcfile.new(temp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(np.transpose(np.asarray(volume, np.float32), (2, 1, 0))))
            mrc.voxel_size = voxel_size
            mrc.header.origin = tuple(float(value) for value in origin)


def render_mesh_preview(vertices, faces, rgba, half_extent, size=512, yaw=0.0, composite_alpha=False):
    """A uint8 HWC picture of a vertex-coloured mesh seen orthographically from the +z side (the frontal
    camera), turned by `yaw` radians about +y, faces facing the viewer drawn back to front over grey
    (matplotlib, Agg). An empty mesh gives a grey image.

    Default: opaque faces, Lambert-shaded with the light at the viewer (a surface's shape). With
    `composite_alpha` each face keeps its vertices' mean alpha (`rgba[:, 3]`) and is not shaded: drawn back
    to front, the faces are alpha-composited as GRAM composites its manifolds' samples along a ray, so
    GRAM's manifolds show what they carry (without the background plane)."""
    rgba = np.asarray(rgba, np.float64)
    if composite_alpha and (rgba.ndim != 2 or rgba.shape[1] != 4):
        raise ValueError(f"composite_alpha needs RGBA vertex colours [V, 4], got an array of shape {rgba.shape}")
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(-half_extent, half_extent)
    axes.set_ylim(-half_extent, half_extent)
    axes.set_facecolor((0.5, 0.5, 0.5))
    axes.axis('off')
    figure.patch.set_facecolor((0.5, 0.5, 0.5))
    if len(faces):
        cos, sin = np.cos(yaw), np.sin(yaw)
        rotation = np.array([[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]])
        points = np.asarray(vertices, np.float64) @ rotation.T
        triangles = points[np.asarray(faces)]
        normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        facing = normals[:, 2] > 0  # back faces of a closed mesh are hidden anyway
        order = np.argsort(triangles[facing, :, 2].mean(axis=1))
        colors = rgba[np.asarray(faces)][facing][order].mean(axis=1) / 255
        if not composite_alpha:
            shade = (0.25 + 0.75 * normals[facing, 2])[order, None]
            colors = np.clip(colors[:, :3] * shade, 0, 1)
        axes.add_collection(PolyCollection(triangles[facing][order][:, :, :2], facecolors=colors,
                                           edgecolors='none', antialiased=False))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
