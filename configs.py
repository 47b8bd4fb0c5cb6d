"""Training / rendering configurations as plain dicts.

Names, keys and values follow the official GRAM (`FFHQ_default`, `CATS_default`, `CARLA_default`) and
GRAM-HD (`GRAM64_*`, `GRAMHD*_*`) configs, so a researcher can read a number off a paper's repository
and find it under the same key here. Sections:

- `global`:        img_size, batch_size (per GPU), z_dist (always gaussian), optional disable_scaler
- `optimizer`:     gen_lr, disc_lr, betas, grad_clip, optional sampling_network_lr / mapping_network_lr
                   (official) and sigma_lr (the σ heads; not official)
- `process`:       loss weights (`kwargs`): batch_split, pos_lambda, real_pos_lambda, r1_lambda, ...
- `generator`:     kwargs (z_dim, img_size, camera prior), `representation` (the two MLPs),
                   `renderer` (levels, compositing), and for GRAM-HD `super_resolution`; not official,
                   for the demo configs: renderer view_dependence (False: colours ignore the view) and
                   representation sigma_bias_init (added to the first σ head's bias)
- `discriminator`, `dataset`, `camera` (fov in degrees, ray_start, ray_end)

Use `get_config(name)`, which returns a deep copy that callers may edit freely; `apply_overrides` sets
`key.path=value` items on it (train.py --set).
"""
import ast
import copy
import math

_PI = math.pi

# The face camera prior of pi-GAN/GRAM: yaw ~ N(pi/2, 0.3), pitch ~ N(pi/2, 0.155).
_FACE_PRIOR = {
    'z_dim': 256,
    'h_stddev': 0.3,
    'v_stddev': 0.155,
    'h_mean': _PI * 0.5,
    'v_mean': _PI * 0.5,
    'sample_dist': 'gaussian',
}

_FACE_CAMERA = {'fov': 12, 'ray_start': 0.88, 'ray_end': 1.12}


def _gram_representation(hidden_dim_sample=128, normalize=0.24, center=(0, 0, -1.5)):
    return {
        'class': 'gram',
        'kwargs': {
            'hidden_dim': 256,
            'normalize': normalize,
            'sigma_clamp_mode': 'softplus',
            'rgb_clamp_mode': 'widen_sigmoid',
            'hidden_dim_sample': hidden_dim_sample,
            'layer_num_sample': 3,
            'center': center,
            'init_radius': 0,
        },
    }


def _manifold_renderer(cls='manifold_renderer', num_manifolds=24, levels_start=23, levels_end=8,
                       delta_alpha=0.04, white_back=False, background=True):
    return {
        'class': cls,
        'kwargs': {
            'num_samples': 64,
            'num_manifolds': num_manifolds,
            'levels_start': levels_start,
            'levels_end': levels_end,
            'delta_alpha': delta_alpha,
            # The official default; the renderer uses delta_alpha instead when there is no background plane.
            'delta_final': 1e10,
            'last_back': False,
            'white_back': white_back,
            'background': background,
        },
    }


def _gram_config(img_size, batch_size, batch_split, real_pos_lambda, grad_clip, hidden_dim_sample,
                 dataset, discriminator='GramDiscriminator', gen_lr=2e-5):
    return {
        'global': {'img_size': img_size, 'batch_size': batch_size, 'z_dist': 'gaussian'},
        'optimizer': {'gen_lr': gen_lr, 'disc_lr': 2e-4, 'betas': (0, 0.9), 'grad_clip': grad_clip},
        'process': {
            'class': 'Gan3DProcess',
            'kwargs': {'batch_split': batch_split, 'real_pos_lambda': real_pos_lambda, 'r1_lambda': 1.0,
                       'pos_lambda': 15.0},
        },
        'generator': {
            'class': 'GramGenerator',
            'kwargs': dict(_FACE_PRIOR, img_size=img_size),
            'representation': _gram_representation(hidden_dim_sample=hidden_dim_sample),
            'renderer': _manifold_renderer(),
        },
        'discriminator': {'class': discriminator, 'kwargs': {'img_size': img_size}},
        'dataset': {'class': dataset, 'kwargs': {'img_size': img_size, 'real_pose': True}},
        'camera': dict(_FACE_CAMERA),
    }


# ---------------------------------------------------------------------------------------------------
# GRAM (microsoft/GRAM configs.py)

FFHQ_default = _gram_config(img_size=256, batch_size=4, batch_split=4, real_pos_lambda=15.0, grad_clip=1.0,
                            hidden_dim_sample=128, dataset='FFHQ')

