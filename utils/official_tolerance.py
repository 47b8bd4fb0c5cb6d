"""How close a render must be to the official code's images (the official fixtures' tolerance).

The first-crossing rule is discontinuous, so under float rounding a few pixels may flip between neighbouring
manifolds: images match when at least OFFICIAL_SHARE of the values are within OFFICIAL_ABS_TOL and none is
beyond OFFICIAL_MAX_TOL. The fixture tests (tests/test_gram_fixture.py, tests/test_gramhd.py) and the GPU
suite's fixture table (bench_suite.py --fixture) hold renders to it.
"""
import torch

OFFICIAL_ABS_TOL, OFFICIAL_SHARE, OFFICIAL_MAX_TOL = 1e-4, 0.999, 2e-2


def official_image_error(images, reference):
    """Distance of images from the official ones: max |difference|, the share of values within
    OFFICIAL_ABS_TOL, whether all are finite, and whether that is within the tolerance."""
    difference = (images.float() - reference).abs()
    share = (difference <= OFFICIAL_ABS_TOL).float().mean().item()
    largest = difference.max().item()
    finite = bool(torch.isfinite(images).all())
    return {'max_abs_diff': largest, 'share_within_abs_tol': share, 'finite': finite,
            'within_tolerance': finite and share >= OFFICIAL_SHARE and largest <= OFFICIAL_MAX_TOL}
