"""Training checkpoints: the official file set, our self-describing payloads, and resuming.

A checkpoint at step s is 7 files (official naming, so official training folders are recognised):
    step%06d_{generator,ema,ema2,discriminator,optimizer_G,optimizer_D,scaler}.pth   every save_interval
    {generator,ema,ema2,discriminator,optimizer_G,optimizer_D,scaler}.pth           "latest", rolling
Each file is written atomically (temp file + rename). Ours carry kind, config and step (make_checkpoint);
a set is complete when all 7 files exist and, for ours, hold the same step, so a kill between two files
leaves an incomplete set that resuming skips. A set with a damaged file (unreadable, or its tensors
differ from the sha256 written with them) is skipped too: resuming takes the newest intact set, and an
explicit --set_step names the newest intact one when its own set is damaged. Step s means "after s iterations"; the random streams and
the data order are functions of (seed, step), so the seed (kept in the generator file) and the step are
all the RNG state a resume needs.

Resuming also reads official folders: raw state_dicts, torch_ema pickles for ema/ema2 (read as
`OfficialEMA`), raw optimizer/scaler state_dicts, step taken from the file name.
"""
import os
import re
from dataclasses import dataclass
from typing import Optional

from utils.checkpoints import (CheckpointError, OfficialEMA, atomic_save, is_own_checkpoint, load_file,
                               load_state_dict_checked, make_checkpoint)

KINDS = ('generator', 'ema', 'ema2', 'discriminator', 'optimizer_G', 'optimizer_D', 'scaler')
LATEST_LABEL = 'latest files'
_STEP_FILE = re.compile(r'^step(\d+)_(' + '|'.join(KINDS) + r')\.pth$')


def step_paths(folder, step):
    return {kind: os.path.join(folder, f'step{step:06d}_{kind}.pth') for kind in KINDS}


def latest_paths(folder):
    return {kind: os.path.join(folder, f'{kind}.pth') for kind in KINDS}


def training_payloads(run, step):
    """The 7 checkpoint dicts of a run at `step` (tensors stay on their device; loading maps to CPU)."""
    config, name, generator = run.config, run.config_name, run.generator

    def checkpoint(kind, **payload):
        return make_checkpoint(kind, config, step, payload, name)

    def ema_checkpoint(ema):
        # A full generator state_dict, so generators.load_generator() renders it like any generator file.
        return checkpoint('ema', state_dict=ema.state_dict_for(generator), num_updates=ema.num_updates,
                          decay=ema.decay)

    return {
        'generator': checkpoint('generator', state_dict=generator.state_dict(),
                                training={'seed': run.seed, 'world_size': run.world_size}),
        'ema': ema_checkpoint(run.ema),
        'ema2': ema_checkpoint(run.ema2),
        'discriminator': checkpoint('discriminator', state_dict=run.discriminator.state_dict()),
        'optimizer_G': checkpoint('optimizer_G', state_dict=run.optimizer_G.state_dict()),
        'optimizer_D': checkpoint('optimizer_D', state_dict=run.optimizer_D.state_dict()),
        'scaler': checkpoint('scaler', state_dict=run.scaler.state_dict()),
    }


def save_checkpoint(run, folder, step, latest=False):
    """Write the 7 files of step `step` (step-numbered, or the rolling latest set), each atomically."""
    payloads = training_payloads(run, step)
    paths = latest_paths(folder) if latest else step_paths(folder, step)
    for kind in KINDS:
        atomic_save(payloads[kind], paths[kind])
    return paths


@dataclass
class Candidate:
    step: int
    paths: dict
    label: str


def _own_step(path):
    payload = load_file(path)
    return payload['step'] if is_own_checkpoint(payload) else None


