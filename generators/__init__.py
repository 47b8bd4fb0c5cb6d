"""Generators: GRAM (`GramGenerator`) and, from the GRAM-HD issue on, `GramHDGenerator`.

Public API (kept stable for notebooks and external checks):
    build_generator(config)                                  -> untrained generator for a config dict/name
    load_generator(path, config=None, device='cpu')          -> generator in eval mode
    G.render(z, pitch, yaw, img_size=None, truncation_psi=1.0, lock_view_dependence=False, return_depth=False)
    GRAM-HD adds return_lr / return_maps to render, and G.manifold_textures(z, truncation_psi) +
    G.render_from_textures(textures, pitch, yaw, ...) for fast free-view rendering (see gramhd.py).
"""
import os

import torch

from utils.checkpoints import (CheckpointError, OfficialEMA, copy_ema_shadow, is_own_checkpoint, load_file,
                               load_state_dict_checked, official_ema_sibling)

from .gram import GramGenerator
from .gramhd import GramHDGenerator

__all__ = ['GramGenerator', 'GramHDGenerator', 'build_generator', 'load_generator', 'resolve_config']


def resolve_config(config):
    """A config given by name or as a dict -> (dict, name or None)."""
    if isinstance(config, str):
        import configs
        return configs.get_config(config), config
    return config, None


def build_generator(config):
    """An untrained generator for `config` (a dict or a config name)."""
    config, _ = resolve_config(config)
    generator_class = config['generator']['class']
    if generator_class == 'GramGenerator':
        return GramGenerator.from_config(config)
    if generator_class == 'GramHDGenerator':
        return GramHDGenerator.from_config(config)
    raise ValueError(f"unknown generator class {generator_class!r} in config; expected GramGenerator or "
                     "GramHDGenerator")


def _trainable(generator):
    return [p for p in generator.parameters() if p.requires_grad]


def _apply_ema(generator, ema, source):
    """Overwrite the generator with EMA weights: an official torch_ema pickle or our own 'ema' checkpoint."""
    if isinstance(ema, OfficialEMA):
        copy_ema_shadow(_trainable(generator), ema.shadow(), source)
    elif is_own_checkpoint(ema) and ema.get('kind') == 'ema':
        load_state_dict_checked(generator, ema['state_dict'], source)
    else:
        raise CheckpointError(f"{source}: expected an EMA checkpoint (official torch_ema pickle or ours)")


# The config sections that decide what a generator renders (the pose prior is in generator.kwargs); the
# others (optimiser, D, process, the dataset's image size and folder) only train it.
RENDER_SECTIONS = ('generator', 'camera')


def config_disagreements(saved, given):
    """'key = saved value there, given value given' for each rendering setting (RENDER_SECTIONS) in which a
    config `given` on the command line differs from the one a checkpoint carries."""
    from .gramhd import flat_differences

    return [f"{key} = {a!r} there, {b!r} given" for section in RENDER_SECTIONS
            for key, a, b in flat_differences(saved.get(section), given.get(section), section)]


def load_generator(path, config=None, device='cpu', default_config=None):
    """Load a generator checkpoint into a new generator in eval mode on `device`.

    Accepts:
    - our own checkpoints (config, step and format version inside; `config` is not needed);
    - an official GRAM `generator.pth` (raw state_dict; when the sibling file with 'generator' replaced
      by 'ema' in its name exists, its EMA weights are used, as the official scripts do);
    - an official `ema.pth` (pickled torch_ema object, read without torch_ema and without unrestricted
      unpickling);
    - an official GRAM-HD `ckpts/*.pt` (plain state_dict).
    Official files need `config` (a name such as 'FFHQ_default', or a dict; `default_config` when none is
    given, as an official script's default). Our files carry their config: a `config` given with one must
    agree with it in every rendering setting (a CheckpointError names the differences), so that a wrong
    --config never silently renders one model with another's camera.
    """
    path = os.fspath(path)
    payload = load_file(path)
    if not isinstance(payload, (dict, OfficialEMA)):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a generator checkpoint (expected a "
                              "state_dict of tensors, an official ema.pth or one of this project's checkpoints)")
    if is_own_checkpoint(payload):
        saved, config_name = payload['config'], payload.get('config_name')
        if config is not None:
            given, given_name = resolve_config(config)
            differences = config_disagreements(saved, given)
            if differences:
                more = f" (+{len(differences) - 3} more)" if len(differences) > 3 else ''
                raise CheckpointError(f"config {given_name or '(dict)'} disagrees with the config saved in {path} "
                                      f"({config_name or 'unnamed'}): {'; '.join(differences[:3])}{more}; omit the "
                                      "config: the checkpoint's own is used")
        config = saved
        generator = build_generator(config)
        if payload.get('kind') not in ('generator', 'ema'):
            raise CheckpointError(f"{path}: a {payload.get('kind')!r} checkpoint, not a generator")
        load_state_dict_checked(generator, payload['state_dict'], path, config_name)
    else:
        config = config if config is not None else default_config
        if config is None:
            raise CheckpointError(f"{path} is an official checkpoint without a config inside: pass config= "
                                  "(e.g. 'FFHQ_default', 'CATS_default', 'CARLA_default', 'GRAMHD256_FFHQ')")
        config, config_name = resolve_config(config)
        generator = build_generator(config)
        if isinstance(payload, OfficialEMA):
            copy_ema_shadow(_trainable(generator), payload.shadow(), path)
        elif isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
            load_state_dict_checked(generator, payload, path, config_name)
        else:
            raise CheckpointError(f"{path}: not a generator checkpoint (expected a state_dict of tensors, an "
                                  f"official ema.pth or one of our checkpoints; got {type(payload).__name__})")
    if not (isinstance(payload, OfficialEMA) or payload.get('kind') == 'ema'):
        sibling = official_ema_sibling(path)
        if sibling is not None:
            _apply_ema(generator, load_file(sibling), sibling)
    generator.config = config
    generator.config_name = config_name
    return generator.to(device).eval()
