"""FID / KID / IS on torch-fidelity's Inception: image sets, content-keyed feature caches, the protocol.

Engine: torch-fidelity's `inception-v3-compat` extractor (the TF-2015 Inception port that GRAM and GRAM-HD
measured with) gives 2048-d pool features and unbiased logits; KID and IS are torch-fidelity's functions
on them, FID is computed exactly from the same features (`frechet_distance`, equal to torch-fidelity's to
rounding). Images reach the extractor as uint8 tensors:
- real images: every png/jpg/jpeg under the folder (recursive, hidden entries skipped), converted to RGB,
  centre-cropped to a square and resized with PIL LANCZOS to the evaluation size (GRAM-HD's eval.py);
- fake images: the *.png files of a folder (not recursive), never resized: they must already be rendered
  at the evaluation size, which is why a wrong --image_size is an error and not a silent resize.

Features are cached as `<cache root>/<prefix>-<key>.pt`, where key hashes the folder listing (relative
names, sizes, modification times), the selection, the evaluation size and resize rule, the extractor and
the sha256 of its weights, and the torch-fidelity version. A changed folder therefore gets a new name and
can never reuse stale features (torch-fidelity's own cache is keyed by a user-given name alone).
"""
import hashlib
import json
import os
import re
import sys

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from utils.atomic import atomic_open
from utils.checkpoints import file_sha256
from utils.images import read_rgb

REAL_EXTENSIONS = ('.png', '.jpg', '.jpeg')
FAKE_EXTENSIONS = ('.png',)
FEATURE_EXTRACTOR = 'inception-v3-compat'
# Pool features (FID, KID) and unbiased logits (IS): torch-fidelity's default layers for these metrics.
FEATURE_LAYERS = ('2048', 'logits_unbiased')
FID_FORMULA = ('|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2) on the 2048-d pool features, unbiased '
               'covariances, float64; tr sqrt exact via SVD (small sets) or symmetric eigvalsh (large sets)')
# torch-fidelity's defaults, written out so that they are part of the recorded protocol.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
ISC_SPLITS = 10
RNG_SEED = 2020
# Subsets drawn from larger folders: the first N of this seeded permutation of the sorted file list.
SELECTION_SEED = 0
REAL_RESIZE = 'centre crop to a square, then PIL LANCZOS resize to image_size x image_size (RGB, uint8)'
FAKE_RESIZE = 'none (fakes must already be image_size x image_size)'
INCEPTION_INPUT = ('torch-fidelity inception-v3-compat: uint8 input, TF1-compatible bilinear resize to '
                   '299x299 inside the extractor (no antialiasing)')
