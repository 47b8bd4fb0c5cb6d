"""Owning an output folder and stopping on request: the folder lock, SIGINT/SIGTERM, dying with the launcher.

- One run per --output_dir: rank 0 holds an exclusive `flock` on `<output_dir>/.train.lock` (with its PID
  written inside) for the whole run; a second run into the same folder stops with the holder's PID.
  The kernel drops the lock when the holder dies, however it dies.
- SIGINT (Ctrl-C) and SIGTERM ask the loop to stop at the next step boundary, where every rank agrees on
  it, rank 0 saves a checkpoint and the run ends with TrainingStopped (exit code 128 + signal).
- Data-loader workers ignore SIGINT/SIGTERM while the loop runs (WorkerSignalGate): `pkill -f train.py`,
  a scheduler signalling the whole job and Ctrl-C in a terminal reach them too, and a worker killed by
  SIGTERM made the DataLoader raise "worker killed by signal" (anywhere, from its SIGCHLD handler) instead
  of the loop stopping cleanly. Once the loop has ended the gate opens and the signals kill them again:
  multiprocessing's exit handler stops leftover workers with SIGTERM and waits for them.
- Worker processes of a launcher get SIGKILL when the launcher dies (Linux parent-death signal; elsewhere
  a thread that watches the parent), so no orphan keeps training and writing checkpoints.
"""
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None

LOCK_FILE = '.train.lock'
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1


class OutputDirBusy(RuntimeError):
    """Another live run holds the output folder."""


class TrainingStopped(Exception):
    """Training stopped on a signal after saving a checkpoint; `exit_code` is the shell's 128 + signal.
    Every rank raises it; only rank 0's is meant to be printed."""

    def __init__(self, step, signum, rank=0):
        super().__init__(f"stopped at step {step}; run the same command to resume")
        self.step, self.signum, self.rank = step, signum, rank
        self.exit_code = 128 + int(signum)

    def __reduce__(self):  # crosses from a worker process to the launcher
        return TrainingStopped, (self.step, self.signum, self.rank)


def _holder(path):
    try:
        with open(path, encoding='utf-8') as stream:
            return stream.read().strip() or 'unknown'
    except OSError:
        return 'unknown'


def _busy(folder, path):
    return OutputDirBusy(f"--output_dir {folder} is in use by another training run (PID {_holder(path)}, lock "
                         f"{path}); wait for it to end or stop it, or choose another --output_dir")


class OutputDirLock:
    """An exclusive lock on a run folder, held from `acquire()` until `release()` or the process's death."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.descriptor = None
        self.created_folder = self.created_file = False

    def acquire(self):
        if fcntl is None:
            return self
        self.created_folder = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        self.created_file = not os.path.exists(self.path)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise _busy(self.folder, self.path) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()} on {socket.gethostname()}\n".encode())
        self.descriptor = descriptor
        return self

    def release(self):
        if self.descriptor is not None:
            # the file names a holder only while one holds it (the launcher's check must not look like a run)
            os.ftruncate(self.descriptor, 0)
            # A run that failed before writing anything leaves nothing behind: not its lock file, not the
            # folder it made. Removed while still locked, so no other run can have taken the lock meanwhile.
            if self.created_file and os.listdir(self.folder) == [LOCK_FILE]:
                os.unlink(self.path)
                if self.created_folder:
                    os.rmdir(self.folder)
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None


def check_output_dir_free(folder):
    """Raise OutputDirBusy now when a live run holds `folder` (the launcher asks before starting workers;
    rank 0 takes the lock itself)."""
    OutputDirLock(folder).acquire().release()


class StopSignals:
    """Turns SIGINT/SIGTERM into a stop request read at step boundaries.

    With `escalate`, a second signal ends the process at once (KeyboardInterrupt / exit 143) for a user
    who does not want to wait for the step to finish; workers of a launcher leave that to the launcher,
    which forwards the first signal and kills them on the second.
    """

    def __init__(self, escalate):
        self.escalate = escalate
        self.signum = 0
        self.previous = {}

    def _handle(self, signum, frame):
        if self.signum and self.escalate:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = self.signum or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
        return False


class WorkerSignalGate:
    """DataLoader `worker_init_fn` that makes workers ignore SIGINT/SIGTERM until `open()` (see the
    module doc). The flag lives in shared memory, so the workers read the training process's latest word;
    a worker whose training process dies exits by itself (PyTorch's workers watch their parent)."""

    def __init__(self):
        self.opened = multiprocessing.RawValue('b', 0)

    def open(self):
        self.opened.value = 1

    def __call__(self, worker_id):
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._worker_handler)

    def _worker_handler(self, signum, frame):
        if self.opened.value:  # die of the signal itself, as without the gate
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def die_with_parent(parent_pid):
    """Make this process end when `parent_pid` (its launcher) ends, even by SIGKILL."""
    libc_name = ctypes.util.find_library('c') if sys.platform.startswith('linux') else None
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the launcher died before prctl took effect
                os._exit(1)
            return

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name='parent-watch', daemon=True).start()
