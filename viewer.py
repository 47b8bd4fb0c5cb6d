"""A browser viewer for generated heads: orbit a GRAM / GRAM-HD latent, switch seeds and render modes, show
its mesh, and write the current view, an orbit video or the mesh files. Serves a page with viser, so it
works on a headless GPU server through an SSH tunnel.

    python viewer.py                                         # the shipped model, http://localhost:8080
    python viewer.py --ckpt ckpts/ffhq256.pt --config GRAMHD256_FFHQ --device cuda --port 8081
    ssh -L 8080:localhost:8080 server                        # then open http://localhost:8080 on your machine

The browser's camera is sent to Python, converted to GRAM's pose (rendering/views.py), kept inside the
model's camera prior, rendered with the calls inference.py makes, and shown as the scene's background and
in the side panel: small while the camera moves, full size once it rests. Scrolling narrows the field of
view (GRAM's rays only sample a thin band around radius 1, so the camera itself cannot come closer).
"""
import argparse
import importlib.util
import math
import os
import random
import socket
import sys
import threading
import time
import traceback

import numpy as np

from generators import surfaces
from rendering import meshing, view_jobs, views
from rendering.inversion import latent_or_exit
from utils.cli import (HelpFormatter, check_can_create, default_device, device, port, positive_int, seed, truncation,
                       warn_if_exposed, warn_ignored)
from utils.images import save_png
from utils.resources import require_memory
from utils.meshes import colors_to_uint8, make_mesh
from utils.seeds import MAX_SEED

# The camera counts as moving for this long after its last update: previews until then, then full size.
SETTLE_SECONDS = 0.35
# Zoom (the browser camera's distance to the origin) stays within these factors of GRAM's own view.
ZOOM_RANGE = (0.35, 2.5)
# Camera changes below this (radians, or distance units) are rounding, not a move.
POSE_NOISE = 1e-5
# How long a new browser's camera updates are checked against the frontal camera sent to it on connection.
HANDSHAKE_SECONDS = 5.0
MODE_LABELS = {'RGB': 'rgb', 'depth': 'depth', 'normals': 'normals', 'alpha of one manifold level': 'alpha'}
GREY = 40  # letterbox colour around the square render


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--ckpt', '--generator_file', dest='ckpt', default=None,
                        help='checkpoint (default: the shipped model ckpts/synthetic_heads.pt)')
    parser.add_argument('--config', default=None, help='config name (needed for official checkpoints)')
    parser.add_argument('--port', type=port, default=8080, help='port of the page on --host')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on; the loopback default is reached from elsewhere via ssh -L')
    parser.add_argument('--device', type=device, default=default_device(), help='cpu, cuda or cuda:N')
    parser.add_argument('--img_size', type=positive_int, default=None,
                        help=f'GRAM render size when the camera rests (default: the config\'s; shipped model '
                             f'{view_jobs.DEMO_IMG_SIZE}); GRAM-HD uses its config\'s sizes')
    parser.add_argument('--preview_size', type=positive_int, default=None,
                        help='GRAM render size while the camera moves (default: a quarter of --img_size, >= 32)')
    parser.add_argument('--seed', type=seed, default=0, help='first seed shown')
    parser.add_argument('--latent', default=None,
                        help='a latent file of invert.py, shown instead of the seeds (psi does not apply)')
    parser.add_argument('--truncation', type=truncation, default=0.7, help='first psi shown, in [0, 1]')
    parser.add_argument('--output_dir', default='viewer_outputs', help='where the export buttons write')
    return parser


def check_port_free(host, port_number):
    """End the program with one line when the port is taken (viser would quietly move to the next one)."""
    try:
        with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, port_number))
    except OSError as error:
        if error.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise SystemExit(f"error: port {port_number} on {host} is in use (another viewer or server?); "
                             f"pass --port N with a free port")
        raise SystemExit(f"error: cannot listen on {host}:{port_number}: {error.strerror or error}")


def letterbox(image, aspect):
    """Pad a square image with grey to the browser viewport's width / height ratio: the background image
    fills the whole viewport, so a square render shown without padding would be stretched."""
    height, width = image.shape[:2]
    if aspect >= 1:
        target = (height, max(width, int(round(height * aspect))))
    else:
        target = (max(height, int(round(width / aspect))), width)
    canvas = np.full(target + (3,), GREY, np.uint8)
    top, left = (target[0] - height) // 2, (target[1] - width) // 2
    canvas[top:top + height, left:left + width] = image
    return canvas