DEFAULT_WEIGHTS_NAME = 'weights-inception-2015-12-05-6726825d.pth'
# Keys whose presence and shape identify an inception-v3-compat state_dict (checked before torch-fidelity
# loads the file with an unrestricted unpickler).
_WEIGHTS_SIGNATURE = {'Conv2d_1a_3x3.conv.weight': (32, 3, 3, 3), 'fc.weight': (1008, 2048)}


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file or value and what was expected."""


# --------------------------------------------------------------------------------------------------------
# Folders


def list_images(folder, extensions, recursive, role):
    """Sorted absolute paths of the images under `folder` with one of `extensions` (case-insensitive).

    Hidden files and folders (a leading '.') are skipped. Raises EvaluationError for a missing folder or
    one without matching images, naming the folder and the extensions looked for.
    """
    if not folder:
        raise EvaluationError(f"no {role} images folder given")
    if not os.path.isdir(folder):
        raise EvaluationError(f"{role} images folder not found: {folder}")
    found, others = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.')) if recursive else []
        for name in files:
            if name.startswith('.'):
                continue
            path = os.path.join(root, name)
            (found if os.path.splitext(name)[1].lower() in extensions else others).append(path)
    if not found:
        patterns = ', '.join('*' + ext for ext in extensions)
        where = 'under' if recursive else 'directly in'
        detail = f"; it holds {len(others)} other file(s), e.g. {sorted(others)[0]}" if others else ""
        raise EvaluationError(f"no {role} images ({patterns}) found {where} {folder}{detail}")
    return sorted(os.path.abspath(path) for path in found)


def files_fingerprint(files, root):
    """sha256 of the listing: relative name, size and modification time (ns) of every file."""
    digest = hashlib.sha256()
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def select_files(files, requested, role, flag, folder):
    """All files (requested None), or the first `requested` of a seeded permutation (kept in sorted order).

    Returns (files, description of the selection).
    """
    if requested is None or requested == len(files):
        return list(files), f'all {len(files)} images (sorted by path)'
    if requested < 1:
        raise EvaluationError(f"{flag} must be >= 1, got {requested}")
    if requested > len(files):
        raise EvaluationError(f"{flag} {requested} but {folder} holds only {len(files)} {role} image(s)")
    order = np.random.default_rng(SELECTION_SEED).permutation(len(files))[:requested]
    return ([files[i] for i in sorted(order)],
            f'{requested} of {len(files)} images: the first {requested} of a numpy default_rng({SELECTION_SEED}) '
            'permutation of the sorted paths')


def check_fake_sizes(files, image_size):
    """The common square size of the fake images; errors name the offending file.

    Reads image headers only. Mixed sizes, non-square images and a size other than `image_size` (when
    given) are errors: fakes are never resized, they must be rendered at the evaluation resolution.
    """
    first_path, first_size = None, None
    for path in files:
        try:
            with Image.open(path) as image:
                size = image.size
        except OSError as error:
            raise EvaluationError(f"cannot read fake image {path}: {error}") from error
        if first_size is None:
            first_path, first_size = path, size
        elif size != first_size:
            raise EvaluationError(f"fake images have mixed sizes: {first_path} is {first_size[0]}x{first_size[1]} "
                                  f"but {path} is {size[0]}x{size[1]}; render all fakes at one resolution")
    width, height = first_size
    if width != height:
        raise EvaluationError(f"fake images must be square, {first_path} is {width}x{height}")
    if image_size is not None and width != image_size:
        raise EvaluationError(f"fake images are {width}x{height} (e.g. {first_path}) but --image_size is "
                              f"{image_size}; fakes are never resized: pass --image_size {width} (the model "
                              f"resolution) or render the fakes at {image_size}x{image_size}")
    return width


def prepare_real_image(image, image_size):
    """8-bit RGB PIL image (utils.images.read_rgb) -> centre-cropped square, LANCZOS-resized to image_size
    (GRAM-HD's preprocessing)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        image = image.resize((image_size, image_size), Image.LANCZOS)
    return image


def _to_tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class _ImageFiles(Dataset):
    """uint8 [3, S, S] tensors of a list of image files; subclasses say how a file becomes S x S."""

    def __init__(self, files, image_size):
        self.files = list(files)
        self.image_size = int(image_size)

    def __len__(self):
        return len(self.files)


class RealImages(_ImageFiles):
    """Real images, prepared on the fly (the features are what gets cached)."""

    def __getitem__(self, index):
        path = self.files[index]
        try:
            prepared = prepare_real_image(read_rgb(path), self.image_size)
        except (OSError, ValueError, SyntaxError) as error:
            raise EvaluationError(f"cannot read real image {path}: {error}") from error
        return _to_tensor(prepared)


class FakeImages(_ImageFiles):
    """Fake images, which must already be S x S."""

    def __getitem__(self, index):
        path = self.files[index]
        try:
            rgb = read_rgb(path)
        except (OSError, ValueError, SyntaxError) as error:
            raise EvaluationError(f"cannot read fake image {path}: {error}") from error
        if rgb.size != (self.image_size, self.image_size):  # the folder changed since it was checked
            raise EvaluationError(f"fake image {path} is {rgb.size[0]}x{rgb.size[1]}, expected "
                                  f"{self.image_size}x{self.image_size}")
        return _to_tensor(rgb)


class ImageSet:
    """One side of a comparison: the selected files, where they came from, and what identifies them."""

    def __init__(self, role, files, source, available, selection, fingerprint, cache_prefix, reuse_cache):
        self.role = role
        self.files = list(files)
        self.source = source
        self.available = available
        self.selection = selection
        self.fingerprint = fingerprint
        # None: features are not cached (fakes that are re-rendered for every run anyway).
        self.cache_prefix = None if cache_prefix is None else sanitize_name(cache_prefix)
        self.reuse_cache = bool(reuse_cache)

    def __len__(self):
        return len(self.files)

    @property
    def resize(self):
        return REAL_RESIZE if self.role == 'real' else FAKE_RESIZE

    def dataset(self, image_size):
        return (RealImages if self.role == 'real' else FakeImages)(self.files, image_size)

    def key_fields(self, protocol_key):
        """Everything the features of this set depend on (hashed into the cache name)."""
        selected = '\n'.join(os.path.relpath(path, self.source) for path in self.files)
        return dict(protocol_key, role=self.role, fingerprint=self.fingerprint, selection=self.selection,
                    files=hashlib.sha256(selected.encode()).hexdigest(), resize=self.resize)

    def cache_name(self, protocol_key):
        """`<prefix>-<16 hex>`: the prefix is for humans, the hash decides whether features are reusable."""
        if self.cache_prefix is None:
            return None
        fields = self.key_fields(protocol_key)
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.cache_prefix}-{key}"


