"""GRAM-HD free-view benchmark: seconds per orbit frame, uncached (`render`) vs cached textures.

    python bench_hd.py                                   # 256, 512, 1024 (random weights), one seed
    python bench_hd.py --sizes 256 --frames 4 --uncached_frames 2
    python bench_hd.py --tiny                            # TINY_GRAMHD, seconds; keeps the script working

Frames follow the official video orbit (yaw ping-pong +-0.3 rad, pitch 0, view dependence locked) and
include the 64^2 LR image, as `inference.py --type video` writes both ("HR only": without the LR image,
whose radiance-network pass dominates a cached frame at 256^2). The uncached path runs the whole
generator per frame; the cached path computes the manifold textures (LR textures + super-resolution) once
per seed ("textures" below) and per frame only intersects the LR rays, up-samples the points and looks the
textures up. The cached frames are checked to be identical to the uncached ones. Weights do not change the
cost, so random weights of the config are used unless --ckpt is given. Timings are wall-clock, one run each.
"""
import argparse
import json
import os
import platform
import sys
import time

import torch

from generators import build_generator, load_generator
from rendering.views import frontal_angles, view_offsets
from utils.cli import nonnegative_int, positive_int
from utils.seeds import latent_for_seed

VIDEO_FRAMES = 60


def orbit_views(count):
    """The first `count` views of the official video orbit, as (pitch [1], yaw [1]) float64 tensors."""
    offsets = view_offsets('video')[2]
    return [frontal_angles(*offsets[i]) for i in range(min(count, len(offsets)))]


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def bench_size(generator, frames, uncached_frames):
    z = latent_for_seed(0, generator.z_dim)
    views = orbit_views(max(frames, uncached_frames))
    with torch.no_grad():
        textures, texture_seconds = timed(lambda: generator.manifold_textures(z))
        cached, cached_seconds = [], []
        for pitch, yaw in views[:frames]:
            frame, seconds = timed(lambda: generator.render_from_textures(textures, pitch, yaw, return_lr=True))
            cached.append(frame)
            cached_seconds.append(seconds)
        hr_only_seconds = [timed(lambda: generator.render_from_textures(textures, pitch, yaw))[1]
                           for pitch, yaw in views[:frames]]
        identical = True
        uncached_seconds = []
        for index, (pitch, yaw) in enumerate(views[:uncached_frames]):
            frame, seconds = timed(lambda: generator.render(z, pitch, yaw, lock_view_dependence=True,
                                                            return_lr=True))
            uncached_seconds.append(seconds)
            if index < frames:
                identical &= all(torch.equal(a, b) for a, b in zip(frame, cached[index]))
    per_frame_cached = sum(cached_seconds) / len(cached_seconds)
    per_frame_uncached = sum(uncached_seconds) / len(uncached_seconds)
    return {'img_size': generator.img_size, 'textures_s': texture_seconds,
            'cached_s_per_frame': per_frame_cached, 'cached_frames': len(cached_seconds),
            'cached_hr_only_s_per_frame': sum(hr_only_seconds) / len(hr_only_seconds),
            'uncached_s_per_frame': per_frame_uncached, 'uncached_frames': len(uncached_seconds),
            # What a 60-frame video costs per frame with the textures computed once.
            'cached_video_s_per_frame': (texture_seconds + VIDEO_FRAMES * per_frame_cached) / VIDEO_FRAMES,
            'speedup_video': per_frame_uncached * VIDEO_FRAMES / (texture_seconds + VIDEO_FRAMES * per_frame_cached),
            'frames_identical': bool(identical)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', default='256,512,1024', help='comma-separated: 256, 512, 1024')
    parser.add_argument('--dataset', default='FFHQ', help='config family: FFHQ or AFHQ (no AFHQ 1024)')
    parser.add_argument('--ckpt', default=None, help='a GRAM-HD checkpoint (only with a single --sizes)')
    parser.add_argument('--frames', type=positive_int, default=2, help='cached frames timed')
    parser.add_argument('--uncached_frames', type=nonnegative_int, default=1, help='uncached frames timed')
    parser.add_argument('--threads', type=positive_int, default=None, help='CPU intra-op threads (default: torch)')
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--tiny', action='store_true', help='TINY_GRAMHD (64^2 from 16^2): a smoke run')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frames < 1 or args.uncached_frames < 1:
        raise SystemExit("--frames and --uncached_frames must be >= 1")
    names = ['TINY_GRAMHD'] if args.tiny else [f'GRAMHD{int(s)}_{args.dataset}' for s in args.sizes.split(',')]
    if args.ckpt and len(names) != 1:
        raise SystemExit("--ckpt needs exactly one size in --sizes")
    environment = {'torch': torch.__version__, 'threads': torch.get_num_threads(),
                   'cpu': platform.processor() or platform.machine(), 'device': 'cpu'}
    print(json.dumps(environment))
    results = []
    for name in names:
        if args.ckpt:
            # --sizes names the config of an official checkpoint; ours carry their own config, which wins
            generator = load_generator(args.ckpt, default_config=name)
            name = os.path.basename(args.ckpt)
        else:
            torch.manual_seed(0)
            generator = build_generator(name).eval()
        row = dict(bench_size(generator, args.frames, args.uncached_frames), config=name)
        results.append(row)
        print(f"{name:>16} {row['img_size']:>4}^2: uncached {row['uncached_s_per_frame']:8.2f} s/frame "
              f"({row['uncached_frames']} frames) | cached {row['cached_s_per_frame']:7.3f} s/frame "
              f"({row['cached_frames']} frames; HR only {row['cached_hr_only_s_per_frame']:.3f}) + textures "
              f"{row['textures_s']:.2f} s once per seed | "
              f"60-frame video {row['cached_video_s_per_frame']:.3f} s/frame, x{row['speedup_video']:.1f} | "
              f"frames identical: {row['frames_identical']}", flush=True)
        del generator
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump({'environment': environment, 'results': results}, stream, indent=1)
    return 0 if all(row['frames_identical'] for row in results) else 1


if __name__ == '__main__':
    sys.exit(main())