CATS_default = _gram_config(img_size=256, batch_size=2, batch_split=2, real_pos_lambda=30.0, grad_clip=1.0,
                            hidden_dim_sample=64, dataset='CATS')

CARLA_default = {
    'global': {'img_size': 128, 'batch_size': 4, 'z_dist': 'gaussian'},
    'optimizer': {'gen_lr': 2e-5, 'disc_lr': 2e-4, 'sampling_network_lr': 2e-6, 'betas': (0, 0.9),
                  'grad_clip': 0.3},
    'process': {
        'class': 'Gan3DProcess',
        'kwargs': {'batch_split': 4, 'real_pos_lambda': 15.0, 'r1_lambda': 1.0, 'pos_lambda': 15.0},
    },
    'generator': {
        'class': 'GramGenerator',
        'kwargs': {
            'z_dim': 256,
            'img_size': 128,
            'h_stddev': _PI,
            'v_stddev': _PI * 42.5 / 180,
            'h_mean': _PI * 0.5,
            'v_mean': _PI * 42.5 / 180,
            'sample_dist': 'spherical_uniform',
        },
        'representation': _gram_representation(hidden_dim_sample=256, normalize=2, center=(0, 0, 0)),
        'renderer': _manifold_renderer(num_manifolds=48, levels_start=35, levels_end=5, delta_alpha=0.02,
                                       white_back=True, background=False),
    },
    'discriminator': {'class': 'GramDiscriminator', 'kwargs': {'img_size': 128}},
    'dataset': {'class': 'CARLA', 'kwargs': {'img_size': 128, 'real_pose': True}},
    'camera': {'fov': 30, 'ray_start': 0.7, 'ray_end': 1.3},
}

# ---------------------------------------------------------------------------------------------------
# GRAM-HD stage 1 (JeffreyXiang/GRAM-HD configs.py): GRAM at 64x64.

GRAM64_FFHQ = _gram_config(img_size=64, batch_size=8, batch_split=1, real_pos_lambda=15.0, grad_clip=0.3,
                           hidden_dim_sample=128, dataset='FFHQ', discriminator='GramEncoderDiscriminator')
GRAM64_AFHQ = copy.deepcopy(GRAM64_FFHQ)
GRAM64_AFHQ['dataset']['class'] = 'AFHQCats'

# ---------------------------------------------------------------------------------------------------
# GRAM-HD stage 2: super-resolution of the radiance manifolds.

# Up-sampling channel chains per output size (scale factor = img_size / 64).
_HD_FG_UP_CHANNELS = {256: [64, 64], 512: [64, 64, 32], 1024: [64, 64, 32, 16]}
_HD_BG_UP_CHANNELS = {256: [64, 32], 512: [64, 32, 16], 1024: [64, 32, 16, 8]}
_HD_R1 = {256: 3.0, 512: 5.0, 1024: 10.0}
_HD_CONS = {256: 1.0, 512: 3.0, 1024: 10.0}
_HD_BATCH = {256: 4, 512: 2, 1024: 2}


def _gramhd_config(img_size, dataset):
    batch = _HD_BATCH[img_size]
    return {
        'global': {'img_size': img_size, 'batch_size': batch, 'z_dist': 'gaussian'},
        'optimizer': {'gen_lr': 2e-4, 'disc_lr': 2e-4, 'betas': (0, 0.9), 'grad_clip': 0.3},
        'process': {
            'class': 'SRGan3DProcess',
            'kwargs': {'batch_split': batch, 'pos_lambda': 15.0, 'real_pos_lambda': 15.0,
                       'r1_lambda': _HD_R1[img_size], 'cons_lambda': _HD_CONS[img_size], 'use_patch_d': True,
                       'patch_lambda': 0.1, 'r1_patch': True},
        },
        'generator': {
            'class': 'GramHDGenerator',
            'kwargs': dict(_FACE_PRIOR, img_size=img_size, lr_img_size=64, feature_dim=32,
                           gram_model_file=None),
            'representation': _gram_representation(hidden_dim_sample=128),
            'super_resolution': {
                'class': 'styleesrgan',
                'kwargs': {
                    'fg': {'w_dim': 256, 'nf': 64, 'nb': 8, 'gc': 32, 'up_channels': _HD_FG_UP_CHANNELS[img_size],
                           'to_rgb_ks': 1, 'use_pixel_shuffle': True},
                    'bg': {'nf': 64, 'nb': 4, 'gc': 32, 'up_channels': _HD_BG_UP_CHANNELS[img_size],
                           'use_pixel_shuffle': False, 'global_residual': True},
                },
            },
            'renderer': _manifold_renderer(cls='manifold_sr_renderer'),
        },
        # The official config stores nn.Identity itself; a name keeps configs plain data.
        'discriminator': {'class': 'GramEncoderPatchDiscriminator',
                          'kwargs': {'img_size': img_size, 'norm_layer': 'Identity'}},
        'dataset': {'class': dataset, 'kwargs': {'img_size': img_size, 'real_pose': True}},
        'camera': dict(_FACE_CAMERA),
    }