def sanitize_name(name):
    """A cache-name prefix safe as a file name (GRAM-HD derived it from the folder path, '/' -> '_')."""
    cleaned = re.sub(r'[^A-Za-z0-9._-]+', '_', str(name)).strip('._')
    return cleaned or 'images'


def real_image_set(folder, num_real=None, cache_name=None, reuse_cache=False, flag='--num_real'):
    """Reals under `folder`; the cache prefix defaults to the folder path (GRAM-HD's default name)."""
    files = list_images(folder, REAL_EXTENSIONS, recursive=True, role='real')
    selected, selection = select_files(files, num_real, 'real', flag, folder)
    return ImageSet('real', selected, os.path.abspath(folder), len(files), selection,
                    files_fingerprint(files, folder), cache_name or folder, reuse_cache)


def fake_image_set(folder, num_fake=None, cache_name=None, reuse_cache=False, files=None, flag='--num_fake',
                   cache=True):
    """Fakes from a folder (its *.png), or from an explicit list `files` inside it (freshly rendered).

    `cache=False` keeps torch-fidelity from caching their features at all.
    """
    if files is None:
        files = list_images(folder, FAKE_EXTENSIONS, recursive=False, role='fake')
    selected, selection = select_files(files, num_fake, 'fake', flag, folder)
    prefix = (cache_name or folder) if cache else None
    return ImageSet('fake', selected, os.path.abspath(folder), len(files), selection,
                    files_fingerprint(files, folder), prefix, reuse_cache)


# --------------------------------------------------------------------------------------------------------
# Feature extractor weights


def _load_state_dict(path):
    try:
        # Memory-mapped: only the two signature tensors are actually read.
        return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except RuntimeError as error:
        if 'mmap' not in str(error):
            raise
        # Files in the legacy (pre-zip) format cannot be memory-mapped; read them whole.
        return torch.load(path, map_location='cpu', weights_only=True)


