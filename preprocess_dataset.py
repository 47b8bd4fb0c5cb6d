"""Turn a raw dataset into the folder layout the GRAM / GRAM-HD data readers expect.

    python preprocess_dataset.py --cate ffhq --raw_dataset_path ./raw_data/ffhq [--output_dir ./datasets/ffhq]
                                 [--size 256] [--workers N] [--overwrite]

Every category writes <output_dir>/<name>.png (size x size RGB) and one pose file in <output_dir>/poses/:

    ffhq         5-landmark alignment (GRAM's FFHQ crop)      <name>.mat, copied unchanged (Deep3DFaceRecon)
    faces        your own photos, aligned as ffhq              <name>.mat, angle = [[rx, ry, 0]] estimated
                                                               from the landmarks (utils/alignment.py)
    cats, afhq   9-landmark alignment with roll removal        <name>_pose.npy, float64 [pitch, yaw]
    carla        plain resize (default 128)                    <name>_extrinsics.npy, copied unchanged
    synthetic    procedural 3D heads, no raw data needed        <index>.mat (true camera pose, FFHQ format);
                 (--num_images, --size, --seed; synthetic_data.py)

One bad image (unreadable, truncated, bad landmarks, pose missing) never stops the run: it is listed with
its reason in <output_dir>/skipped.txt. Files are written under a temporary name and renamed into place,
so a killed run leaves no half-written image, and a re-run skips the images already done (--overwrite
redoes them). The raw dataset is only read.
"""
import argparse
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from utils import alignment
from utils.cli import HelpFormatter, nonnegative_float, output_folder, positive_int, seed
from utils.resources import require_disk, require_memory
from utils.atomic import atomic_open, remove_stale_temp_files
from utils.images import read_rgb

CATEGORIES = ('ffhq', 'faces', 'cats', 'afhq', 'carla', 'synthetic')
DEFAULT_SIZE = {'carla': 128}  # everything else: 256
POSE_FILE = {  # output pose file name for an image <name>.png
    'ffhq': '{}.mat',
    'faces': '{}.mat',
    'cats': '{}_pose.npy',
    'afhq': '{}_pose.npy',
    'carla': '{}_extrinsics.npy',
}
# What each category reads (shown when the raw folder has nothing to process).
RAW_LAYOUT = {
    'ffhq': "<raw>/<name>.png (FFHQ 1024^2 images), <raw>/lm5p/<name>.txt (5 landmarks, 5 lines 'x y'), "
            "<raw>/poses/<name>.mat (Deep3DFaceRecon poses, key 'angle')",
    'faces': "<raw>/<name>.{png,jpg,jpeg,bmp,webp,tif} (photos), <raw>/lm5p/<name>.txt (5 landmarks, 5 lines "
             "'x y': left eye, right eye, nose, left mouth corner, right mouth corner)",
    'cats': "<raw>/**/<name>.jpg with <name>.jpg.cat beside it (CAT dataset: '9 x1 y1 ... x9 y9'); subfolders "
            "such as CAT_00..CAT_06 are searched",
    'afhq': "<raw>/**/<name>.{png,jpg} with <name>.png.cat (or <name>.cat) beside it, in the CAT format "
            "'9 x1 y1 ... x9 y9'",
    'carla': "<raw>/<name>.png (renders), <raw>/poses/<name>_extrinsics.npy (GRAF camera-to-world matrices)",
}
IMAGE_EXTENSIONS = {
    'ffhq': ('.png',),
    'faces': alignment.IMAGE_EXTENSIONS,
    'cats': ('.jpg', '.jpeg', '.png'),
    'afhq': ('.jpg', '.jpeg', '.png'),
    'carla': ('.png',),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=HelpFormatter)
    parser.add_argument('--raw_dataset_path', type=str, default=None,
                        help='folder with the raw images (default ./raw_data/<cate>)')
    parser.add_argument('--cate', type=str, default='ffhq', choices=CATEGORIES, help='dataset category')
    parser.add_argument('--output_dir', type=str, default=None, help='default ./datasets/<cate>')
    parser.add_argument('--size', type=positive_int, default=None,
                        help='output resolution (default 256, 128 for carla, 64 for synthetic; up to 1024 for '
                             'GRAM-HD)')
    parser.add_argument('--workers', type=positive_int, default=os.cpu_count() or 1, help='parallel processes')
    parser.add_argument('--overwrite', action='store_true', help='redo images that are already done')
    parser.add_argument('--num_images', type=positive_int, default=10000, help='synthetic: number of images')
    parser.add_argument('--seed', type=seed, default=0, help='synthetic: dataset seed')
    parser.add_argument('--yaw_std', type=nonnegative_float, default=0.3,
                        help='synthetic: standard deviation of the camera yaw (radians; the FFHQ prior is 0.3)')
    parser.add_argument('--pitch_std', type=nonnegative_float, default=0.155,
                        help='synthetic: standard deviation of the camera pitch (radians; the FFHQ prior is 0.155)')
    args = parser.parse_args(argv)
    if args.size is not None and not MIN_SIZE <= args.size <= MAX_SIZE:
        parser.error(f"argument --size: expected a resolution from {MIN_SIZE} to {MAX_SIZE}, got {args.size}")
    return args


