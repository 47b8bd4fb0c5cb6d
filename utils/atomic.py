"""The one place that writes files atomically: a temporary file in the target's folder, renamed into place.

A kill at any moment leaves either the previous file or the new one, never a torn file. Temporary files
are created with mode 0666 & ~umask (an existing target keeps its own mode), exactly like a plain
`open(path, 'w')`: `tempfile.mkstemp` would make every output 0600.

Temporary names carry the writer's PID: `.<name>.<pid>.<token>.partial[<ext>]`. A kill leaves such a file
behind; `remove_stale_temp_files` deletes the ones whose process is gone, and runs by itself the first
time a process writes into a folder, so the next run of any script cleans up after a killed one.
"""
import errno
import os
import re
import secrets
import shutil
import stat
from contextlib import contextmanager

# The tag of our temporary names. Nothing a data reader globs for (`*.png`, `*.pth`, ...) ends with it,
# except videos, which keep their extension after it because ffmpeg picks the container from it.
TEMP_TAG = 'partial'
_TEMP_NAME = re.compile(r'^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.' + TEMP_TAG + r'(\.[A-Za-z0-9]+)?$')
# Temporary names of earlier versions of this project (mkstemp names and preprocess_dataset's
# `.<name>.<pid>.partial`); nothing writes them any more, so any that exist were left by a kill.
_LEGACY_TEMP_NAMES = (
    re.compile(r'^\..+\.(pth|pt)\.[a-z0-9_]{8}\.tmp$'),
    re.compile(r'^\.tmp_[a-z0-9_]{8}\.(partial|mp4|gif|json|pt)$'),
    re.compile(r'^\..+\.\d+\.partial$'),
)
_swept_folders = set()


class DiskWriteError(OSError):
    """Writing an output failed (often a full disk); the message names the file and the free space."""


def temp_name_for(path, keep_extension=False):
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    extension = os.path.splitext(base)[1] if keep_extension else ''
    return os.path.join(folder, f'.{base}.{os.getpid()}.{secrets.token_hex(4)}.{TEMP_TAG}{extension}')


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale_temp_file(name):
    """True for a temporary file of ours whose writer is gone (never for any other name)."""
    match = _TEMP_NAME.match(name)
    if match:
        return not _pid_alive(int(match.group('pid')))
    return any(pattern.match(name) for pattern in _LEGACY_TEMP_NAMES)


def remove_stale_temp_files(folder):
    """Delete the temporary files that killed writers left in `folder` (not recursive); returns how many."""
    folder = os.path.abspath(os.fspath(folder))
    _swept_folders.add(folder)
    removed = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        path = os.path.join(folder, name)
        if is_stale_temp_file(name) and os.path.isfile(path):
            try:
                os.remove(path)
                removed += 1
            except FileNotFoundError:  # another process cleaned it first
                pass
    return removed


def _write_failure(path, error):
    """A one-line DiskWriteError for `error`, with the free space of the target's filesystem."""
    folder = os.path.dirname(os.path.abspath(path))
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    # torch's zip writer reports ENOSPC as "unexpected pos" / "file write failed" without the errno.
    full = (getattr(error, 'errno', None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < 64 << 20)
            or 'unexpected pos' in reason or 'write failed' in reason)
    where = f"{free / 2 ** 20:.1f} MiB free in {folder}" if free is not None else f"free space of {folder} unknown"
    return DiskWriteError(f"cannot write {path}: {reason} ({where}){'; the disk may be full' if full else ''}; "
                          f"the previous {os.path.basename(path)}, if any, is unchanged")


@contextmanager
def atomic_path(path, keep_extension=False, durable=False):
    """Yield a temporary path next to `path`; when the block ends without an error, rename it onto `path`.

    For writers that take a file name (PIL, ffmpeg). `keep_extension` keeps the target's extension at the
    end of the temporary name. `durable` fsyncs the file before the rename (checkpoints). On an error the
    temporary file is removed; OSError and RuntimeError (torch's zip writer reports a full disk as
    "unexpected pos") become a one-line DiskWriteError naming the file and the free space.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if folder not in _swept_folders:
        remove_stale_temp_files(folder)
    temp = temp_name_for(path, keep_extension)
    try:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        if os.path.exists(path):
            os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
        yield temp
        if durable:
            descriptor = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        os.replace(temp, path)
    except (OSError, RuntimeError) as error:
        if isinstance(error, DiskWriteError):
            raise
        raise _write_failure(path, error) from error
    finally:
        if os.path.exists(temp):
            os.remove(temp)


@contextmanager
def atomic_open(path, mode='wb', durable=False, **open_kwargs):
    """`open(path, mode)` through a temporary file renamed into place when the block succeeds."""
    if not mode.startswith('w'):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not a 'w' mode")
    with atomic_path(path, durable=durable) as temp:
        with open(temp, mode, **open_kwargs) as stream:
            yield stream
            stream.flush()
