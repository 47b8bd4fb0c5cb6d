"""What a job will hold against what the machine has: sizes and counts are refused before any allocation.

Every size or count flag of the scripts (render sizes, frame counts, grid resolutions, sample counts) ends
in an estimate of the bytes it makes the job hold at once, checked here against the memory this machine
has free (or the disk, for files). An estimate names its terms in the message, so a refused value says
what it would have cost: `--img_size 100000` is refused in one line instead of dying in an allocation with
a traceback, and `--frames_per_key 100000000` before it grows to gigabytes.

The estimates are deliberately generous (a job refused at 80 % of free memory could perhaps have run;
one let through at 120 % swaps or is killed after its work is lost).
"""
import os
import shutil

# The share of the free memory / disk a job may plan to use: the allocator, the page cache and other
# processes need the rest.
USABLE_SHARE = 0.8


def format_bytes(count):
    """1536 -> '1.5 KB' (powers of 1024, as free(1) and nvidia-smi count)."""
    count = float(count)
    for unit in ('bytes', 'KB', 'MB', 'GB', 'TB', 'PB'):
        if count < 1024 or unit == 'PB':
            return f"{count:.0f} bytes" if unit == 'bytes' else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PB"


def available_memory(device='cpu'):
    """(free bytes, what they are) of the host (MemAvailable: what can be allocated without swapping) or,
    for a CUDA device, of that GPU."""
    device = str(device)
    if device.startswith('cuda'):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free on {device}"
    try:
        with open('/proc/meminfo') as stream:
            for line in stream:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024, 'available memory'
    except OSError:  # not Linux
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'), 'free memory'
    except (ValueError, OSError, AttributeError):  # neither: no bound can be known, none is applied
        return None, 'unknown'


def require_memory(needed_bytes, what, device='cpu', advice='use a smaller value'):
    """End the program with one line when `needed_bytes` (an estimate, described by `what`, e.g.
    "--img_size 100000: 4 renders of 100000^2 pixels x 64 bytes") exceeds the usable share of the memory
    the job would use: the host's, and with a CUDA `device` also that GPU's."""
    devices = ['cpu'] + ([str(device)] if str(device).startswith('cuda') else [])
    for name in devices:
        free, label = available_memory(name)
        if free is not None and needed_bytes > USABLE_SHARE * free:
            raise SystemExit(f"error: {what} needs about {format_bytes(needed_bytes)} of memory, but this machine has "
                             f"{format_bytes(free)} {label}; {advice}")
    return needed_bytes


def require_disk(needed_bytes, path, what, advice='use a smaller value or another folder'):
    """End the program with one line when the files `what` describes (about `needed_bytes`) would not fit
    on the disk holding `path` (or its nearest existing parent)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if needed_bytes > USABLE_SHARE * free:
        raise SystemExit(f"error: {what} needs about {format_bytes(needed_bytes)} of disk, but {existing} has "
                         f"{format_bytes(free)} free; {advice}")
    return needed_bytes
