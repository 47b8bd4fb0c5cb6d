"""Argument types and checks shared by the command-line scripts.

Each type function turns a bad value into argparse's one-line "argument --flag: ..." error at parse time,
before any model is loaded or image rendered. Zero, negative, NaN or empty values are refused where they
mean nothing, instead of silently falling back to a default. torch is imported only where a check needs
it, so scripts that do not use torch (most of preprocess_dataset.py) stay light.
"""
import argparse
import contextlib
import ipaddress
import math
import os
import re
import sys
import tempfile


# Help texts that already say their default: "(default: ...", "; default 0-9", "default 0, or ...".
_STATES_DEFAULT = re.compile(r'(^|[(;:,] ?)default\b', re.IGNORECASE)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and appends each option's default to its help text.

    Options whose help already talks about the default, or whose default is None / off, are left alone:
    "(default: None)" tells a reader nothing.
    """

    def _get_help_string(self, action):
        text = action.help or ''
        default = action.default
        if (not action.option_strings or default is None or default is False or default is argparse.SUPPRESS
                or _STATES_DEFAULT.search(text)):
            return text
        shown = ','.join(str(item) for item in default) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})".strip()


def _number(text, kind, expected, accept=lambda value: True):
    """`text` as `kind` (int or finite float) for which `accept` holds, else an argparse error saying what
    was `expected`."""
    try:
        value = kind(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}") from None
    if (kind is float and not math.isfinite(value)) or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def positive_int(text):
    return _number(text, int, 'a positive integer', lambda value: value >= 1)


def nonnegative_int(text):
    return _number(text, int, 'an integer >= 0', lambda value: value >= 0)


def finite_float(text):
    return _number(text, float, 'a finite number')


def positive_float(text):
    return _number(text, float, 'a finite number > 0', lambda value: value > 0)


def nonnegative_float(text):
    return _number(text, float, 'a finite number >= 0', lambda value: value >= 0)


def truncation(text):
    """Truncation psi, the same range in every script: 1 is none, 0 the mean face; outside [0, 1] the
    latents are pushed past the mean or away from it, which renders noise rather than faces."""
    return _number(text, float, 'a finite truncation psi in [0, 1] (1.0 = no truncation)',
                   lambda value: 0 <= value <= 1)


def port(text):
    return _number(text, int, 'a TCP port number (1-65535)', lambda value: 1 <= value <= 65535)


def seed(text):
    """One seed (a non-negative integer in the range utils.seeds accepts)."""
    from utils.seeds import MAX_SEED

    return _number(text, int, f'a seed (an integer from 0 to {MAX_SEED})', lambda value: 0 <= value <= MAX_SEED)


def seed_list(text):
    """A `--seeds` list such as '0-9' or '0,1,4-6' -> list of ints (utils.seeds.parse_seeds)."""
    from utils.seeds import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def comma_list(choices=None):
    """A type function for 'a,b,c' -> ['a', 'b', 'c']: no empty list or item; with `choices`, only those.

    Names are checked against `choices` when the value is parsed, so a list extended later (e.g. a new
    view type) is honoured without touching the parser.
    """
    def parse(text):
        items = [item.strip() for item in str(text).split(',')]
        if not any(items):
            expected = f"one or a comma list of {', '.join(choices)}" if choices else 'a comma list of names'
            raise argparse.ArgumentTypeError(f"expected {expected}, got an empty value")
        if not all(items):
            raise argparse.ArgumentTypeError(f"empty item in the comma list {text}")
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"unknown name {item} in {text}; expected one or a comma list "
                                                 f"of {', '.join(choices)}")
        return items
    return parse


_DEVICE = re.compile(r'^(cpu|cuda|mps)(?::(\d+))?$')


def device(text):
    """A torch device name that exists on this machine: cpu, cuda, cuda:N (or mps on Apple machines)."""
    import torch

    match = _DEVICE.match(str(text).strip())
    if not match:
        raise argparse.ArgumentTypeError(f"unknown device {text}; expected cpu, cuda or cuda:N")
    kind, index = match.group(1), match.group(2)
    if kind == 'cuda':
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text} requested but this machine has no usable CUDA GPU "
                                             f"(torch {torch.__version__}); use --device cpu")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text} requested but only {torch.cuda.device_count()} CUDA "
                                             f"device(s) are visible (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if kind == 'mps' and not (hasattr(torch.backends, 'mps') and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text} requested but Apple's MPS backend is not available here; "
                                         "use --device cpu")
    return str(text).strip()


def default_device():
    import torch

    return 'cuda' if torch.cuda.is_available() else 'cpu'


def writable_dir(path, flag='--output_dir'):
    """Create `path` if needed and prove it takes a file, before any expensive work is done.

    Ends the program with one line when the path is a file, cannot be created, or refuses writes (read-only
    or full): finding out after hours of rendering loses the work.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise SystemExit(f"error: {flag} {path} is a file; expected a folder (it is created when missing)")
    try:
        os.makedirs(path, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix='.write_check_', dir=path)
        try:
            # A byte written and synced: a full disk often accepts a new empty file but no data.
            os.write(handle, b'0')
            os.fsync(handle)
        finally:
            os.close(handle)
            os.remove(probe)
    except OSError as error:
        raise SystemExit(f"error: {flag} {path} is not writable: {error.strerror or error}")
    return path


