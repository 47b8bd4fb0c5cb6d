"""One official GRAM-HD stage-2 iteration, replayed: ../shared/fixtures/official/gramhd_train_step_ffhq.

The fixture holds the official code's initial G (a frozen stage-1 GRAM plus the trainable feature heads and
super-resolution nets) and D (GRAM's encoder plus the PatchGAN, official names `patchgan.*`), GRAMHD256_FFHQ
shrunk through constructor arguments (case.json "overrides"), the latents and poses its step drew, and what
came out: every loss term, the renders and D outputs, clipped gradients, parameters after the step, the EMA.
`sr_gan3d.train_step(..., latents=, poses=)` replays it with those draws, on every stage-2 training path;
the rules are the fixture's own machine-readable `tolerances`.
"""
import copy
import json
from pathlib import Path

import pytest
import torch

from configs import get_config
from discriminators import build_discriminator
from generators import build_generator
from training.losses import r1_penalty
from training.sr_gan3d import train_step
from training.state import build_training_run

FIXTURE = Path(__file__).resolve().parents[2] / 'shared' / 'fixtures' / 'official' / 'gramhd_train_step_ffhq'
STAGE1_FILE = FIXTURE / 'gram_stage1' / 'step000000_generator.pth'

pytestmark = pytest.mark.skipif(
    not (FIXTURE / 'case.json').exists(),
    reason=f"official stage-2 train-step fixture not found at {FIXTURE} (it lives in the project's shared/ "
           "folder, beside a checkout; a user's clone has none)")

# Ours -> the official names of the logged loss terms (case.json d_loss_terms / g_loss_terms_splits).
D_TERMS = {'d_fake': 'fake_softplus', 'd_real': 'real_softplus', 'd_patch_fake': 'patch_fake',
           'd_patch_real': 'patch_real', 'r1': 'r1', 'd_pose_fake': 'pos_fake', 'd_pose_real': 'pos_real'}
G_TERMS = {'g_adv': 'main', 'g_patch': 'patch', 'g_pose': 'pos', 'g_cons_image': 'cons_image',
           'g_cons_maps': 'cons_maps'}