def find_candidates(folder, damaged=None):
    """(complete candidates newest first, incomplete step numbers) in a checkpoint folder.

    The latest files are placed by the step inside their generator file; when that file cannot be read,
    they are left out and, if a list `damaged` is given, (label, error) is appended to it.
    """
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    found = {}
    for name in os.listdir(folder):
        match = _STEP_FILE.match(name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    complete = [Candidate(step, step_paths(folder, step), f'step {step:06d} files')
                for step, kinds in found.items() if len(kinds) == len(KINDS)]
    incomplete = sorted(step for step, kinds in found.items() if len(kinds) != len(KINDS))
    latest = latest_paths(folder)
    if all(os.path.isfile(path) for path in latest.values()):
        try:
            step = _own_step(latest['generator'])  # official latest files carry no step: not resumable
        except CheckpointError as error:
            step = None
            if damaged is not None:
                damaged.append((LATEST_LABEL, str(error)))
        if step is not None:
            complete.append(Candidate(step, latest, LATEST_LABEL))
    # Newest first; at equal steps the latest files come first (identical content when both are whole).
    complete.sort(key=lambda c: (c.step, c.label == LATEST_LABEL), reverse=True)
    return complete, incomplete


def has_checkpoint(folder):
    """True when `folder` holds a checkpoint set, intact or damaged (a damaged one must not be overwritten
    by a fresh start: resuming reports it instead)."""
    if not os.path.isdir(folder):
        return False
    damaged = []
    return bool(find_candidates(folder, damaged)[0] or damaged)


def _state_dict(payload, kind, path):
    if is_own_checkpoint(payload):
        expected = 'ema' if kind.startswith('ema') else kind
        if payload.get('kind') != expected:
            raise CheckpointError(f"{path}: a {payload.get('kind')!r} checkpoint where {expected!r} was expected")
        return payload['state_dict']
    if isinstance(payload, dict):
        return payload  # official: a raw state_dict
    raise CheckpointError(f"{path}: expected a state_dict for {kind}, got {type(payload).__name__}")


def _load_ema(ema, payload, path, log):
    if isinstance(payload, OfficialEMA):
        attributes = payload.__dict__
        if attributes.get('decay') is not None and abs(float(attributes['decay']) - ema.decay) > 1e-12:
            log(f"note: {path} has EMA decay {attributes['decay']}, continuing with {ema.decay}")
        ema.load(payload.shadow(), attributes.get('num_updates') or 0, path)
    else:
        ema.load(ema.shadow_from_state_dict(_state_dict(payload, 'ema', path), path), payload['num_updates'], path)


def _load_optimizer(optimizer, state_dict, path):
    try:
        optimizer.load_state_dict(state_dict)
    except (ValueError, KeyError, RuntimeError) as error:
        groups = [(group.get('name', '?'), len(group['params'])) for group in optimizer.param_groups]
        raise CheckpointError(f"{path}: the optimizer state does not fit this run's optimizer ({error}); this run "
                              f"has parameter groups (name, tensors) {groups}") from error


def apply_checkpoint(run, payloads, paths, log=print):
    """Load the 7 payloads into the run's models, EMAs, optimizers and scaler."""
    load_state_dict_checked(run.generator, _state_dict(payloads['generator'], 'generator', paths['generator']),
                            paths['generator'], run.config_name)
    load_state_dict_checked(run.discriminator,
                            _state_dict(payloads['discriminator'], 'discriminator', paths['discriminator']),
                            paths['discriminator'], run.config_name)
    _load_ema(run.ema, payloads['ema'], paths['ema'], log)
    _load_ema(run.ema2, payloads['ema2'], paths['ema2'], log)
    _load_optimizer(run.optimizer_G, _state_dict(payloads['optimizer_G'], 'optimizer_G', paths['optimizer_G']),
                    paths['optimizer_G'])
    _load_optimizer(run.optimizer_D, _state_dict(payloads['optimizer_D'], 'optimizer_D', paths['optimizer_D']),
                    paths['optimizer_D'])
    scaler_state = _state_dict(payloads['scaler'], 'scaler', paths['scaler'])
    if scaler_state and run.scaler.is_enabled():
        run.scaler.load_state_dict(scaler_state)
    elif scaler_state:
        log(f"note: {paths['scaler']} holds a loss-scaler state; this run has no AMP (CPU), it is not used")


@dataclass
class Resumed:
    step: int
    seed: Optional[int]
    label: str


def _load_set(candidate):
    """The 7 payloads of a candidate; CheckpointError when a file is damaged or the files hold different
    steps (a kill while the latest files were rewritten)."""
    payloads = {kind: load_file(path) for kind, path in candidate.paths.items()}
    steps = {kind: p['step'] for kind, p in payloads.items() if is_own_checkpoint(p)}
    if any(step != candidate.step for step in steps.values()):
        raise CheckpointError(f"they hold different steps {steps} (a save was interrupted)")
    return payloads


def newest_intact_step(folder, exclude_step=None):
    """The step of the newest step-numbered set of `folder` whose 7 files all load, or None."""
    for candidate in find_candidates(folder)[0]:
        if candidate.label == LATEST_LABEL or candidate.step == exclude_step:
            continue
        try:
            _load_set(candidate)
        except CheckpointError:
            continue
        return candidate.step
    return None


def _advice(folder, exclude_step):
    step = newest_intact_step(folder, exclude_step)
    if step is None:
        return f"no other intact step-numbered checkpoint set is in {folder}"
    return f"the newest intact checkpoint in {folder} is step {step}: resume from it with --set_step {step}"


def resume(run, folder, set_step=None, log=print):
    """Load the newest intact checkpoint of `folder` (or the one of step `set_step`) into `run`.

    Returns a Resumed, or None when the folder holds no checkpoint set at all. Sets with a damaged file or
    mixed steps are skipped with a note. With `set_step`, the step-numbered set of that step is used (the
    latest files only when no step-numbered set of that step exists); if it is damaged, the error names
    the newest intact set and the --set_step that resumes from it.
    """
    damaged = []
    candidates, incomplete = find_candidates(folder, damaged)
    if set_step is not None:
        of_step = [c for c in candidates if c.step == set_step]
        chosen = [c for c in of_step if c.label != LATEST_LABEL] or of_step
    else:
        chosen = candidates
        for label, error in damaged:
            log(f"note: skipping the {label} in {folder}: {error}")
    problem = ''
    for candidate in chosen:
        try:
            payloads = _load_set(candidate)
        except CheckpointError as error:
            if set_step is not None and candidate.label != LATEST_LABEL:
                raise CheckpointError(f"cannot resume from the {candidate.label} in {folder}: {error}; "
                                      f"{_advice(folder, set_step)}") from error
            if set_step is not None:
                problem = f"; the {candidate.label} of step {set_step} cannot be used: {error}"
                continue
            log(f"note: skipping the {candidate.label} in {folder}: {error}")
            damaged.append((candidate.label, str(error)))
            continue
        apply_checkpoint(run, payloads, candidate.paths, log)
        generator = payloads['generator']
        seed = generator.get('training', {}).get('seed') if is_own_checkpoint(generator) else None
        return Resumed(candidate.step, seed, f"{candidate.label} in {folder}")
    if set_step is not None:
        numbered = sorted(c.step for c in candidates if c.label != LATEST_LABEL)
        raise CheckpointError(f"no complete checkpoint of step {set_step} in {folder}; complete step files: "
                              f"{numbered or 'none'}; incomplete (files missing): {incomplete or 'none'}{problem}; "
                              f"{_advice(folder, set_step)}")
    if damaged:
        raise CheckpointError(f"no intact checkpoint set in {folder}: every set has a damaged file (first: the "
                              f"{damaged[0][0]}: {damaged[0][1]}); move the damaged files out of the folder to "
                              "start this run over, or restore them from a backup")
    return None
