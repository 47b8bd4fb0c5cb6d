"""Training datasets: a folder of images plus a `poses/` folder, and a resumable distributed sampler.

Layout (GRAM / GRAM-HD preprocessing output):
    <data_dir>/<name>.png                      images (also .jpg/.jpeg), read non-recursively
    <data_dir>/poses/<name>.mat                FFHQ: Deep3DFaceRecon angles, key 'angle' = [[rx, ry, rz]]
    <data_dir>/poses/<name>_pose.npy           CATS / AFHQCats: [pitch, yaw], already centred on pi/2
    <data_dir>/poses/<name>_extrinsics.npy     CARLA: GRAF camera-to-world matrix, 3x4 or 4x4

Every item is (image [3, S, S] float32 in [-1, 1], pose [2] float32 = (pitch, yaw) in the generator's
convention, see generators/camera.py). A horizontally flipped image gets the mirrored yaw, pi - yaw, for
every dataset (the official per-dataset formulas all reduce to that).

Images without a pose file are skipped and counted when the dataset is built (the official datasets
crashed mid-epoch on FFHQ's 6 images without a pose); a folder with no usable image is an error.
"""
import math
import os
import warnings

import numpy as np
import torch
from PIL import Image

from utils.images import read_rgb

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
POSE_FOLDER = 'poses'
# Names listed in a message before it says "and N more".
LISTED_NAMES = 10


class DatasetError(RuntimeError):
    """Bad training data; the message names the file or folder and what was expected."""


def _listing(names):
    shown = ', '.join(names[:LISTED_NAMES])
    return shown + (f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else '')


def mirrored_yaw(yaw):
    """Yaw of the horizontally mirrored view: reflection of the camera about the y-z plane."""
    return math.pi - yaw