@pytest.fixture(autouse=True)
def native_convolution():
    """PyTorch's own CPU convolution kernels, as the fixture ran (see test_train_step_fixture.py for why)."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = previous


def fixture_config(case, gram_model_file=None):
    """GRAMHD256_FFHQ with the fixture's overrides applied (every one is listed in case.json). The stage-1
    file is left out unless given: the replay loads the whole G init, GRAM part included."""
    config = get_config('GRAMHD256_FFHQ')
    for override in case['overrides']:
        path = override['path'].split('.')
        if path == ['global', 'disable_scaler']:
            config['global']['disable_scaler'] = True
            continue
        if path == ['optimizer', 'betas']:
            config['optimizer']['betas'] = tuple(float(b) for b in override['used'])
            continue
        if path[-1] == 'gram_model_file':
            continue
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = override['used']
    config['generator']['kwargs']['gram_model_file'] = str(gram_model_file) if gram_model_file else None
    # Everything the official step used must now be what this config says.
    used = case['config_used']
    for section in ('optimizer', 'process'):
        for key, value in used[section].items():
            if key != 'kwargs':
                assert config[section][key] == pytest.approx(value) or tuple(config[section][key]) == tuple(value)
    assert config['process']['kwargs'] == pytest.approx(used['process']['kwargs'])
    assert config['generator']['super_resolution']['kwargs']['fg']['w_dim'] == \
        used['generator']['super_resolution']['kwargs']['fg']['w_dim']
    for key, value in used['generator']['kwargs'].items():
        if key != 'gram_model_file':
            assert config['generator']['kwargs'][key] == pytest.approx(value), key
    return config


def our_names(by_official_name):
    """The official D names its PatchGAN `patchgan`; ours is `patch_discriminator`."""
    return {name.replace('patchgan.', 'patch_discriminator.', 1): value for name, value in by_official_name.items()}


@pytest.fixture(scope='module')
def case():
    load = lambda name: torch.load(FIXTURE / name, map_location='cpu', weights_only=True)  # noqa: E731
    expected = load('expected.pt')
    for key in ('d_grads', 'd_params_after', 'd_sample_index', 'd_grads_r1_only'):
        expected[key] = our_names(expected[key])
    return dict(case=json.loads((FIXTURE / 'case.json').read_text()), inputs=load('inputs.pt'),
                expected=expected, generator=load('generator_init.pth'),
                discriminator=load('discriminator_init.pth'))


def is_frozen(name):
    return name.startswith('representation.') and '.output_feature.' not in name


def replay(case, training_path):
    """Build a run from the fixture's initial weights and run the step with its draws. Returns (values, run,
    post-clip grads as each optimizer saw them, the G and D forward outputs in call order)."""
    config = fixture_config(case['case'])
    run = build_training_run(copy.deepcopy(config), 'GRAMHD256_FFHQ', device='cpu', training_path=training_path)
    run.generator.load_state_dict(case['generator'], strict=True)
    run.discriminator.load_state_dict(case['discriminator'], strict=True)  # official `patchgan.*` names
    trainable = [p.detach() for p in run.generator.parameters() if p.requires_grad]
    for ema in (run.ema, run.ema2):  # the official shadows start equal to the trainable part of the init
        ema.load(trainable, 0, 'generator_init.pth')

    grads, outputs = {}, {'G': [], 'D': []}

    def recorder(name, module):
        def hook(optimizer, args, kwargs):
            grads[name] = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
        return hook
    run.optimizer_D.register_step_pre_hook(recorder('D', run.discriminator))
    run.optimizer_G.register_step_pre_hook(recorder('G', run.generator))
    run.generator.register_forward_hook(lambda module, args, out: outputs['G'].append(out))
    run.discriminator.register_forward_hook(lambda module, args, out: outputs['D'].append(out))

    inputs = case['inputs']
    values = train_step(run, inputs['real_images'], inputs['real_poses'], step=0,
                        latents=(inputs['z_D'], inputs['z_G']), poses=(inputs['poses_D'], inputs['poses_G']))
    return values, run, grads, outputs


def close(ours, ref, rtol):
    return abs(float(ours) - float(ref)) <= rtol * abs(float(ref))


def check_forward(ours, ref, tolerance, what):
    ours = ours.detach().reshape(ref.shape)
    worst = (ours - ref).abs().max().item()
    assert worst <= tolerance * ref.abs().max().item(), f"{what}: max |ours - official| {worst:.3g}"


def check_grads(ours, ref, sample_index, tolerance, global_tolerance, what):
    """Per tensor max|ours - ref| <= tolerance * max|ref|; over the model ||ours - ref|| <= global * ||ref||."""
    diff_sq, ref_sq = 0.0, 0.0
    assert set(ours) == set(ref), f"{what}: tensors with a gradient differ: {sorted(set(ours) ^ set(ref))[:4]}"
    for name, reference in ref.items():
        mine = ours[name]
        if name in sample_index:
            mine = mine.flatten()[sample_index[name]]
        mine = mine.reshape(reference.shape).float()
        reference = reference.float()
        worst = (mine - reference).abs().max().item()
        assert worst <= tolerance * reference.abs().max().item() + 1e-30, \
            f"{what} {name}: max |ours - official| {worst:.3g} of max {reference.abs().max().item():.3g}"
        diff_sq += (mine - reference).double().pow(2).sum().item()
        ref_sq += reference.double().pow(2).sum().item()
    assert diff_sq ** 0.5 <= global_tolerance * ref_sq ** 0.5, \
        f"{what}: relative L2 {diff_sq ** 0.5 / ref_sq ** 0.5:.3g}"


def check_params_in_lr(ours, ref, ref_grads, sample_index, lr, rules, what):
    """Per element |ours - ref| <= 0.5 lr, except where the reference gradient is within the gradient rule
    of 0 (Adam's first step moves a weight by about lr * sign(g)); at most 0.5% of elements beyond 0.01 lr."""
    beyond, total = 0, 0
    for name, reference in ref.items():
        mine = ours[name]
        if name in sample_index:
            mine = mine.flatten()[sample_index[name]]
        in_lr = (mine.reshape(reference.shape).float() - reference.float()).abs() / lr
        grad = ref_grads[name].float().abs()
        undetermined = grad <= rules['g_grads_tensor_max_abs_over_max_ref'] * grad.max()
        worst = in_lr.masked_fill(undetermined, 0).max().item()
        assert worst <= rules['params_after_max_in_lr'], f"{what} {name}: off by {worst:.3g} lr"
        beyond += int((in_lr > 0.01).sum())
        total += in_lr.numel()
    assert beyond <= rules['params_after_fraction_beyond_0p01_lr'] * total, \
        f"{what}: {beyond} of {total} elements beyond 0.01 lr"


@pytest.mark.parametrize('training_path', ['plain', 'fast', 'low_memory'])
def test_official_stage2_step(case, training_path, one_thread):
    expected, rules = case['expected'], case['case']['tolerances']
    values, run, grads, outputs = replay(case, training_path)

    # Loss terms. Ours logs the mean over the G splits, as the official g_log does.
    for ours, theirs in D_TERMS.items():
        rtol = rules['r1_rtol'] if ours == 'r1' else rules['losses_rtol']
        assert close(values[ours], expected['d_loss_terms'][theirs], rtol), \
            (ours, values[ours], float(expected['d_loss_terms'][theirs]))
    assert close(values['d_loss'], expected['d_log']['Total'], rules['losses_rtol'])
    splits = expected['g_loss_terms_splits']
    for ours, theirs in G_TERMS.items():
        assert close(values[ours], splits[theirs].mean(), rules['losses_rtol']), \
            (ours, values[ours], float(splits[theirs].mean()))
    assert close(values['g_cons'], expected['g_log']['Cons'], rules['losses_rtol'])
    assert close(values['g_loss'], expected['g_log']['Total'], rules['losses_rtol'])
    assert close(values['d_grad_norm'], expected['d_grad_norm_preclip'], rules['grad_norms_rtol'])
    assert close(values['g_grad_norm'], expected['g_grad_norm_preclip'], rules['grad_norms_rtol'])

    # Renders and D outputs, in call order: D step = two no-grad splits, then G step = two splits; D sees
    # the reals (with R1), the D step's fakes, then each G split's fakes.
    forward = rules['forward_max_abs_over_max_ref']
    (g_d_step, g_g_step), d_calls = (outputs['G'][:2], outputs['G'][2:]), outputs['D']
    assert len(g_g_step) == 2 and len(d_calls) == 4
    check_forward(torch.cat([out[0][0] for out in g_d_step]), expected['gen_images_D'], forward, 'HR fakes (D)')
    check_forward(torch.cat([out[0][1] for out in g_d_step]), expected['gen_lr_images_D'], forward, 'LR fakes (D)')
    check_forward(torch.cat([out[0][0] for out in g_g_step]), expected['gen_images_G'], forward, 'HR fakes (G)')
    check_forward(torch.cat([out[0][1] for out in g_g_step]), expected['gen_lr_images_G'], forward, 'LR fakes (G)')
    check_forward(torch.stack([out[0][2] for out in g_g_step]), expected['hr_maps_G'], forward, 'HR maps')
    check_forward(torch.stack([out[0][3] for out in g_g_step]), expected['lr_maps_G'], forward, 'LR maps')
    for index, (label, key) in enumerate((('real', 'd_real'), ('fake_D', 'd_fake'))):
        suffix = '' if label == 'real' else '_D'
        for position, name in enumerate(('pred', 'pose_pred', 'patch_pred')):
            check_forward(d_calls[index][position], expected[f'{key}_{name}{suffix}'], forward, f'D {label} {name}')
    for position, name in enumerate(('pred', 'pose_pred', 'patch_pred')):
        check_forward(torch.cat([call[position] for call in d_calls[2:]]), expected[f'd_fake_{name}_G'], forward,
                      f'D fake_G {name}')

    # Clipped gradients as each optimizer saw them; the frozen GRAM gets none.
    sample_index = expected['d_sample_index']
    check_grads(grads['D'], expected['d_grads'], sample_index, rules['d_grads_tensor_max_abs_over_max_ref'],
                rules['grads_global_rel_l2'], 'D grad')
    check_grads(grads['G'], expected['g_grads'], {}, rules['g_grads_tensor_max_abs_over_max_ref'],
                rules['grads_global_rel_l2'], 'G grad')
    assert not any(is_frozen(name) for name in grads['G'])

    # Parameters after the step and the EMA shadows, in units of the learning rates.
    optimizer = case['case']['config_used']['optimizer']
    d_params = {n: p.detach() for n, p in run.discriminator.named_parameters()}
    check_params_in_lr(d_params, expected['d_params_after'], expected['d_grads'], sample_index,
                       optimizer['disc_lr'], rules, 'D param')
    g_params = {n: p.detach() for n, p in run.generator.named_parameters()}
    check_params_in_lr(g_params, expected['g_params_after'], expected['g_grads'], {}, optimizer['gen_lr'], rules,
                       'G param')
    for ema in (run.ema, run.ema2):
        assert ema.num_updates == 1 and set(ema.names) == set(expected['ema_shadow'])
        check_params_in_lr(dict(zip(ema.names, ema.shadow)), expected['ema_shadow'], expected['g_grads'], {},
                           optimizer['gen_lr'], rules, 'EMA shadow')

    # The frozen GRAM part is bit-identical to the init.
    for name, tensor in case['generator'].items():
        if is_frozen(name):
            assert torch.equal(g_params[name], tensor), f"frozen {name} changed"


def test_r1_gradient_alone(case, one_thread):
    """The R1 term's own D gradient at init (1.4e-6 of the whole D gradient: only this sees it)."""
    config = fixture_config(case['case'])
    discriminator = build_discriminator(config)
    discriminator.load_state_dict(case['discriminator'], strict=True)
    real = case['inputs']['real_images'].clone().requires_grad_(True)
    logits, _, patches = discriminator(real)
    patch_lambda = config['process']['kwargs']['patch_lambda']
    penalty = r1_penalty(logits.reshape(-1) + patch_lambda * patches.mean(1), real,
                         config['process']['kwargs']['r1_lambda'], None)
    assert close(penalty.item(), case['expected']['d_loss_terms']['r1'], case['case']['tolerances']['r1_rtol'])
    penalty.backward()
    # A bias right before a logit does not move the input gradient: no R1 gradient at all.
    grads = {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in discriminator.named_parameters()}
    rules = case['case']['tolerances']
    reference = case['expected']['d_grads_r1_only']
    sample_index = case['expected']['d_sample_index']
    for name, ref in reference.items():
        mine = grads[name].flatten()[sample_index[name]] if name in sample_index else grads[name]
        ref = ref.float()
        worst = (mine.reshape(ref.shape) - ref).abs().max().item()
        assert worst <= rules['r1_only_grads_tensor_max_abs_over_max_ref'] * ref.abs().max().item() + 1e-30, name


def test_stage1_file_gives_the_ema_gram(case):
    """--gram_model_file on the official stage-1 folder: the GRAM part is the stage-1 EMA (as in
    generator_init.pth), not the raw weights, and is frozen; the feature heads stay trainable."""
    generator = build_generator(fixture_config(case['case'], gram_model_file=STAGE1_FILE))
    own = generator.state_dict()
    raw = torch.load(STAGE1_FILE, map_location='cpu', weights_only=True)
    frozen = [name for name in case['generator'] if is_frozen(name)]
    assert len(frozen) == 62
    for name in frozen:
        assert torch.equal(own[name], case['generator'][name]), f"{name} is not the stage-1 EMA"
    assert set(frozen) == set(raw) and any(not torch.equal(own[name], raw[name]) for name in frozen)
    trainable = {n for n, p in generator.named_parameters() if p.requires_grad}
    assert trainable == set(case['expected']['g_grads'])
