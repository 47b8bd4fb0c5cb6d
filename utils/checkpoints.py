"""Checkpoint I/O: the official on-disk formats, our self-describing format, atomic writes.

Security: every file is read with `torch.load(..., weights_only=True)`. The official `ema.pth` files are
whole pickled `torch_ema.ema.ExponentialMovingAverage` objects; they are admitted through the restricted
unpickler by allow-listing a stand-in class under that exact name, so neither the `torch_ema` package nor
an unrestricted unpickler is ever needed, and a malicious `.pth` cannot run code.
"""
import hashlib
import os
import re

import torch

from .atomic import atomic_open

# Our checkpoint format: a dict with these keys (plus 'state_dict' or other payload).
FORMAT_NAME = 'gram-pytorch'
FORMAT_VERSION = 1
# Key of the sha256 of a checkpoint's tensors (absent in files written before it existed).
CHECKSUM_KEY = 'checksum'


class OfficialEMA:
    """Stand-in for `torch_ema.ema.ExponentialMovingAverage` (fadel/pytorch_ema @ 3950a7b).

    Unpickling fills its __dict__: decay (float), num_updates (int), shadow_params (list of tensors in
    the order of the parameters with requires_grad), collected_params (list).
    """

    def shadow(self):
        return list(self.__dict__.get('shadow_params', []))


OfficialEMA.__module__ = 'torch_ema.ema'
OfficialEMA.__qualname__ = OfficialEMA.__name__ = 'ExponentialMovingAverage'


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with the file and the reason in the message."""


def load_file(path, map_location='cpu'):
    """torch.load with the restricted unpickler; official EMA pickles are admitted (as `OfficialEMA`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    check_checkpoint_header(path)
    try:
        with torch.serialization.safe_globals([OfficialEMA]):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # re-raised with the file name; the original is chained
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(error, path)}") from error
    verify_checksum(checkpoint, path)
    return checkpoint


# torch.save writes a zip archive (since PyTorch 1.6) or, in the legacy format, a pickle (protocol 2+).
_CHECKPOINT_MAGIC = (b'PK\x03\x04', b'\x80')
# What a file that is not a checkpoint most often turns out to be, by its first bytes.
_OTHER_FORMATS = ((b'\x89PNG', 'a PNG image'), (b'\xff\xd8\xff', 'a JPEG image'), (b'GIF8', 'a GIF image'),
                  (b'\x93NUMPY', 'a NumPy .npy array'), (b'\x89HDF', 'an HDF5 file (Keras / h5py)'),
                  (b'version https://git-lfs', 'a Git LFS pointer (run git lfs pull)'),
                  (b'<', 'an HTML / XML page (a failed download?)'), (b'{', 'a JSON file'))


def check_checkpoint_header(path):
    """CheckpointError naming what the file is when its first bytes cannot start a PyTorch checkpoint: an
    empty file, an image or a downloaded HTML page get one clear line instead of the unpickler's complaint."""
    with open(path, 'rb') as stream:
        head = stream.read(32)
    if not head:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes); expected a PyTorch "
                              "checkpoint (.pth / .pt written by torch.save). An interrupted copy or download?")
    if head.startswith(_CHECKPOINT_MAGIC):
        return
    for magic, kind in _OTHER_FORMATS:
        if head.startswith(magic):
            raise CheckpointError(f"cannot read checkpoint {path}: it is {kind}, not a PyTorch checkpoint "
                                  "(.pth / .pt written by torch.save)")
    raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint (it starts with bytes "
                          f"{head[:8]!r}; torch.save writes a zip archive or a pickle)")


def _load_failure(error, path):
    """torch.load's reason in one line, without its advice to turn the restricted unpickler off."""
    text = ' '.join(str(error).split())
    if isinstance(error, (OSError, RuntimeError, EOFError)) and 'Weights only' not in text:
        return (f"it is truncated or damaged ({os.path.getsize(path)} bytes; {text or type(error).__name__}); "
                "copy or download it again")
    if 'Weights only load failed' in text or 'weights_only' in text:
        found = re.search(r'GLOBAL ([\w.]+)', text) or re.search(r'Unsupported (?:global|operand)[: ]+([^ ]+)', text)
        what = f" ({found.group(1)})" if found else ''
        return (f"it holds Python objects other than tensors, numbers, strings and containers{what}, and such files "
                "are refused: unpickling them can run arbitrary code. A checkpoint from this project or the "
                "official code never needs that; re-save the state_dict if you trust the file")
    return text or type(error).__name__


def is_own_checkpoint(obj):
    return isinstance(obj, dict) and obj.get('format') == FORMAT_NAME


def make_checkpoint(kind, config, step, payload, config_name=None):
    """A self-describing checkpoint dict: format + version + kind + config + step + payload keys."""
    checkpoint = {'format': FORMAT_NAME, 'format_version': FORMAT_VERSION, 'kind': kind, 'config': config,
                  'config_name': config_name, 'step': int(step)}
    checkpoint.update(payload)
    return checkpoint


