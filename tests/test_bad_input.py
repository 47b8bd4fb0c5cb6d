"""Issue 29: every script answers bad input in one line, before any work, and never silently renders the
wrong thing. One parametrised test per class of failure, over every script that has the input; each class
is a mechanism that exists once (utils/cli.py, utils/resources.py, utils/checkpoints.py, utils/images.py,
generators.load_generator) and is used by all of them.
"""
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_cli
import extract_mesh
import fid_evaluation
import inference
import preprocess_dataset
import render_multiview_images
import train as train_script
from conftest import REPO_ROOT, posed_image_folder, untrained_checkpoint
from rendering import meshing, view_jobs
from utils import resources

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread

SHIPPED = str(REPO_ROOT / 'ckpts' / 'synthetic_heads.pt')


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return str(probe.getsockname()[1])


def viewer_main(argv):
    viewer = pytest.importorskip('viewer')
    pytest.importorskip('viser')
    return viewer.main(argv + ['--port', free_port()])


def one_line_exit(main, argv):
    """main(argv) must end with SystemExit carrying one line (not argparse's usage, not a traceback)."""
    with pytest.raises(SystemExit) as stop:
        main([str(item) for item in argv])
    message = str(stop.value.code)
    assert stop.value.code not in (None, 0, 2), message
    assert '\n' not in message and 'Traceback' not in message, message
    return message


def usage_exit(main, argv, capsys):
    """main(argv) must stop at argument parsing (exit 2) with one error line; returns that line."""
    with pytest.raises(SystemExit) as stop:
        main([str(item) for item in argv])
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if 'error:' in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return posed_image_folder(tmp_path_factory.mktemp('data'), 2)


@pytest.fixture(scope='module')
def hd_data_dir(tmp_path_factory):
    """Images at TINY_GRAMHD's HR size (stage 2 refuses smaller ones first)."""
    return posed_image_folder(tmp_path_factory.mktemp('hd_data'), 2, size=64)


@pytest.fixture(scope='module')
def tiny_hd_ckpt(tmp_path_factory):
    """A self-describing checkpoint of an untrained TINY_GRAMHD generator."""
    return str(untrained_checkpoint('TINY_GRAMHD', tmp_path_factory.mktemp('hd') / 'tiny_hd.pt'))


# --------------------------------------------------------------------------------------------------------
# Class 1: output paths that cannot be folders, and unreadable checkpoints, are one line for every script

def output_argv(script, out, data):
    """(main, argv) of a run of `script` that would write into `out`."""
    return {
        'inference': (inference.main, ['--output_dir', out, '--seeds', '0']),
        'extract_mesh': (extract_mesh.main, ['--output_dir', out, '--seeds', '0', '--resolution', '16']),
        'render_multiview_images': (render_multiview_images.main,
                                    ['--generator_file', SHIPPED, '--output_dir', out, '--seeds', '0',
                                     '--frames', '2']),
        'eval': (eval_cli.main, ['--ckpt', SHIPPED, '--metrics', 'consistency', '--tmp_dir', out]),
        'fid_evaluation': (fid_evaluation.main, ['--generator_file', SHIPPED, '--real_images_dir', data,
                                                 '--output_dir', out]),
        'viewer': (viewer_main, ['--output_dir', out]),
        'preprocess_dataset': (preprocess_dataset.main, ['--cate', 'synthetic', '--num_images', '2', '--size', '16',
                                                         '--output_dir', out]),
        'train': (train_script.main, ['--config', 'TINY_GRAM', '--data_dir', data, '--output_dir', out]),
    }[script]


SCRIPTS = ('inference', 'extract_mesh', 'render_multiview_images', 'eval', 'fid_evaluation', 'viewer',
           'preprocess_dataset', 'train')


@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('kind', ['file', 'under_a_file'])
def test_output_path_that_cannot_be_a_folder_is_one_line(script, kind, tmp_path, data_dir):
    blocker = tmp_path / 'taken'
    blocker.write_text('a file of the user')
    out = blocker if kind == 'file' else blocker / 'out'
    main, argv = output_argv(script, str(out), str(data_dir))
    message = one_line_exit(main, argv)
    assert str(blocker) in message and ('is a file' in message or 'cannot be created' in message
                                        or 'not writable' in message), message
    assert blocker.read_text() == 'a file of the user'