def weights_identity(path):
    """{'path', 'sha256'} of a local inception-v3-compat weights file, after checking what it holds.

    torch-fidelity reads the file with an unrestricted unpickler; reading it first with weights_only=True
    refuses a file that is not a plain state_dict, and the signature check turns a wrong file into a clear
    error instead of a long list of missing keys. Without a path, torch-fidelity downloads its weights.
    """
    if path is None:
        # What torch-fidelity would load: its earlier download in the torch hub cache, when present.
        downloaded = os.path.join(torch.hub.get_dir(), 'checkpoints', DEFAULT_WEIGHTS_NAME)
        if os.path.isfile(downloaded):
            return dict(weights_identity(downloaded), source='torch-fidelity download (torch hub cache)')
        return {'path': None, 'sha256': None,
                'source': f'torch-fidelity download ({DEFAULT_WEIGHTS_NAME}, TF 2015-12-05 Inception port)'}
    if not os.path.isfile(path):
        raise EvaluationError(f"--feature_extractor_weights file not found: {path}")
    try:
        state = _load_state_dict(path)
    except Exception as error:  # any unreadable file: re-raised with the path, original chained
        raise EvaluationError(f"--feature_extractor_weights {path} is not a readable PyTorch state_dict of "
                              f"tensors: {error}") from error
    if not isinstance(state, dict):
        raise EvaluationError(f"--feature_extractor_weights {path} holds a {type(state).__name__}, expected the "
                              f"state_dict of torch-fidelity's {FEATURE_EXTRACTOR} extractor")
    for key, shape in _WEIGHTS_SIGNATURE.items():
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            found = 'missing' if value is None else f"shape {tuple(getattr(value, 'shape', ()))}"
            raise EvaluationError(f"--feature_extractor_weights {path} is not an {FEATURE_EXTRACTOR} state_dict: "
                                  f"{key!r} should have shape {shape} ({found})")
    return {'path': os.path.abspath(path), 'sha256': file_sha256(path), 'source': 'local file'}


def torch_fidelity_version():
    import torch_fidelity
    return torch_fidelity.__version__


# --------------------------------------------------------------------------------------------------------
# Features


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


def feature_cache_file(cache_root, cache_name):
    """Path of the cached features of one image set: {'fields': key fields, 'features': {layer: [N, D]}}."""
    return os.path.join(cache_root, f"{cache_name}.pt")


# Extractors already built in this process, by (weights identity, device): building one reads ~95 MB.
_EXTRACTORS = {}


def create_extractor(weights, device):
    """torch-fidelity's InceptionV3 (inception-v3-compat) on `device`, giving the FID/KID and IS layers."""
    from torch_fidelity import FeatureExtractorInceptionV3

    key = (weights['sha256'] or weights['source'], str(torch.device(device)))
    if key in _EXTRACTORS:
        return _EXTRACTORS[key]
    try:
        extractor = FeatureExtractorInceptionV3(FEATURE_EXTRACTOR, list(FEATURE_LAYERS),
                                                feature_extractor_weights_path=weights['path'], verbose=False)
    except OSError as error:  # urllib's URLError is an OSError: no internet for the default weights
        if weights['path'] is not None:
            raise
        raise EvaluationError(f"cannot download the Inception weights ({DEFAULT_WEIGHTS_NAME}): {error}; on a "
                              "machine without internet pass --feature_extractor_weights PATH") from error
    _EXTRACTORS.clear()  # keep at most one
    _EXTRACTORS[key] = extractor.to(device).eval()
    return _EXTRACTORS[key]