class PosedImageFolder(torch.utils.data.Dataset):
    """Images of one folder with one pose file each. Subclasses say where the pose is and how to read it.

    Items are addressed by index (no flip) or by an (index, flip) key, which is what `EpochSampler`
    yields: the flip is decided by the sampler, so the data stream is a function of (seed, step) and a
    resumed run sees exactly the images it would have seen.
    """

    pose_description = ''

    def __init__(self, data_dir, img_size, real_pose=True, warn=True):
        self.data_dir = os.fspath(data_dir)
        self.img_size = int(img_size)
        self.real_pose = real_pose
        if not os.path.isdir(self.data_dir):
            raise DatasetError(f"data folder {self.data_dir} does not exist (expected images "
                               f"<data_dir>/*.png and poses {self.pose_description})")
        names = sorted(name for name in os.listdir(self.data_dir)
                       if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(self.data_dir, name)))
        if not names:
            raise DatasetError(f"no images (*.png, *.jpg, *.jpeg) directly in {self.data_dir}; expected the "
                               f"preprocessed layout <data_dir>/*.png with poses {self.pose_description}")
        self.missing_poses = []
        if real_pose:
            pose_dir = os.path.join(self.data_dir, POSE_FOLDER)
            if not os.path.isdir(pose_dir):
                raise DatasetError(f"pose folder {pose_dir} does not exist ({len(names)} images in "
                                   f"{self.data_dir} need poses {self.pose_description})")
            # One listing instead of a stat per image: FFHQ has 70k files.
            available = set(os.listdir(pose_dir))
            kept = []
            for name in names:
                (kept if self.pose_name(name) in available else self.missing_poses).append(name)
            if not kept:
                raise DatasetError(f"none of the {len(names)} images in {self.data_dir} has a pose file: "
                                   f"expected {os.path.join(pose_dir, self.pose_name(names[0]))} for "
                                   f"{names[0]} (poses {self.pose_description})")
            names = kept
        self.names = names
        if self.missing_poses and warn:
            warnings.warn(self.missing_poses_message(), stacklevel=2)

    # --- per dataset -----------------------------------------------------------------------------------
    def pose_name(self, image_name):
        raise NotImplementedError

    def read_pose(self, path):
        """(pitch, yaw) in radians from a pose file; raise DatasetError naming the file when malformed."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------
    def missing_poses_message(self):
        return (f"{type(self).__name__}: {len(self.missing_poses)} of {len(self.names) + len(self.missing_poses)} "
                f"images in {self.data_dir} have no pose file in {os.path.join(self.data_dir, POSE_FOLDER)} and "
                f"are skipped ({self.pose_description}): {_listing(self.missing_poses)}")

    def __len__(self):
        return len(self.names)

    def image_path(self, index):
        return os.path.join(self.data_dir, self.names[index])

    def pose_path(self, index):
        return os.path.join(self.data_dir, POSE_FOLDER, self.pose_name(self.names[index]))

    def load_image(self, index):
        """[3, S, S] float32 in [-1, 1]: RGB, LANCZOS-resized to S x S (non-square images are squashed,
        as the official transform does)."""
        path = self.image_path(index)
        try:
            image = read_rgb(path)  # the reader of preprocessing and evaluation: 16-bit, alpha, palette alike
            if image.size != (self.img_size, self.img_size):
                image = image.resize((self.img_size, self.img_size), Image.Resampling.LANCZOS)
            array = np.array(image, dtype=np.uint8)  # a writable copy for torch.from_numpy
        # PIL signals some broken chunks with SyntaxError, besides OSError for truncated/unknown files.
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            # PIL quotes the path in its message; the path is already named once.
            reason = str(error).replace(f" {path!r}", '').rstrip('.')
            raise DatasetError(f"cannot read image {path}: {reason}. Delete or replace it (and its pose file), "
                               "then resume.") from error
        tensor = torch.from_numpy(array).permute(2, 0, 1).float().div(255)
        return (tensor - 0.5) / 0.5  # ToTensor + Normalize(0.5, 0.5), as the official transform

    def __getitem__(self, key):
        index, flip = key if isinstance(key, tuple) else (key, False)
        image = self.load_image(index)
        if self.real_pose:
            pitch, yaw = self.read_pose(self.pose_path(index))
            if not (math.isfinite(pitch) and math.isfinite(yaw)):
                raise DatasetError(f"pose file {self.pose_path(index)} gives a non-finite pose "
                                   f"(pitch {pitch}, yaw {yaw})")
        else:
            pitch = yaw = 0.0  # official: pose 0 when real poses are off (the real-pose loss is then skipped)
        if flip:
            image = image.flip(-1)
            if self.real_pose:
                yaw = mirrored_yaw(yaw)
        return image, torch.tensor([pitch, yaw], dtype=torch.float32)


def _stem(image_name):
    return os.path.splitext(image_name)[0]


def _load_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read pose file {path}: {error}") from error


# Deep3DFaceRecon's pitch is offset by 0.1 rad from GRAM's camera (hard-coded officially).
FFHQ_PITCH_OFFSET = 0.1


def ffhq_pose_labels(rx, ry):
    """GRAM's camera labels (pitch, yaw) of Deep3DFaceRecon head angles rx, ry, as the official FFHQ reader
    makes them: pitch = pi/2 - (rx - 0.1), yaw = pi/2 + ry (gram.md 6.4)."""
    return float(math.pi / 2 - (rx - FFHQ_PITCH_OFFSET)), float(math.pi / 2 + ry)


class FFHQ(PosedImageFolder):
    """FFHQ aligned by GRAM's preprocessing; poses are Deep3DFaceRecon `.mat` files (key 'angle')."""

    pose_description = "<data_dir>/poses/<name>.mat with key 'angle' = [[rx, ry, rz]] (Deep3DFaceRecon)"
    PITCH_OFFSET = FFHQ_PITCH_OFFSET

    def pose_name(self, image_name):
        # Official: every 'png' in the name replaced by 'mat'; the stem rule agrees for names like 00000.png.
        return _stem(image_name) + '.mat'

    def read_pose(self, path):
        import scipy.io

        try:
            content = scipy.io.loadmat(path)
        except Exception as error:  # scipy raises several types for broken files; the file is named below
            raise DatasetError(f"cannot read pose file {path}: {error}") from error
        if 'angle' not in content:
            keys = sorted(k for k in content if not k.startswith('__'))
            raise DatasetError(f"pose file {path} has no key 'angle' (keys: {keys}); expected Deep3DFaceRecon "
                               "angles [[rx, ry, rz]]")
        angle = np.asarray(content['angle'], dtype=np.float64).reshape(-1)
        if angle.size < 2:
            raise DatasetError(f"pose file {path}: 'angle' has {angle.size} values, expected [[rx, ry, rz]]")
        return ffhq_pose_labels(angle[0], angle[1])


class CATS(PosedImageFolder):
    """Cats aligned by GRAM's preprocessing: `<name>_pose.npy` = [pitch, yaw] around pi/2."""

    pose_description = "<data_dir>/poses/<name>_pose.npy = [pitch, yaw] (GRAM cat preprocessing)"
    # The landmark fit's pitch sits 0.14 rad off GRAM's camera (hard-coded officially).
    PITCH_OFFSET = 0.14

    def pose_name(self, image_name):
        return _stem(image_name) + '_pose.npy'

    def read_pose(self, path):
        pose = np.asarray(_load_npy(path), dtype=np.float64).reshape(-1)
        if pose.size != 2:
            raise DatasetError(f"pose file {path} holds {pose.size} values, expected 2 ([pitch, yaw])")
        return float(pose[0] + self.PITCH_OFFSET), float(pose[1])