# Output resolutions accepted: GRAM-HD trains up to 1024^2; 4096 leaves room without letting a typo through.
MIN_SIZE, MAX_SIZE = 16, 4096
# Bytes per output pixel: a PNG on disk holds at most 3 (RGB, before compression); a worker's float64
# working images (alignment, or the synthetic renderer's per-pixel buffers) at most this many.
WORKER_BYTES_PER_PIXEL = 512


def check_output_fits(output_dir, count, size, workers, what):
    """One line, before any image is written, when `count` images of size^2 would not fit on the disk or
    the workers' images in memory (--num_images, --size, --workers)."""
    require_disk(count * size * size * 3, output_dir, f"{what} ({count} PNGs of {size}^2)",
                 advice='use fewer or smaller images, or another --output_dir')
    require_memory(workers * size * size * WORKER_BYTES_PER_PIXEL, f"--size {size} with --workers {workers}",
                   advice='use a smaller --size or fewer --workers')


# -----------------------------------------------------------------------------
# Finding the work

@dataclass
class Job:
    """One raw image and everything needed to turn it into <name>.png plus its pose file."""
    cate: str
    name: str
    image: str
    landmarks: Optional[str]
    pose: Optional[str]
    output_dir: str
    size: int
    overwrite: bool


def find_images(folder, extensions, recursive, exclude):
    """Sorted image paths under folder with one of the (lower-case) extensions, any letter case.

    The folder `exclude` (the output folder, if it lies inside the raw one) is not searched.
    """
    found, excluded = [], os.path.realpath(exclude)
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) != excluded)
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(extensions)]
        if not recursive:
            break
    return found


def find_cat_landmarks(image_path):
    # The CAT dataset appends '.cat' to the image name; '<name>.cat' is accepted as well.
    appended = image_path + '.cat'
    stem = os.path.splitext(image_path)[0] + '.cat'
    return stem if not os.path.exists(appended) and os.path.exists(stem) else appended


def list_jobs(cate, raw_dir, output_dir, size, overwrite):
    """All jobs for a raw folder, plus (image, reason) for images that cannot become a job."""
    recursive = cate in ('cats', 'afhq')
    jobs, rejected, source_of = [], [], {}
    for image in find_images(raw_dir, IMAGE_EXTENSIONS[cate], recursive, exclude=output_dir):
        name = os.path.splitext(os.path.basename(image))[0]
        if name in source_of:
            rejected.append((image, f"duplicate name: {source_of[name]} also becomes {name}.png"))
            continue
        source_of[name] = image
        landmarks = pose = None
        if cate in ('ffhq', 'faces'):
            landmarks = os.path.join(raw_dir, 'lm5p', name + '.txt')
        if cate in ('cats', 'afhq'):
            landmarks = find_cat_landmarks(image)
        if cate == 'ffhq':
            pose = os.path.join(raw_dir, 'poses', name + '.mat')
        if cate == 'carla':
            pose = os.path.join(raw_dir, 'poses', name + '_extrinsics.npy')
        jobs.append(Job(cate, name, image, landmarks, pose, output_dir, size, overwrite))
    return jobs, rejected


