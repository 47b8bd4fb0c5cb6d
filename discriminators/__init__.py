"""Discriminators: GRAM's encoder discriminator (GRAM, GRAM-HD stage 1) and GRAM-HD's encoder + PatchGAN.

    build_discriminator(config) -> untrained discriminator for a config dict
"""
from .gram_discriminator import GramDiscriminator, GramEncoderDiscriminator
from .patch_discriminator import GramEncoderPatchDiscriminator

__all__ = ['GramDiscriminator', 'GramEncoderDiscriminator', 'GramEncoderPatchDiscriminator', 'build_discriminator']


def build_discriminator(config):
    """The discriminator named by config['discriminator']['class'], built with its kwargs."""
    section = config['discriminator']
    name, kwargs = section['class'], dict(section.get('kwargs', {}))
    if name in ('GramDiscriminator', 'GramEncoderDiscriminator'):
        return GramDiscriminator(**kwargs)
    if name == 'GramEncoderPatchDiscriminator':
        return GramEncoderPatchDiscriminator(**kwargs)
    raise ValueError(f"unknown discriminator class {name!r} in config; expected GramDiscriminator, "
                     "GramEncoderDiscriminator or GramEncoderPatchDiscriminator")