class AFHQCats(CATS):
    """GRAM-HD's AFHQv2 cats: same files and conversion as GRAM's CATS."""


class CARLA(PosedImageFolder):
    """CARLA cars from GRAF: `<name>_extrinsics.npy` camera-to-world matrices (z up)."""

    pose_description = "<data_dir>/poses/<name>_extrinsics.npy = 3x4 or 4x4 camera-to-world matrix (GRAF)"

    def pose_name(self, image_name):
        return _stem(image_name) + '_extrinsics.npy'

    def read_pose(self, path):
        matrix = np.asarray(_load_npy(path), dtype=np.float64)
        if matrix.shape not in ((3, 4), (4, 4)):
            raise DatasetError(f"pose file {path} has shape {matrix.shape}, expected a 3x4 or 4x4 "
                               "camera-to-world matrix")
        return carla_angles(matrix)


def carla_angles(cam2world):
    """(pitch, yaw) of a GRAF camera-to-world matrix: z-up world -> GRAM's y-up, radius ignored."""
    position = np.asarray(cam2world, dtype=np.float64)[[1, 2, 0], 3]  # new (x, y, z) = old (y, z, x)
    x, y, z = position
    yaw = math.atan2(-x, z) + math.pi / 2
    pitch = math.atan(-y / math.hypot(x, z)) + math.pi / 2
    return pitch, yaw


DATASETS = {'FFHQ': FFHQ, 'CATS': CATS, 'AFHQCats': AFHQCats, 'CARLA': CARLA}


def build_dataset(config, data_dir, warn=True):
    """The dataset named by config['dataset']['class'] over `data_dir`, its first and last items checked."""
    section = config['dataset']
    name = section['class']
    if name not in DATASETS:
        raise ValueError(f"unknown dataset class {name!r} in config; expected one of {', '.join(DATASETS)}")
    kwargs = dict(section.get('kwargs', {}))
    dataset = DATASETS[name](data_dir, img_size=kwargs.get('img_size', config['global']['img_size']),
                             real_pose=kwargs.get('real_pose', True), warn=warn)
    # Decode the first and last image and pose now: a folder of unreadable or mislabelled files then fails
    # in seconds, before any model is built, instead of when a data-loader worker reaches them.
    for index in sorted({0, len(dataset) - 1}):
        dataset[index]
    return dataset


class EpochSampler(torch.utils.data.Sampler):
    """Batches of (index, flip) keys for one rank: shuffled per epoch, split across ranks, resumable.

    The permutation and the flips of epoch e come from a generator seeded by (seed, e), identical on all
    ranks; rank r takes every world_size-th item. Each rank gets the same number of full batches (the
    tail is dropped, as DistributedSampler(drop_last=True) + drop_last batches). `set_epoch(e, start)`
    starts epoch e at batch `start`, which is how a resumed run continues mid-epoch without reading the
    skipped images. (The official loop never called set_epoch, so every epoch had the same order.)
    """

    def __init__(self, num_items, batch_size, rank=0, world_size=1, seed=0, flip=True):
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed = int(seed)
        self.flip = flip
        self.per_rank = self.num_items // self.world_size
        self.batches_per_epoch = self.per_rank // self.batch_size
        if self.batches_per_epoch == 0:
            raise DatasetError(f"{self.num_items} usable images cannot fill one batch of {self.batch_size} on each "
                               f"of {self.world_size} process(es); add images or lower the batch size")
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start batch {start_batch} outside 0..{self.batches_per_epoch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def _epoch_generator(self):
        seed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(seed))

    def __iter__(self):
        rng = self._epoch_generator()
        order = torch.randperm(self.num_items, generator=rng)[:self.per_rank * self.world_size]
        flips = torch.rand(order.shape[0], generator=rng) < 0.5
        mine = order[self.rank::self.world_size].tolist()
        my_flips = (flips[self.rank::self.world_size] & self.flip).tolist()
        for batch in range(self.start_batch, self.batches_per_epoch):
            positions = range(batch * self.batch_size, (batch + 1) * self.batch_size)
            yield [(mine[p], my_flips[p]) for p in positions]

    def __len__(self):
        return self.batches_per_epoch - self.start_batch