# -----------------------------------------------------------------------------
# Writing files safely

def write_atomically(final_path, write):
    """Run write(file object) on a temporary file renamed to final_path when done (utils.atomic), so
    final_path is either absent or complete, even if the process is killed midway."""
    with atomic_open(final_path, 'wb') as handle:
        write(handle)


def save_png(image, path):
    write_atomically(path, lambda handle: image.save(handle, format='PNG'))


def copy_file(source, path):
    def write(handle):
        with open(source, 'rb') as original:
            shutil.copyfileobj(original, handle)
    write_atomically(path, write)


def remove_partial_files(output_dir):
    """Delete temporary files that a killed earlier run left behind; returns how many."""
    return sum(remove_stale_temp_files(folder) for folder in (output_dir, os.path.join(output_dir, 'poses')))


# -----------------------------------------------------------------------------
# Processing one image

def require_file(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} missing: {path}")


def process_ffhq(job, image_out, pose_out):
    require_file(job.pose, 'pose file')
    require_file(job.landmarks, 'landmark file')
    alignment.read_deep3d_angles(job.pose)  # only validated: the file is copied unchanged
    landmarks = alignment.read_lm5p(job.landmarks)
    aligned = alignment.align_face(read_rgb(job.image), landmarks, job.size)
    copy_file(job.pose, pose_out)
    save_png(aligned, image_out)


def process_faces(job, image_out, pose_out):
    require_file(job.landmarks, 'landmark file')
    landmarks = alignment.read_lm5p(job.landmarks)
    image = read_rgb(job.image)
    aligned = alignment.align_face(image, landmarks, job.size)
    # Head angles in Deep3DFaceRecon's convention, so GRAM's FFHQ reader labels these photos exactly as it
    # labels FFHQ (see utils/alignment.py); roll stays in the image, as for FFHQ, and is written as 0.
    rx, ry, _ = alignment.face_angles_from_landmarks(landmarks, image.height)
    angle = np.array([[rx, ry, 0.0]], dtype=np.float64)
    write_atomically(pose_out, lambda handle: scipy.io.savemat(handle, {'angle': angle}))
    save_png(aligned, image_out)


def process_cats(job, image_out, pose_out):
    require_file(job.landmarks, 'landmark file')
    landmarks = alignment.read_cat_landmarks(job.landmarks)
    aligned, pitch, yaw = alignment.align_cat(read_rgb(job.image), landmarks, job.size)
    pose = np.array([pitch, yaw], dtype=np.float64)
    write_atomically(pose_out, lambda handle: np.save(handle, pose))
    save_png(aligned, image_out)


def process_carla(job, image_out, pose_out):
    require_file(job.pose, 'pose file')
    alignment.read_extrinsics(job.pose)  # only validated: the file is copied unchanged
    resized = read_rgb(job.image).resize((job.size, job.size), Image.LANCZOS)
    copy_file(job.pose, pose_out)
    save_png(resized, image_out)


PROCESSORS = {'ffhq': process_ffhq, 'faces': process_faces, 'cats': process_cats, 'afhq': process_cats,
              'carla': process_carla}


def is_done(image_out, pose_out, size):
    if not (os.path.isfile(image_out) and os.path.isfile(pose_out)):
        return False
    try:
        with Image.open(image_out) as existing:
            return existing.size == (size, size)
    except Exception:  # an unreadable earlier output is simply redone
        return False


def process(job):
    """Preprocess one image. Returns (status, source image, reason) with status written/done/skipped."""
    image_out = os.path.join(job.output_dir, job.name + '.png')
    pose_out = os.path.join(job.output_dir, 'poses', POSE_FILE[job.cate].format(job.name))
    if not job.overwrite and is_done(image_out, pose_out, job.size):
        return 'done', job.image, ''
    try:
        PROCESSORS[job.cate](job, image_out, pose_out)
    # Image decoders raise many exception types for bad files (OSError, SyntaxError, ValueError, EOFError,
    # zlib.error, ...); each is recorded with its type and message, and the run goes on.
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        return 'skipped', job.image, ' '.join(reason.split())
    return 'written', job.image, ''