@contextlib.contextmanager
def output_folder(path, flag='--output_dir'):
    """writable_dir for the length of a job: a run that fails (an exception, SystemExit with an error, a
    Ctrl-C) removes the folders it created when it left nothing in them, so a bad input leaves no empty
    folder behind. Folders that existed before, and anything written into them, are never removed."""
    absolute = os.path.abspath(path)
    created, parent = [], absolute
    while not os.path.exists(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    writable_dir(path, flag)
    try:
        yield path
    except BaseException as error:
        if not (isinstance(error, SystemExit) and error.code in (None, 0)):
            remove_empty_folders(created)
        raise


def remove_empty_folders(folders):
    """Remove the given folders, deepest first, while they are empty (a folder with a file in it stays)."""
    for folder in sorted(folders, key=len, reverse=True):
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or already gone
            pass


def check_can_create(path, flag, folder=False):
    """Fail early, without creating anything, when `path` (a file, or with `folder` a folder) could not be
    written later: it has the wrong kind, a parent is a file, or the nearest existing folder refuses writes."""
    if os.path.exists(path) and os.path.isdir(path) != folder:
        expected = 'a folder' if folder else 'a file name'
        kind = 'folder' if os.path.isdir(path) else 'file'
        raise SystemExit(f"error: {flag} {path} is a {kind}; expected {expected}")
    existing = os.path.abspath(path) if folder else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise SystemExit(f"error: {flag} {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SystemExit(f"error: {flag} {path} cannot be written: {existing} is not writable")
    return path


def warn_if_exposed(host, flag='--host'):
    """One line on stderr when a server will listen beyond this machine (anything but a loopback address)."""
    try:
        loopback = ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        loopback = host == 'localhost'
    if not loopback:
        print(f"warning: {flag} {host} makes the page reachable from other machines, with no password: anyone "
              "who can reach this port can use it (the default 127.0.0.1 with ssh -L is private)", file=sys.stderr)
    return not loopback


def warn_ignored(flag, value, reason):
    """One line on stderr for a flag the chosen model does not use (it would otherwise be silently ignored)."""
    print(f"warning: {flag} {value} is ignored: {reason}", file=sys.stderr)


def error_line(error):
    """The one-line message of an exception, unwrapping errors re-raised from other processes.

    A DataLoader worker's exception reaches the main process as the same type whose message is "Caught X in
    DataLoader worker process N." followed by the worker's whole traceback, and a spawned training process's
    as the traceback text; the last line of that traceback carries the original message.
    """
    text = str(error).strip()
    if 'Traceback (most recent call last)' not in text:
        return ' '.join(text.split()) if '\n' in text else text
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    # "datasets.DatasetError: cannot read image ...": drop the exception's qualified name.
    match = re.match(r'^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\w*: (.*)$', last)
    return match.group(1) if match else last