GRAMHD256_FFHQ = _gramhd_config(256, 'FFHQ')
GRAMHD512_FFHQ = _gramhd_config(512, 'FFHQ')
GRAMHD1024_FFHQ = _gramhd_config(1024, 'FFHQ')
GRAMHD256_AFHQ = _gramhd_config(256, 'AFHQCats')
GRAMHD512_AFHQ = _gramhd_config(512, 'AFHQCats')

# ---------------------------------------------------------------------------------------------------
# Small configs for tests and CPU smoke runs. Same code paths as the official ones, narrow networks.

TINY_GRAM = _gram_config(img_size=16, batch_size=2, batch_split=1, real_pos_lambda=15.0, grad_clip=0.3,
                         hidden_dim_sample=16, dataset='FFHQ')
TINY_GRAM['generator']['kwargs']['z_dim'] = 32
TINY_GRAM['generator']['representation']['kwargs']['hidden_dim'] = 32
TINY_GRAM['generator']['renderer']['kwargs'].update(num_samples=24, num_manifolds=8, levels_start=23,
                                                     levels_end=8)
# At 16x16 the official channel ladder gives 400-channel blocks (8.7M parameters); tests need far less.
TINY_GRAM['discriminator']['kwargs']['max_channels'] = 32

TINY_CARLA = copy.deepcopy(CARLA_default)
TINY_CARLA['global'].update(img_size=16, batch_size=2)
TINY_CARLA['process']['kwargs']['batch_split'] = 1
TINY_CARLA['generator']['kwargs'].update(z_dim=32, img_size=16)
TINY_CARLA['generator']['representation']['kwargs'].update(hidden_dim=32, hidden_dim_sample=16)
TINY_CARLA['generator']['renderer']['kwargs'].update(num_samples=24, num_manifolds=8)
TINY_CARLA['discriminator']['kwargs'].update(img_size=16, max_channels=32)
TINY_CARLA['dataset']['kwargs']['img_size'] = 16

# GRAM-HD at 64x64 from 16x16 textures (x4, the 256 layout's up-sampling chain), narrow networks.
TINY_GRAMHD = _gramhd_config(256, 'FFHQ')
TINY_GRAMHD['global'].update(img_size=64, batch_size=2)
TINY_GRAMHD['process']['kwargs']['batch_split'] = 1
TINY_GRAMHD['generator']['kwargs'].update(z_dim=32, img_size=64, lr_img_size=16, feature_dim=8)
TINY_GRAMHD['generator']['representation']['kwargs'].update(hidden_dim=32, hidden_dim_sample=16)
TINY_GRAMHD['generator']['renderer']['kwargs'].update(num_samples=24, num_manifolds=8)
TINY_GRAMHD['generator']['super_resolution']['kwargs'] = {
    # w_dim is the SR mapping network's input (z); its styles are 16 + 16 | 16 | 16 = 64 wide.
    'fg': {'w_dim': 32, 'nf': 16, 'nb': 1, 'gc': 8, 'up_channels': [16, 16], 'to_rgb_ks': 1,
           'use_pixel_shuffle': True},
    'bg': {'nf': 16, 'nb': 1, 'gc': 8, 'up_channels': [16, 8], 'use_pixel_shuffle': False, 'global_residual': True},
}
TINY_GRAMHD['discriminator']['kwargs']['img_size'] = 64
TINY_GRAMHD['dataset']['kwargs']['img_size'] = 64

# ---------------------------------------------------------------------------------------------------
# The procedural head dataset (`preprocess_dataset.py --cate synthetic`, FFHQ layout and camera prior).

# GPU: GRAM64_FFHQ on the synthetic heads.
SYNTH64 = copy.deepcopy(GRAM64_FFHQ)