def run_jobs(jobs, workers, description):
    """Process all jobs (in parallel when workers > 1) with a progress bar; returns the results in order."""
    workers = max(1, min(workers, len(jobs)))
    results = []
    with tqdm(total=len(jobs), unit='img', desc=description) as progress:
        if workers == 1:
            for job in jobs:
                results.append(process(job))
                progress.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                chunk = max(1, min(16, len(jobs) // (8 * workers)))
                for result in pool.map(process, jobs, chunksize=chunk):
                    results.append(result)
                    progress.update()
    return results


# -----------------------------------------------------------------------------

def make_synthetic(args):
    # Imported here: the renderer needs torch and the generator's camera code, the other categories do not.
    import synthetic_data

    output_dir = args.output_dir or os.path.join('.', 'datasets', 'synthetic')
    size = args.size or 64
    pose_widths = dict(yaw_std=args.yaw_std, pitch_std=args.pitch_std)
    try:
        synthetic_data.check_dataset_folder(output_dir, args.num_images, size, args.seed, **pose_widths)
    except synthetic_data.DatasetMismatch as error:
        raise SystemExit(f"error: {error}")
    check_output_fits(output_dir, args.num_images, size, args.workers, f"--num_images {args.num_images}")
    with output_folder(output_dir), tqdm(total=args.num_images, desc=f"synthetic {size}^2", unit='img') as progress:
        written = synthetic_data.write_synthetic_dataset(output_dir, args.num_images, size, args.seed,
                                                         workers=args.workers, overwrite=args.overwrite,
                                                         progress=progress, **pose_widths)
    print(f"synthetic: {written} images written, {args.num_images - written} already there (same settings); "
          f"{args.num_images} images of {size}^2 (seed {args.seed}) in {output_dir}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.cate == 'synthetic':
        return make_synthetic(args)
    raw_dir = args.raw_dataset_path or os.path.join('.', 'raw_data', args.cate)
    output_dir = args.output_dir or os.path.join('.', 'datasets', args.cate)
    size = args.size or DEFAULT_SIZE.get(args.cate, 256)
    expected = f"expected layout for --cate {args.cate}: {RAW_LAYOUT[args.cate]}"
    if not os.path.isdir(raw_dir):
        raise SystemExit(f"error: raw dataset folder {raw_dir} does not exist; {expected}")
    if os.path.realpath(raw_dir) == os.path.realpath(output_dir):
        raise SystemExit(f"error: --output_dir {output_dir} is the raw dataset folder; outputs would replace "
                         "the source images. Choose another folder.")

    jobs, rejected = list_jobs(args.cate, raw_dir, output_dir, size, args.overwrite)
    if not jobs:
        raise SystemExit(f"error: no images found in {raw_dir}; {expected}")
    check_output_fits(output_dir, len(jobs), size, args.workers, f"{len(jobs)} images of {raw_dir}")
    with output_folder(output_dir):  # a run that fails before writing leaves no empty folder
        os.makedirs(os.path.join(output_dir, 'poses'), exist_ok=True)
        leftovers = remove_partial_files(output_dir)
        if leftovers:
            print(f"removed {leftovers} temporary file(s) left by an interrupted run")
        results = run_jobs(jobs, args.workers, f"{args.cate} {size}^2")

    skipped = sorted(rejected + [(image, reason) for status, image, reason in results if status == 'skipped'])
    skipped_list = os.path.join(output_dir, 'skipped.txt')
    lines = ''.join(f"{image}\t{reason}\n" for image, reason in skipped)
    write_atomically(skipped_list, lambda handle: handle.write(lines.encode('utf-8')))
    written = sum(status == 'written' for status, _, _ in results)
    done = sum(status == 'done' for status, _, _ in results)
    print(f"{args.cate}: {written} written, {done} already done, {len(skipped)} skipped"
          + (f" (reasons in {skipped_list})" if skipped else "") + f"; output in {output_dir}")
    if written + done == 0:
        raise SystemExit(f"error: none of the {len(skipped)} images could be processed; see {skipped_list}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
