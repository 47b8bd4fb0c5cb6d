"""Test setup: the repo root on sys.path, deterministic threads, and the location of ../shared."""
import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / 'shared'
OFFICIAL_FIXTURES = SHARED / 'fixtures' / 'official'

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The official fixtures were rendered with 2 intra-op threads.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def official_fixture(name):
    """Path of an official fixture folder, or skip the test with the reason when ../shared is absent."""
    folder = OFFICIAL_FIXTURES / name
    if not folder.is_dir():
        pytest.skip(f"official fixture {folder} not found: it ships beside the project checkout in ../shared, "
                    "which a user's clone does not have")
    return folder


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread. Tiny models are dominated by OpenMP synchronisation, and on the
    shared 2-core machines two spinning threads are many times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def untrained_checkpoint(config_name, path):
    """Write a loadable self-describing checkpoint of an untrained generator of `config_name` (seed 0)."""
    import configs
    from generators import build_generator
    from utils.checkpoints import atomic_save, make_checkpoint

    torch.manual_seed(0)
    generator = build_generator(config_name)
    atomic_save(make_checkpoint('generator', configs.get_config(config_name), 0,
                                {'state_dict': generator.state_dict()}, config_name), path)
    return path


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    """A loadable self-describing checkpoint of an untrained TINY_GRAM generator (seed 0)."""
    return untrained_checkpoint('TINY_GRAM', tmp_path_factory.mktemp('ckpt') / 'tiny.pt')


def posed_image_folder(root, count, size=20):
    """A training folder of `count` random size x size images with FFHQ-style pose files (seeded)."""
    import numpy as np
    import scipy.io
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / 'poses').mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f'{i:05d}.png')
        scipy.io.savemat(root / 'poses' / f'{i:05d}.mat', {'angle': rng.normal(0, 0.1, (1, 3))})
    return str(root)