# sha256 of files already hashed in this process, by (path, size, mtime): the ~95 MB Inception file is
# otherwise re-read by every evaluation of a session.
_FILE_SHA256 = {}


def file_sha256(path, chunk=1 << 22):
    """sha256 (hex) of a file's bytes (checkpoints, feature-extractor weights), remembered per path, size and
    modification time."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_SHA256:
        digest = hashlib.sha256()
        with open(path, 'rb') as stream:
            for block in iter(lambda: stream.read(chunk), b''):
                digest.update(block)
        _FILE_SHA256[key] = digest.hexdigest()
    return _FILE_SHA256[key]


def tensor_sha256(tensors):
    """sha256 (hex) of the raw bytes of the given tensors, in order (checkpoint checksums, rank fingerprints)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tensors_in(obj):
    """The tensors of a checkpoint payload in a fixed order (dicts keep their order through torch.save)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key != CHECKSUM_KEY:
                yield from _tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors_in(value)


def payload_checksum(checkpoint):
    return {'algorithm': 'sha256', 'tensors': tensor_sha256(_tensors_in(checkpoint))}


def verify_checksum(checkpoint, path):
    """Raise CheckpointError when our checkpoint's tensors differ from the checksum written with them.

    Files written before checksums existed, and official files, carry none and are accepted as they are.
    """
    if not is_own_checkpoint(checkpoint) or CHECKSUM_KEY not in checkpoint:
        return
    stored = checkpoint[CHECKSUM_KEY]
    if not isinstance(stored, dict) or stored.get('algorithm') != 'sha256':
        raise CheckpointError(f"{path} is corrupt: its checksum record {stored!r} is not a sha256 record")
    if payload_checksum(checkpoint)['tensors'] != stored.get('tensors'):
        raise CheckpointError(f"{path} is corrupt: its tensors do not match the sha256 written with them "
                              "(damaged on disk or in a copy)")


def atomic_save(obj, path):
    """torch.save through the atomic writer (fsync, then rename): a kill never leaves a torn file.

    Our checkpoints get a sha256 of their tensors, checked by load_file. A failed write (a full disk) is
    one DiskWriteError naming the file; the previous file at `path` is left as it was.
    """
    if is_own_checkpoint(obj):
        obj = {**obj, CHECKSUM_KEY: payload_checksum(obj)}
    with atomic_open(path, 'wb', durable=True) as stream:
        torch.save(obj, stream)


def check_state_dict(module, state_dict, source, config_name=None):
    """Raise CheckpointError naming the first key that does not fit `module` (missing, unexpected, shape)."""
    expected = module.state_dict()
    where = f" (config {config_name})" if config_name else ''
    for key, tensor in expected.items():
        if key not in state_dict:
            raise CheckpointError(f"{source}: key {key!r} expected by the model{where} with shape "
                                  f"{tuple(tensor.shape)} is missing from the checkpoint")
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: key {key!r} has shape {tuple(state_dict[key].shape)} in the "
                                  f"checkpoint but {tuple(tensor.shape)} in the model{where}")
    for key, tensor in state_dict.items():
        if key not in expected:
            raise CheckpointError(f"{source}: key {key!r} (shape {tuple(tensor.shape)}) in the checkpoint is "
                                  f"not a parameter of the model{where}")


def load_state_dict_checked(module, state_dict, source, config_name=None):
    check_state_dict(module, state_dict, source, config_name)
    module.load_state_dict(state_dict, strict=True)


def copy_ema_shadow(params, shadow, source):
    """Copy EMA shadow tensors into `params` by position, as torch_ema's copy_to does."""
    params = list(params)
    if len(params) != len(shadow):
        raise CheckpointError(f"{source}: the EMA holds {len(shadow)} tensors but the model has {len(params)} "
                              "trainable parameters")
    with torch.no_grad():
        for index, (param, value) in enumerate(zip(params, shadow)):
            if tuple(param.shape) != tuple(value.shape):
                raise CheckpointError(f"{source}: EMA tensor {index} has shape {tuple(value.shape)} but parameter "
                                      f"{index} of the model has {tuple(param.shape)}")
            param.copy_(value.to(param.device, param.dtype))


def official_ema_sibling(generator_path):
    """Path of the official EMA file next to a `generator.pth` (file name 'generator' -> 'ema'), or None.

    Only the file name is rewritten: the official scripts replaced the substring in the whole path,
    directory names included.
    """
    folder, name = os.path.split(os.fspath(generator_path))
    if 'generator' not in name:
        return None
    candidate = os.path.join(folder, name.replace('generator', 'ema'))
    return candidate if os.path.isfile(candidate) else None