# CPU: learns visibly within an hour on 2 cores. Narrower networks, fewer manifolds, 32x32 images, and
# pi-GAN's faster generator learning rate; the conventions (camera, levels range, background plane,
# compositing) are GRAM's.
SYNTH_CPU = _gram_config(img_size=32, batch_size=8, batch_split=1, real_pos_lambda=15.0, grad_clip=0.3,
                         hidden_dim_sample=32, dataset='FFHQ', discriminator='GramEncoderDiscriminator',
                         gen_lr=6e-5)
SYNTH_CPU['generator']['kwargs']['z_dim'] = 64
SYNTH_CPU['generator']['representation']['kwargs']['hidden_dim'] = 64
SYNTH_CPU['generator']['renderer']['kwargs'].update(num_samples=32, num_manifolds=12)
SYNTH_CPU['discriminator']['kwargs']['max_channels'] = 64

# SYNTH_CPU with the two changes that keep the subject in front of GRAM's background plane (README "Learning
# geometry"): a pose prior twice as wide (train on procedural heads made with --yaw_std 0.6 --pitch_std 0.3)
# and manifolds that start half-opaque; plus StyleGAN's minibatch-std feature in the discriminator, against
# the mode collapse a batch of 8 shows without it. None of them is official.
SYNTH_CPU_WIDE = copy.deepcopy(SYNTH_CPU)
SYNTH_CPU_WIDE['generator']['kwargs'].update(h_stddev=0.6, v_stddev=0.3)
SYNTH_CPU_WIDE['generator']['representation']['kwargs']['sigma_bias_init'] = 8.0
SYNTH_CPU_WIDE['discriminator']['kwargs']['minibatch_std_group'] = 4

# The shipped model's recipe (run G4 of README "Learning geometry"): SYNTH_CPU_WIDE with the manifold network
# learning 10x slower (CARLA_default's ratio to the generator lr), which keeps the surfaces where the
# half-opaque initialisation put them while the colours form, and the pose loss on the fakes at x5 instead of
# the official x15: at x15 the pose term is most of G's loss and every latent gives the same blob for the
# first few thousand steps. The discriminator's pose loss on real images stays at x15.
SYNTH_CPU_HEADS = copy.deepcopy(SYNTH_CPU_WIDE)
SYNTH_CPU_HEADS['optimizer']['sampling_network_lr'] = 6e-6
SYNTH_CPU_HEADS['process']['kwargs']['pos_lambda'] = 5.0

# GRAM-HD stage 2 on the procedural heads, CPU: the shipped SYNTH_CPU_HEADS model (32x32) frozen as the
# GRAM part, rendered at 64x64 and its manifolds super-resolved x2 to 128x128 (S6; S1-S5 used 32x32 x4). The
# losses, G lr, clipping, R1, batch of 4 and PatchGAN are GRAMHD256's, with the changes below; the SR
# nets and the encoder D are narrow so that a step takes seconds on 2 cores. Train on heads rendered at
# 128x128 with the stage-1 data's pose prior (--yaw_std 0.6 --pitch_std 0.3). It learns texture and keeps
# its LR image, but not yet to the targets: README "Stage 2 on the procedural heads".
SYNTH_CPU_HD = _gramhd_config(256, 'FFHQ')
SYNTH_CPU_HD['global']['img_size'] = 128
SYNTH_CPU_HD['process']['kwargs']['batch_split'] = 1  # the official 4 bounds GPU memory; a CPU has plenty
# README "Learning super-resolution" (runs S1-S5): with the official weights the pose terms are most of G's
# loss, and the PatchGAN's x0.1 share, G's only view of the SR nets' pixel-scale artefacts (the consistency
# loss cannot see them: they vanish in the x4 bicubic down-sampling), is drowned. Here: consistency x10
# (GRAMHD1024's value), PatchGAN x1, pose terms x1.
SYNTH_CPU_HD['process']['kwargs'].update(cons_lambda=10.0, patch_lambda=1.0, pos_lambda=1.0, real_pos_lambda=1.0)
# S6: consistency x100. At x10 the HR image drifted from the LR image as D asked for detail (cross-resolution
# 30.1 -> 24.2 dB over S5's 3750 steps); x100 held it at 32.9 dB while the image SWD fell as fast.
SYNTH_CPU_HD['process']['kwargs']['cons_lambda'] = 100.0
# S5: D's lr x5 (1e-3); with the official 2e-4 neither D head left chance in 1000 steps (S4).
SYNTH_CPU_HD['optimizer']['disc_lr'] = 1e-3
# S6: the GRAM part rendered at 64^2 (it renders any size from its manifolds) and super-resolved x2: the HR
# geometry is then the 64^2 intersections up-sampled, and the SR net has half the distance to bridge.
SYNTH_CPU_HD['generator']['kwargs'].update(SYNTH_CPU_HEADS['generator']['kwargs'], img_size=128, lr_img_size=64,
                                           feature_dim=8)