@pytest.mark.parametrize('script', ['inference', 'extract_mesh', 'render_multiview_images'])
def test_a_disk_that_fills_up_while_writing_is_one_line(script, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device', 'the file being written')
    out = str(tmp_path / 'out')
    # (the script, the module whose file writer fails, the writer, the flags)
    module, writing_module, writer, argv = {
        'inference': (inference, view_jobs, 'save_png', ['--seeds', '0', '--img_size', '16', '--outputs', 'rgb']),
        'extract_mesh': (extract_mesh, meshing, 'save_mesh', ['--seeds', '0', '--resolution', '16']),
        'render_multiview_images': (render_multiview_images, render_multiview_images, 'save_png',
                                    ['--generator_file', SHIPPED, '--seeds', '0', '--frames', '2', '--img_size', '16']),
    }[script]
    monkeypatch.setattr(writing_module, writer, full_disk)
    message = one_line_exit(module.main, argv + ['--output_dir', out])
    assert message.startswith(f'error: cannot write to --output_dir {out}') and 'No space left' in message


def bad_checkpoint(folder, kind):
    path = folder / f'{kind}.pth'
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'png':
        Image.new('RGB', (4, 4)).save(path, format='PNG')
    elif kind == 'list':
        torch.save([1, 2, 3], path)
    elif kind == 'object':
        torch.save({'payload': np.random.default_rng(0)}, path)  # a pickled object: refused unread
    elif kind == 'truncated':
        path.write_bytes(open(SHIPPED, 'rb').read()[:4000])
    return path


CHECKPOINT_REASONS = {'empty': 'empty (0 bytes)', 'png': 'PNG image', 'list': 'holds a list',
                      'object': 'arbitrary code', 'truncated': 'truncated or damaged'}


def checkpoint_argv(script, ckpt, out, data, hd_data):
    return {
        'inference': (inference.main, ['--ckpt', ckpt, '--output_dir', out, '--seeds', '0']),
        'extract_mesh': (extract_mesh.main, ['--ckpt', ckpt, '--output_dir', out, '--seeds', '0']),
        'render_multiview_images': (render_multiview_images.main,
                                    ['--generator_file', ckpt, '--output_dir', out, '--seeds', '0']),
        'eval': (eval_cli.main, ['--ckpt', ckpt, '--metrics', 'consistency', '--tmp_dir', out]),
        'fid_evaluation': (fid_evaluation.main, ['--generator_file', ckpt, '--real_images_dir', data,
                                                 '--num_real_images', '2', '--output_dir', out]),
        'viewer': (viewer_main, ['--ckpt', ckpt, '--output_dir', out]),
        'train': (train_script.main, ['--config', 'TINY_GRAMHD', '--data_dir', hd_data, '--output_dir', out,
                                      '--gram_model_file', ckpt]),
    }[script]


@pytest.mark.parametrize('script', [name for name in SCRIPTS if name != 'preprocess_dataset'])
@pytest.mark.parametrize('kind', list(CHECKPOINT_REASONS))
def test_unreadable_checkpoint_is_one_line_naming_file_and_reason(script, kind, tmp_path, data_dir, hd_data_dir):
    ckpt = bad_checkpoint(tmp_path, kind)
    out = tmp_path / 'out'
    main, argv = checkpoint_argv(script, str(ckpt), str(out), str(data_dir), str(hd_data_dir))
    message = one_line_exit(main, argv)
    assert str(ckpt) in message and CHECKPOINT_REASONS[kind] in message, message
    assert 'weights_only' not in message
    assert not out.exists(), f"{script} left {out} behind"  # class 4: nothing left behind


# --------------------------------------------------------------------------------------------------------
# Class 2: sizes and counts are bounded before allocation, with the estimate in the message

@pytest.mark.parametrize('script, argv', [
    ('inference', ['--img_size', '100000']),
    ('inference', ['--type', 'interpolation', '--frames_per_key', '100000000']),
    ('inference', ['--type', 'interpolation', '--num_keyframes', '100000000']),
    ('inference', ['--type', 'interpolation', '--interp_grid', '10000x10000']),
    ('inference', ['--seeds', '0-3', '--type', 'multiview3x7', '--img_size', '3000']),
    ('extract_mesh', ['--resolution', '2000']),
    ('extract_mesh', ['--chunk', '100000000']),
    ('render_multiview_images', ['--generator_file', SHIPPED, '--img_size', '100000']),
    ('render_multiview_images', ['--generator_file', SHIPPED, '--frames', '100000000']),
    ('viewer', ['--img_size', '100000']),
    ('viewer', ['--preview_size', '100000']),
    ('eval', ['--ckpt', SHIPPED, '--metrics', 'consistency', '--consistency_size', '100000']),
    ('eval', ['--ckpt', SHIPPED, '--metrics', 'depth', '--depth_num', '100000000']),
    ('eval', ['--ckpt', SHIPPED, '--metrics', 'swd', '--num_fake', '1000000000']),
    ('fid_evaluation', ['--generator_file', SHIPPED, '--num_images', '1000000000']),
    ('preprocess_dataset', ['--cate', 'synthetic', '--num_images', '1000000000']),
])
def test_sizes_and_counts_are_bounded_before_allocation(script, argv, tmp_path, data_dir, monkeypatch):
    # A machine with 2 GB free: the same answer on every CI box, whatever it really has.
    monkeypatch.setattr(resources, 'available_memory', lambda device='cpu': (2 * 1024 ** 3, 'available memory'))
    out = tmp_path / 'out'
    main = {'inference': inference.main, 'extract_mesh': extract_mesh.main, 'viewer': viewer_main,
            'render_multiview_images': render_multiview_images.main, 'eval': eval_cli.main,
            'fid_evaluation': fid_evaluation.main, 'preprocess_dataset': preprocess_dataset.main}[script]
    out_flag = '--tmp_dir' if script == 'eval' else '--output_dir'
    extra = ['--real_images_dir', str(data_dir)] if script == 'eval' and 'swd' in argv else []
    if script == 'fid_evaluation':
        extra = ['--real_images_dir', str(data_dir), '--num_real_images', '2']
    message = one_line_exit(main, argv + extra + [out_flag, str(out)])
    assert 'needs about' in message and ('of memory' in message or 'of disk' in message), message
    assert not out.exists(), f"{script} left {out} behind"


def test_preprocess_size_has_a_documented_maximum(capsys, tmp_path):
    line = usage_exit(preprocess_dataset.main, ['--cate', 'synthetic', '--size', '100000', '--output_dir',
                                                tmp_path / 'out'], capsys)
    assert '--size' in line and str(preprocess_dataset.MAX_SIZE) in line
    assert not (tmp_path / 'out').exists()


def test_estimates_let_ordinary_jobs_through(tmp_path):
    """The bounds refuse what cannot fit, not what can: the shipped model's default job passes with the real
    memory of this machine."""
    generator = view_jobs.load_or_exit(SHIPPED, None, 'cpu')
    args = inference.build_parser().parse_args(['--img_size', '128', '--outputs', 'rgb,depth'])
    view_jobs.check_job_fits(generator, args, list(range(10)), ['multiview3x7', 'video'])
    assert resources.format_bytes(1536) == '1.5 KB' and resources.format_bytes(3 * 1024 ** 4) == '3.0 TB'


# --------------------------------------------------------------------------------------------------------
# Class 3: no silent wrong results

def sixteen_bit_grey(path, value=40000):
    Image.fromarray(np.full((24, 24), value, np.uint16)).save(path)
    return path


@pytest.mark.parametrize('reader', ['dataset', 'eval_real', 'eval_fake', 'preprocess'])
def test_every_reader_reads_a_16_bit_grey_png_the_same(reader, tmp_path):
    from datasets import FFHQ
    from evaluation.fidelity import FakeImages, RealImages

    image = sixteen_bit_grey(tmp_path / 'grey.png')
    expected = round(40000 / 257)  # the top 8 bits; PIL's own convert('RGB') gives 255 (white)
    if reader == 'dataset':
        folder = posed_image_folder(tmp_path / 'data', 1, size=24)
        target = next(p for p in Path(folder).iterdir() if p.suffix == '.png')
        sixteen_bit_grey(target)
        dataset = FFHQ(str(folder), img_size=24)
        pixels = ((dataset.load_image(0) + 1) * 127.5).round()
    elif reader == 'eval_real':
        pixels = RealImages([str(image)], 24)[0].float()
    elif reader == 'eval_fake':
        pixels = FakeImages([str(image)], 24)[0].float()
    else:
        from utils.images import read_rgb
        pixels = torch.from_numpy(np.asarray(read_rgb(str(image)), dtype=np.float32))
    assert float(pixels.min()) == float(pixels.max()) == expected, (reader, float(pixels.min()))


def config_argv(script, out):
    return {
        'inference': (inference.main, ['--ckpt', SHIPPED, '--config', 'FFHQ_default', '--output_dir', out]),
        'extract_mesh': (extract_mesh.main, ['--ckpt', SHIPPED, '--config', 'FFHQ_default', '--output_dir', out]),
        'render_multiview_images': (render_multiview_images.main, ['--generator_file', SHIPPED, '--config',
                                                                   'CARLA_default', '--output_dir', out]),
        'eval': (eval_cli.main, ['--ckpt', SHIPPED, '--config', 'FFHQ_default', '--metrics', 'consistency',
                                 '--tmp_dir', out]),
        'viewer': (viewer_main, ['--ckpt', SHIPPED, '--config', 'CATS_default', '--output_dir', out]),
    }[script]


@pytest.mark.parametrize('script', ['inference', 'extract_mesh', 'render_multiview_images', 'eval', 'viewer'])
def test_a_config_that_disagrees_with_the_checkpoint_is_an_error(script, tmp_path):
    out = tmp_path / 'out'
    main, argv = config_argv(script, str(out))
    message = one_line_exit(main, argv)
    assert 'disagrees with the config saved in' in message and 'img_size = 32 there' in message, message
    assert not out.exists()


def test_a_config_that_agrees_is_accepted(tmp_path):
    import configs
    from generators import load_generator

    saved = torch.load(SHIPPED, map_location='cpu', weights_only=True)['config']
    generator = load_generator(SHIPPED, config=saved)
    assert generator.config == saved
    changed = dict(saved, optimizer=dict(saved['optimizer'], gen_lr=1.0))  # training-only settings do not matter
    load_generator(SHIPPED, config=changed)
    assert configs.get_config('SYNTH_CPU_WIDE')['generator'] == saved['generator']
    load_generator(SHIPPED, config='SYNTH_CPU_WIDE')


def truncation_argv(script, value, out):
    return {
        'inference': (inference.main, ['--truncation', value, '--output_dir', out]),
        'extract_mesh': (extract_mesh.main, ['--truncation', value, '--output_dir', out]),
        'render_multiview_images': (render_multiview_images.main, ['--psi', value, '--output_dir', out]),
        'eval': (eval_cli.main, ['--truncation', value, '--tmp_dir', out]),
        'viewer': (viewer_main, ['--truncation', value, '--output_dir', out]),
    }[script]


@pytest.mark.parametrize('script', ['inference', 'extract_mesh', 'render_multiview_images', 'eval', 'viewer'])
@pytest.mark.parametrize('value', ['-3', '1.5', 'nan'])
def test_truncation_has_one_range_in_every_script(script, value, tmp_path, capsys):
    main, argv = truncation_argv(script, value, str(tmp_path / 'out'))
    line = usage_exit(main, argv, capsys)
    assert 'psi in [0, 1]' in line and value in line
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('script', ['inference', 'render_multiview_images'])
def test_a_flag_the_model_ignores_says_so(script, tiny_hd_ckpt, tmp_path, capsys):
    out = tmp_path / 'out'
    if script == 'inference':
        inference.main(['--ckpt', tiny_hd_ckpt, '--img_size', '48', '--seeds', '0', '--output_dir', str(out)])
    else:
        render_multiview_images.main(['--generator_file', tiny_hd_ckpt, '--img_size', '48', '--seeds', '0',
                                      '--frames', '2', '--output_dir', str(out)])
    err = capsys.readouterr().err
    assert 'warning: --img_size 48 is ignored: GRAM-HD renders at' in err
    size = Image.open(next(out.glob('grid_0*.png'))).size[1]
    assert size != 48  # the warning tells the truth


def test_no_mesh_written_exits_non_zero_with_the_true_reason(tmp_path):
    out = tmp_path / 'meshes'
    message = one_line_exit(extract_mesh.main, ['--level', '0.9999', '--resolution', '16', '--seeds', '0',
                                                '--output_dir', out])
    assert 'no mesh for seed(s) 0' in message and 'alpha peaks at' in message and 'below --level 0.9999' in message
    assert 'nearly transparent' not in message
    assert not out.exists()  # nothing was written: no empty folder either


# --------------------------------------------------------------------------------------------------------
# Class 4: results of one protocol never overwrite another's

def test_depth_results_at_two_sizes_are_two_files(tmp_path, capsys):
    for size in ('8', '16'):
        eval_cli.main(['--ckpt', SHIPPED, '--metrics', 'depth', '--depth_num', '2', '--depth_size', size,
                       '--tmp_dir', str(tmp_path), '--quiet', '--device', 'cpu'])
    files = sorted(tmp_path.glob('depth-*.json'))
    assert len(files) == 2, files
    sizes = sorted(json.loads(path.read_text())['depth']['protocol']['image_size'] for path in files)
    assert sizes == [8, 16]


# --------------------------------------------------------------------------------------------------------
# Class 5: the viewer

def test_viewer_letterboxes_from_the_first_page_load(tmp_path):
    viewer = pytest.importorskip('viewer')
    pytest.importorskip('viser')
    from generators import load_generator

    page = viewer.Viewer(load_generator(SHIPPED), 'cpu', port=0, img_size=16, preview_size=8,
                         output_dir=str(tmp_path / 'out'), verbose=False)
    try:
        class Camera:  # a browser's first camera: its own default pose, a 4:3 viewport
            position, wxyz, look_at, fov = (0.0, 0.0, 3.0), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.9
            image_width, image_height = 800, 600

            def on_update(self, callback):
                self.callback = callback

        class Client:
            camera = Camera()

        client = Client()
        page._on_connect(client)
        assert page.aspect == pytest.approx(800 / 600)
        yaw = page.yaw
        # the browser reports its own default camera once more, from a resized window: ignored as a move,
        # but its viewport shape is kept, and the background is letterboxed again for it
        client.camera.position, client.camera.image_width = (0.0, 0.0, 3.0), 600
        client.camera.callback(client.camera)
        assert page.yaw == yaw and page.aspect == pytest.approx(1.0)
        deadline = time.time() + 30
        while page.shown_aspect != pytest.approx(1.0) and time.time() < deadline:
            time.sleep(0.05)
        assert page.shown_aspect == pytest.approx(1.0)
    finally:
        page.stop()


@pytest.mark.parametrize('host, exposed', [('127.0.0.1', False), ('localhost', False), ('::1', False),
                                           ('0.0.0.0', True), ('192.168.1.5', True), ('::', True)])
def test_viewer_warns_when_the_page_is_exposed(host, exposed, capsys):
    from utils.cli import warn_if_exposed

    assert warn_if_exposed(host) == exposed
    err = capsys.readouterr().err
    assert ('reachable from other machines' in err) == exposed and len(err.splitlines()) == int(exposed)


def test_viewer_checks_its_output_dir_and_host_at_start(tmp_path, capsys):
    message = one_line_exit(viewer_main, ['--host', '0.0.0.0', '--ckpt', str(tmp_path / 'missing.pt'),
                                          '--output_dir', str(tmp_path / 'exports')])
    assert 'missing.pt' in message
    assert 'reachable from other machines' in capsys.readouterr().err
    assert not (tmp_path / 'exports').exists()  # checked, not created until an export


# --------------------------------------------------------------------------------------------------------
# Class 6: the docs and the outputs match

def test_depth_json_names_only_files_that_were_written(tmp_path):
    inference.main(['--seeds', '0', '--img_size', '16', '--outputs', 'rgb,depth', '--output_dir', str(tmp_path)])
    record = json.loads((tmp_path / 'grid_0_depth.json').read_text())
    assert 'normals' not in record and not (tmp_path / 'grid_0_normal.png').exists()
    inference.main(['--seeds', '0', '--img_size', '16', '--outputs', 'depth,normal', '--output_dir', str(tmp_path)])
    record = json.loads((tmp_path / 'grid_0_depth.json').read_text())
    assert record['normals'].startswith('grid_0_normal.png') and (tmp_path / 'grid_0_normal.png').exists()


def test_naming_the_shipped_model_gives_the_shipped_defaults(tmp_path):
    parser = inference.build_parser()
    implicit = parser.parse_args(['--output_dir', str(tmp_path)])
    explicit = parser.parse_args(['--ckpt', SHIPPED, '--output_dir', str(tmp_path)])
    relative = parser.parse_args(['--ckpt', 'ckpts/synthetic_heads.pt', '--output_dir', str(tmp_path)])
    assert view_jobs.demo_defaults_apply(implicit) and view_jobs.demo_defaults_apply(explicit)
    import os
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        assert view_jobs.demo_defaults_apply(relative)
    finally:
        os.chdir(cwd)
    assert not view_jobs.demo_defaults_apply(parser.parse_args(['--ckpt', str(tmp_path / 'other.pt')]))


def test_readme_states_the_psi_of_the_shipped_model_picture():
    readme = (REPO_ROOT / 'README.md').read_text()
    section = readme[readme.index('## The shipped model'):]
    section = section[:section.index('\n## ', 1)]
    assert 'psi' in section.lower() or 'ψ' in section