@torch.no_grad()
def extract_features(dataset, extractor, device, batch_size, num_workers, desc, verbose):
    """{layer: float32 [N, D]} for a dataset of uint8 [3, H, W] images, in dataset order."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.device(device).type == 'cuda')
    outputs = {layer: [] for layer in FEATURE_LAYERS}
    progress = tqdm(total=len(dataset), desc=desc, unit='img', disable=not verbose, file=sys.stderr)
    for batch in loader:
        for layer, values in zip(FEATURE_LAYERS, extractor(batch.to(device))):
            outputs[layer].append(values.float().cpu())
        progress.update(batch.shape[0])
    progress.close()
    return {layer: torch.cat(values) for layer, values in outputs.items()}


def _save_atomic(payload, path):
    with atomic_open(path, 'wb') as stream:
        torch.save(payload, stream)


def cached_features(image_set, image_size, protocol_key, get_extractor, device, batch_size, num_workers,
                    cache_root, verbose):
    """Features of an image set: read from its content-keyed cache when allowed and valid, else extracted
    (and the cache rewritten). Returns (features, cache name, 'reused' | 'computed')."""
    name = image_set.cache_name(protocol_key)
    fields = image_set.key_fields(protocol_key)
    path = feature_cache_file(cache_root, name) if name is not None else None
    if path is not None and image_set.reuse_cache and os.path.isfile(path):
        payload = torch.load(path, map_location='cpu', weights_only=True)
        features = payload.get('features', {}) if isinstance(payload, dict) else {}
        # The name already hashes the fields; comparing them too guards against a hash-prefix collision.
        if payload.get('fields') == fields and all(
                layer in features and features[layer].shape[0] == len(image_set) for layer in FEATURE_LAYERS):
            if verbose:
                print(f"reusing cached {image_set.role} features {path}", file=sys.stderr)
            return features, name, 'reused'
    features = extract_features(image_set.dataset(image_size), get_extractor(), device, batch_size, num_workers,
                                f'{image_set.role} features', verbose)
    if path is not None:
        _save_atomic({'fields': fields, 'features': features}, path)
    return features, name, 'computed'


# --------------------------------------------------------------------------------------------------------
# Metrics


def frechet_distance(features_1, features_2):
    """FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2) (TTUR / torch-fidelity definition, unbiased
    covariances), in float64.

    tr sqrt(S1 S2) is computed exactly without the general eigen-solver torch-fidelity uses (np.linalg.eigvals
    of the non-symmetric S1 S2, which takes tens of seconds at 2048-d on a small CPU and turns the
    rank-deficient null space of small sets into rounding noise): with S = A^T A, A = centred features /
    sqrt(n - 1), the non-zero eigenvalues of S1 S2 are the squared singular values of A1 A2^T, so for
    small sets tr sqrt(S1 S2) is the nuclear norm of A1 A2^T; for large sets it is sum sqrt(eigvalsh(R S2 R))
    with R = sqrt(S1), a symmetric PSD matrix with the same eigenvalues. Both agree with torch-fidelity
    to rounding (tests/test_eval.py checks it).
    """
    x1 = torch.as_tensor(features_1).double().numpy()
    x2 = torch.as_tensor(features_2).double().numpy()
    (n1, dim), n2 = x1.shape, x2.shape[0]
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    c1, c2 = x1 - mu1, x2 - mu2
    trace1 = float((c1 ** 2).sum()) / (n1 - 1)
    trace2 = float((c2 ** 2).sum()) / (n2 - 1)
    if n1 * n2 <= dim * dim:
        cross = (c1 @ c2.T) / np.sqrt((n1 - 1) * (n2 - 1))
        trace_sqrt = float(np.linalg.svd(cross, compute_uv=False).sum())
    else:
        s1 = (c1.T @ c1) / (n1 - 1)
        s2 = (c2.T @ c2) / (n2 - 1)
        values, vectors = np.linalg.eigh(s1)
        root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        middle = np.linalg.eigvalsh(root @ s2 @ root)
        trace_sqrt = float(np.sqrt(np.clip(middle, 0, None)).sum())
    difference = mu1 - mu2
    return float(difference @ difference) + trace1 + trace2 - 2 * trace_sqrt


def compute_fidelity(fake_set, real_set, metrics, image_size, weights_path=None, weights=None, device='cpu',
                     batch_size=64, cache_root='metrics/cache', num_workers=0, verbose=True):
    """FID / KID / IS of `fake_set` against `real_set` (None when only IS is asked for).

    Features come from torch-fidelity's inception-v3-compat extractor; KID and IS are torch-fidelity's own
    functions on them (`kid_features_to_metric`, `isc_features_to_metric`); FID is `frechet_distance`.
    metrics: subset of {'fid', 'kid', 'is'}. Returns (results, details): results has the keys `fid`, `kid`,
    `kid_std`, `kid_x100`, `kid_x100_std`, `is_mean`, `is_std` (those computed); details records the
    cache names and the KID/IS settings actually used.
    """
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    metrics = set(metrics)
    unknown = metrics - {'fid', 'kid', 'is'}
    if unknown:
        raise EvaluationError(f"unknown fidelity metric(s) {sorted(unknown)}; expected fid, kid, is")
    need_real = bool(metrics & {'fid', 'kid'})
    if need_real and real_set is None:
        raise EvaluationError("FID and KID need real images: pass --real_images_dir")
    weights = weights or weights_identity(weights_path)
    device = torch.device(device)
    sets = [fake_set] + ([real_set] if need_real else [])
    for image_set in sets:
        if len(image_set) < 2:
            raise EvaluationError(f"at least 2 {image_set.role} images are needed (covariances and KID), "
                                  f"got {len(image_set)} from {image_set.source}")
    num_fake = len(fake_set)
    num_real = len(real_set) if need_real else None

    kid_subset_size = KID_SUBSET_SIZE
    if 'kid' in metrics and min(num_fake, num_real) < KID_SUBSET_SIZE:
        kid_subset_size = min(num_fake, num_real)
        warn(f"KID: only {num_fake} fake / {num_real} real images, fewer than the default subset size "
             f"{KID_SUBSET_SIZE}; the subset size shrinks to {kid_subset_size} (KID values of different subset "
             "sizes are not comparable)")
    isc_splits = ISC_SPLITS
    if 'is' in metrics and num_fake < ISC_SPLITS:
        isc_splits = num_fake
        warn(f"IS: only {num_fake} fake images, fewer than the default {ISC_SPLITS} splits; using {isc_splits}")

    protocol_key = {'image_size': int(image_size), 'extractor': FEATURE_EXTRACTOR, 'layers': list(FEATURE_LAYERS),
                    'weights': weights['sha256'] or weights['source'], 'torch_fidelity': torch_fidelity_version()}
    extractor = []

    def get_extractor():  # built once, and only when some set is not cached
        if not extractor:
            extractor.append(create_extractor(weights, device))
        return extractor[0]

    features, names, status = {}, {}, {}
    for image_set in sets:
        features[image_set.role], names[image_set.role], status[image_set.role] = cached_features(
            image_set, image_size, protocol_key, get_extractor, device, batch_size, num_workers, cache_root, verbose)

    results = {}
    pool = FEATURE_LAYERS[0]
    if 'fid' in metrics:
        results['fid'] = frechet_distance(features['fake'][pool], features['real'][pool])
    if 'kid' in metrics:
        kid = kid_features_to_metric(features['fake'][pool], features['real'][pool], kid_subsets=KID_SUBSETS,
                                     kid_subset_size=kid_subset_size, rng_seed=RNG_SEED, verbose=False)
        mean, std = float(kid['kernel_inception_distance_mean']), float(kid['kernel_inception_distance_std'])
        results.update(kid=mean, kid_std=std, kid_x100=mean * 100, kid_x100_std=std * 100)
    if 'is' in metrics:
        score = isc_features_to_metric(features['fake'][FEATURE_LAYERS[1]], isc_splits, True, RNG_SEED)
        results.update(is_mean=float(score['inception_score_mean']), is_std=float(score['inception_score_std']))
    details = {
        'fake_cache_name': names['fake'], 'real_cache_name': names.get('real'),
        'fake_features': status['fake'], 'real_features': status.get('real'),
        'fid_formula': FID_FORMULA,
        'kid': {'subsets': KID_SUBSETS, 'subset_size': kid_subset_size,
                'kernel': 'polynomial, degree 3, gamma 1/2048, coef0 1', 'estimator': 'unbiased MMD^2',
                'implementation': 'torch_fidelity.metric_kid.kid_features_to_metric'},
        'isc': {'splits': isc_splits, 'shuffle': True,
                'implementation': 'torch_fidelity.metric_isc.isc_features_to_metric'},
        'rng_seed': RNG_SEED,
        'num_fake': num_fake,
        'num_real': num_real,
    }
    return results, details