class Viewer:
    """The viser page over a `views.ViewRenderer`; one render thread serves every connected browser."""

    def __init__(self, generator, device='cpu', host='127.0.0.1', port=8080, img_size=None, preview_size=None,
                 seed=0, truncation=0.7, output_dir='viewer_outputs', verbose=True, styles=None):
        import viser

        self.generator = generator
        self.device = device
        self.renderer = views.ViewRenderer(generator, device, styles)
        self.is_hd = self.renderer.is_hd
        self.img_size = int(generator.img_size if self.is_hd else (img_size or generator.img_size))
        self.preview_size = int(preview_size or max(32, self.img_size // 4))
        self.output_dir = output_dir
        self.base_fov = float(generator.camera['fov'])
        self.pitch, self.yaw = generator.prior['v_mean'], generator.prior['h_mean']
        self.zoom = 1.0
        # GRAM-HD's textures are laid out for the config's fov, so its camera does not zoom
        self.zoom_range = (1.0, 1.0) if self.is_hd else ZOOM_RANGE
        self.aspect = 1.0
        self.moved_at = 0.0
        self.shown = None  # the views.View on the page
        self.shown_aspect = None  # the viewport aspect its background was letterboxed for
        self.last_image = None
        self.render_seconds = None
        self._lock = threading.Lock()  # the state above
        self._generator_lock = threading.Lock()  # one render or export at a time (they share G.camera)
        self._wake = threading.Event()
        self._stop = threading.Event()

        self.server = viser.ViserServer(host=host, port=port, label='GRAM viewer', verbose=verbose)
        if port != 0 and self.server.get_port() != port:  # viser moves on to a free port by itself
            self.server.stop()
            raise SystemExit(f"error: port {port} on {host} is in use; pass --port N with a free port")
        self.port = self.server.get_port()
        self.server.scene.set_up_direction('+y')
        position, _ = views.gram_to_viser(self.pitch, self.yaw)
        self.server.initial_camera.position = tuple(position)
        self.server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self.server.initial_camera.fov = self.browser_fov()
        self._build_gui(seed, truncation)
        self.server.on_client_connect(self._on_connect)
        self._thread = threading.Thread(target=self._render_loop, name='viewer-render', daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------------------------------
    # Page

    def _build_gui(self, first_seed, truncation):
        gui = self.server.gui
        gui.add_markdown('Drag to orbit (kept within the camera prior), scroll to zoom.')
        self.seed = gui.add_number('Seed', initial_value=int(first_seed), min=0, max=MAX_SEED, step=1)
        self.random_seed = gui.add_button('Random seed')
        self.truncation = gui.add_slider('Truncation psi', min=0.0, max=1.0, step=0.05,
                                         initial_value=float(min(max(truncation, 0.0), 1.0)))
        self.mode = gui.add_dropdown('Render mode', tuple(MODE_LABELS), initial_value='RGB')
        self.level = gui.add_slider('Manifold level', min=0, max=max(self.generator.num_levels - 1, 1), step=1,
                                    initial_value=max(self.generator.num_levels - 2, 0), visible=False)
        self.resolution = None
        if self.is_hd:
            self.resolution = gui.add_dropdown('GRAM-HD image', ('HR', 'LR'), initial_value='HR')
        self.image = gui.add_image(np.full((8, 8, 3), GREY, np.uint8), label='Current view', format='png')
        self.status = gui.add_markdown('')
        with gui.add_folder('Mesh'):
            self.mesh_resolution = gui.add_slider('Grid', min=32, max=256, step=16, initial_value=64)
            self.mesh_level = gui.add_number('Alpha level', initial_value=surfaces.DEFAULT_ALPHA_LEVEL, min=1e-6,
                                             max=0.999999, step=1e-4)
            self.show_mesh = gui.add_button('Show mesh')
            self.hide_mesh = gui.add_button('Hide mesh')
        with gui.add_folder('Export'):
            self.save_png = gui.add_button('Save view PNG')
            self.save_video = gui.add_button('Save orbit MP4')
            self.save_mesh = gui.add_button('Save mesh files')
            self.export_status = gui.add_markdown(f'Files go to `{self.output_dir}`.')

        for control in (self.seed, self.truncation, self.mode, self.level) + ((self.resolution,) if self.is_hd else ()):
            control.on_update(lambda _: self._wake.set())
        for control in (self.seed, self.truncation):  # a shown mesh belongs to the previous latent
            control.on_update(lambda _: self.server.scene.remove_by_name('/mesh'))
        self.mode.on_update(lambda _: setattr(self.level, 'visible', self.mode.value == 'alpha of one manifold level'))
        self.random_seed.on_click(lambda _: setattr(self.seed, 'value', random.randint(0, MAX_SEED)))
        self.show_mesh.on_click(lambda _: self._in_background(self.add_mesh_to_scene))
        self.hide_mesh.on_click(lambda _: self.server.scene.remove_by_name('/mesh'))
        self.save_png.on_click(lambda _: self._in_background(self.export_png))
        self.save_video.on_click(lambda _: self._in_background(self.export_video))
        self.save_mesh.on_click(lambda _: self._in_background(self.export_mesh))

    def browser_fov(self):
        """The browser camera's vertical field of view (radians) that shows the full-size render edge to edge
        (before letterboxing); zooming narrows the render, not the browser's view."""
        fov = math.radians(views.edge_fov(self.base_fov, self.img_size))
        if self.aspect < 1:  # a portrait viewport shows the square render across its width
            fov = 2 * math.atan(math.tan(fov / 2) / self.aspect)
        return fov

    def _note_aspect(self, handle):
        """Keep the browser viewport's width / height (a camera message carries it) for the letterbox."""
        if getattr(handle, 'image_height', 0) and getattr(handle, 'image_width', 0):
            with self._lock:
                self.aspect = handle.image_width / handle.image_height
            self._wake.set()

    def _on_connect(self, client):
        # The viewport's shape is known from the browser's first camera message: letterbox for it now, not
        # at the first drag (the page showed the square render stretched until then).
        self._note_aspect(client.camera)
        # a browser opens on its own default camera: start it on GRAM's frontal view
        with self._lock:
            pitch, yaw = self.pitch, self.yaw
        position, _ = views.gram_to_viser(pitch, yaw)
        client.camera.position = position
        client.camera.look_at = (0.0, 0.0, 0.0)
        client.camera.up_direction = (0.0, 1.0, 0.0)
        client.camera.fov = self.browser_fov()
        client.camera.max_orbit_distance = self.zoom_range[1]
        client.camera.min_orbit_distance = self.zoom_range[0]
        # Until the browser reports the camera set above, its updates are its own default camera (sent
        # before it applied ours): taken as a drag, they would move the view to the edge of the pose range.
        handshake = {'position': np.asarray(position, dtype=float), 'until': time.time() + HANDSHAKE_SECONDS}

        def on_update(handle):
            self._note_aspect(handle)
            if handshake:
                if (np.abs(np.asarray(handle.position, dtype=float) - handshake['position']).max() > 1e-3
                        and time.time() < handshake['until']):
                    handle.position = tuple(handshake['position'])
                    handle.look_at = (0.0, 0.0, 0.0)
                    return
                handshake.clear()
            self._on_camera(handle)
        client.camera.on_update(on_update)
        self._wake.set()

    def _on_camera(self, handle):
        """A browser camera update -> GRAM's pose; a camera outside the model's range is put back at its edge."""
        pitch, yaw, distance = views.viser_to_gram(handle.position, handle.wxyz)
        clamped = views.clamp_pose(self.generator, pitch, yaw)
        zoom = min(max(distance, self.zoom_range[0]), self.zoom_range[1])
        self._note_aspect(handle)
        with self._lock:
            # the browser echoes cameras back in float32: noise that small must not start another render
            if max(abs(clamped[0] - self.pitch), abs(clamped[1] - self.yaw), abs(zoom - self.zoom)) > POSE_NOISE:
                self.pitch, self.yaw, self.zoom = clamped[0], clamped[1], zoom
                self.moved_at = time.time()
        if (abs(clamped[0] - pitch) > 1e-6 or abs(clamped[1] - yaw) > 1e-6 or abs(distance - zoom) > 1e-4
                or np.abs(handle.look_at).max() > 1e-6):
            # the browser is back on GRAM's orbit: looking at the origin from inside the pose range
            position, _ = views.gram_to_viser(clamped[0], clamped[1], zoom)
            handle.position = position
            handle.look_at = (0.0, 0.0, 0.0)
        fov = self.browser_fov()
        if abs(handle.fov - fov) > 1e-6:
            handle.fov = fov
        self._wake.set()

    # ---------------------------------------------------------------------------------------------
    # Rendering

    def current_view(self, full=None):
        """The views.View the page should show now (`full`: force the full size or the preview)."""
        with self._lock:
            pitch, yaw, zoom, moved_at = self.pitch, self.yaw, self.zoom, self.moved_at
        if full is None:
            full = time.time() - moved_at >= SETTLE_SECONDS
        size = self.img_size if (full or self.is_hd) else self.preview_size
        fov = self.base_fov if self.is_hd else views.zoomed_fov(self.base_fov, zoom)
        return views.View(seed=int(self.seed.value), truncation=float(self.truncation.value), pitch=pitch, yaw=yaw,
                          img_size=size, fov=fov, mode=MODE_LABELS[self.mode.value], level=int(self.level.value),
                          low_res=bool(self.is_hd and self.resolution.value == 'LR'))

    def _render_loop(self):
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            try:
                view = self.current_view()
                with self._lock:
                    aspect = self.aspect
                if view == self.shown and aspect == self.shown_aspect:
                    continue
                self.show(view)
            except Exception as error:  # keep serving: a failed render must not end the page
                self._set_status(f"render failed: {error}")
                traceback.print_exc()
                time.sleep(0.5)

    def show(self, view):
        """Render `view` and put it on the page (background and side panel)."""
        start = time.time()
        with self._generator_lock:
            image, note = self.renderer.render(view)
        self.render_seconds = time.time() - start
        with self._lock:
            aspect = self.aspect
        self.server.scene.set_background_image(letterbox(image, aspect), format='png')
        self.image.image = image
        self.last_image = image
        self.shown, self.shown_aspect = view, aspect
        zoom_note = '' if self.is_hd else f", fov {view.fov:.2f} deg"
        self._set_status(f"seed {view.seed}, psi {view.truncation:.2f}, pitch {view.pitch - math.pi / 2:+.3f}, "
                         f"yaw {view.yaw - math.pi / 2:+.3f} rad from frontal{zoom_note}; {image.shape[0]}px "
                         f"in {self.render_seconds:.2f} s; {note}")

    def _set_status(self, text):
        self.status.content = text

    def _in_background(self, action):
        def run():
            try:
                action()
            except SystemExit as error:  # the CLI helpers report bad settings this way
                self.export_status.content = f"failed: {error}"
            except Exception as error:
                self.export_status.content = f"failed: {error}"
                traceback.print_exc()
        threading.Thread(target=run, daemon=True).start()

    # ---------------------------------------------------------------------------------------------
    # Mesh and exports

    def latent_mesh(self):
        """The alpha surface of the current latent (extract_mesh.py's mesh.ply, without files), or a note."""
        seed_value, psi = int(self.seed.value), float(self.truncation.value)
        resolution, level = int(self.mesh_resolution.value), float(self.mesh_level.value)
        half_extent = surfaces.default_half_extent(self.generator)
        with self._generator_lock:
            field = self.renderer.field(seed_value, psi)
            volume = surfaces.evaluate_volume(field.alpha, resolution, half_extent, self.device)
            vertices, faces, normals = surfaces.extract_surface(volume, level, half_extent)
            if not len(faces):
                return None, (f"no mesh: alpha stays in [{volume.min():.3g}, {volume.max():.3g}] and never reaches "
                              f"level {level:g}; lower the level to see the faint structure")
            rgb, _ = surfaces.vertex_colors(field, vertices, normals)
        mesh = make_mesh(vertices, faces, colors_to_uint8(rgb), normals)
        name = 'the inverted latent' if self.renderer.styles is not None else f"seed {seed_value}"
        return mesh, f"mesh of {name}: {len(vertices)} vertices at alpha {level:g}, {resolution}^3 grid"

    def add_mesh_to_scene(self):
        self.export_status.content = 'computing the mesh...'
        mesh, note = self.latent_mesh()
        if mesh is not None:
            self.server.scene.add_mesh_trimesh('/mesh', mesh)
        self.export_status.content = note

    def _subject(self, view):
        """What the page shows, for file names and notes: 'latent' (an inverted photo) or the seed."""
        return 'latent' if self.renderer.styles is not None else view.seed

    def _prepared_output_dir(self):
        os.makedirs(self.output_dir, exist_ok=True)
        return self.output_dir

    def export_png(self):
        """The current view at full size, in its mode, as a PNG."""
        view = self.current_view(full=True)
        with self._generator_lock:
            image, _ = self.renderer.render(view)
        subject = self._subject(view)
        name = (f"view_{'' if subject == 'latent' else 'seed'}{subject}_{view.mode}_pitch{view.pitch - math.pi / 2:+.3f}_"
                f"yaw{view.yaw - math.pi / 2:+.3f}.png")
        path = os.path.join(self._prepared_output_dir(), name)
        save_png(image, path)
        self.export_status.content = f"wrote `{path}`"
        return path

    def export_video(self):
        """inference.py --type video for the current seed and psi (with its depth / normal videos)."""
        view = self.current_view(full=True)
        argv = ['--type', 'video', '--output_dir', self._prepared_output_dir(), '--truncation', str(view.truncation),
                '--outputs', 'rgb,depth,normal']
        if not self.is_hd:
            argv += ['--img_size', str(self.img_size)]
        args = view_jobs.build_view_parser().parse_args(argv)
        name = self._subject(view)
        latents = {name: self.renderer.styles} if self.renderer.styles is not None else None
        self.export_status.content = f"rendering a 60-frame orbit of {name}..."
        with self._generator_lock:
            view_jobs.run_view_type(self.generator, args, [name], self.device, 'video', latents)
        path = os.path.join(self.output_dir, f'grid_{name}.mp4')
        self.export_status.content = f"wrote `{path}` (+ depth and normal videos)"
        return path

    def export_mesh(self):
        """extract_mesh.py for the current seed, psi, grid and level (ply, obj, glb)."""
        view = self.current_view(full=True)
        args = meshing.check_args(meshing.build_mesh_parser().parse_args(
            ['--output_dir', self._prepared_output_dir(), '--truncation', str(view.truncation), '--resolution',
             str(int(self.mesh_resolution.value)), '--level', str(float(self.mesh_level.value)),
             '--formats', 'ply,obj,glb']))
        name = self._subject(view)
        self.export_status.content = f"extracting the mesh of {name}..."
        with self._generator_lock:
            summary, _ = meshing.extract_seed(self.generator, name, args,
                                                   surfaces.default_half_extent(self.generator), None,
                                                   styles=self.renderer.styles)
        self.export_status.content = f"{summary} (in `{self.output_dir}`)"
        return summary

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        self.server.stop()


def main(argv=None):
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec('viser') is None:
        raise SystemExit("error: the viewer needs viser: pip install -r requirements.txt (or pip install viser)")
    if view_jobs.demo_defaults_apply(args):  # no --ckpt, or the shipped file named: the same defaults
        if not os.path.isfile(view_jobs.DEMO_CHECKPOINT):
            raise SystemExit(f"no --ckpt given and the shipped model {view_jobs.DEMO_CHECKPOINT} is missing; "
                             "pass --ckpt PATH (with --config for official files)")
        args.ckpt = view_jobs.DEMO_CHECKPOINT
        if args.img_size is None:
            args.img_size = view_jobs.DEMO_IMG_SIZE
    # Where the export buttons write is checked now (not created until the first export): a read-only or
    # file path would otherwise only show when a button is pressed.
    check_can_create(args.output_dir, '--output_dir', folder=True)
    check_port_free(args.host, args.port)  # before the model loads: a taken port is found in a second
    warn_if_exposed(args.host)
    generator = view_jobs.load_or_exit(args.ckpt, args.config, args.device)
    if getattr(generator, 'is_hd', False):
        for flag, value in (('--img_size', args.img_size), ('--preview_size', args.preview_size)):
            if value is not None:
                warn_ignored(flag, value, f"GRAM-HD renders at its config's {generator.img_size}^2 (HR) and "
                             f"{generator.lr_img_size}^2 (LR)")
    else:
        size = args.img_size or generator.img_size
        for flag, value in (('--img_size', size), ('--preview_size', args.preview_size or 0)):
            require_memory(2 * value * value * view_jobs.RENDER_BYTES_PER_PIXEL, f"{flag} {value} (one render)",
                           args.device, advice=f'use a smaller {flag}')
    styles = None
    if args.latent is not None:
        _, latents = latent_or_exit(generator, args.latent, args.ckpt)
        styles = next(iter(latents.values()))
    viewer = Viewer(generator, args.device, args.host, args.port, args.img_size, args.preview_size, args.seed,
                    args.truncation, args.output_dir, styles=styles)
    print(f"viewer of {args.ckpt} at http://{args.host}:{viewer.port} (Ctrl-C to stop); from another machine: "
          f"ssh -L {viewer.port}:localhost:{viewer.port} <this server>, then open http://localhost:{viewer.port}",
          flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print('stopped')
    finally:
        viewer.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