SYNTH_CPU_HD['generator']['representation'] = copy.deepcopy(SYNTH_CPU_HEADS['generator']['representation'])
SYNTH_CPU_HD['generator']['renderer']['kwargs'] = copy.deepcopy(SYNTH_CPU_HEADS['generator']['renderer']['kwargs'])
SYNTH_CPU_HD['generator']['super_resolution']['kwargs'] = {
    # w_dim = z_dim (the SR mapping network's input); styles 16 + 2 x 16 = 48 wide.
    # global_residual (not official): the SR nets start as the bicubic up-sampling of the LR textures (S4).
    # one up-sampling stage (x2; S1-S5: [16, 16] and [16, 8] for x4)
    'fg': {'w_dim': 64, 'nf': 16, 'nb': 1, 'gc': 8, 'up_channels': [16], 'to_rgb_ks': 1,
           'use_pixel_shuffle': True, 'global_residual': True},
    'bg': {'nf': 16, 'nb': 1, 'gc': 8, 'up_channels': [16], 'use_pixel_shuffle': False, 'global_residual': True},
}
SYNTH_CPU_HD['discriminator']['kwargs'].update(img_size=128, max_channels=32)
SYNTH_CPU_HD['dataset']['kwargs']['img_size'] = 128

_CONFIG_NAMES = [
    'FFHQ_default', 'CATS_default', 'CARLA_default',
    'GRAM64_FFHQ', 'GRAM64_AFHQ',
    'GRAMHD256_FFHQ', 'GRAMHD512_FFHQ', 'GRAMHD1024_FFHQ', 'GRAMHD256_AFHQ', 'GRAMHD512_AFHQ',
    'SYNTH64', 'SYNTH_CPU', 'SYNTH_CPU_WIDE', 'SYNTH_CPU_HEADS', 'SYNTH_CPU_HD',
    'TINY_GRAM', 'TINY_CARLA', 'TINY_GRAMHD',
]


def config_names():
    """Names accepted by `get_config`, in a stable order."""
    return list(_CONFIG_NAMES)


# Keys a config may hold without every config having them (read with a default where they are used).
OPTIONAL_KEYS = ('global.disable_scaler', 'optimizer.sampling_network_lr', 'optimizer.mapping_network_lr',
                 'optimizer.sigma_lr', 'generator.renderer.kwargs.view_dependence',
                 'generator.representation.kwargs.sigma_bias_init', 'discriminator.kwargs.minibatch_std_group')


def apply_overrides(config, items):
    """Set `key.path=value` items (values are Python literals: 1e-3, False, 'x', [1, 2]) in `config`.

    Only keys the config has, or one of OPTIONAL_KEYS, can be set, so a typo is an error, not a silently
    ignored setting. Returns the config; raises ValueError naming the item and what was expected.
    """
    for item in items:
        path, sep, text = str(item).partition('=')
        keys = [key for key in path.strip().split('.') if key]
        if not sep or not keys:
            raise ValueError(f"--set {item}: expected KEY.PATH=VALUE, e.g. optimizer.gen_lr=1e-4")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"--set {item}: the value {text.strip()} is not a Python literal "
                             "(numbers, True/False, quoted strings, lists)") from None
        section = config
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(section.get(key), dict):
                known = ', '.join(k for k, v in section.items() if isinstance(v, dict))
                raise ValueError(f"--set {item}: no section {'.'.join(keys[:depth + 1])} in the config; "
                                 f"sections there: {known}")
            section = section[key]
        if keys[-1] not in section and '.'.join(keys) not in OPTIONAL_KEYS:
            raise ValueError(f"--set {item}: the config has no key {'.'.join(keys)}; keys there: "
                             f"{', '.join(section)}; optional keys: {', '.join(OPTIONAL_KEYS)}")
        section[keys[-1]] = value
    return config


def get_config(name):
    """Return a deep copy of the config called `name`; unknown names raise a KeyError listing the known ones."""
    if name not in _CONFIG_NAMES:
        raise KeyError(f"unknown config {name!r}; known configs: {', '.join(_CONFIG_NAMES)}")
    return copy.deepcopy(globals()[name])
