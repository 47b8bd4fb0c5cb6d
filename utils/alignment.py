"""Landmark-based alignment and poses for dataset preprocessing (FFHQ / user faces, CAT / AFHQ cats).

Everything here works on one image and raises ValueError with the file, value and expectation when the
input is unusable; `preprocess_dataset.py` turns those errors into lines of `skipped.txt`.

Coordinate conventions (those of the official preprocessing, see gram.md 7.3-7.4):
- Landmark files hold image coordinates: x to the right, y down, in source pixels.
- Before fitting, y is flipped to point up (faces: y <- H - 1 - y, cats: y <- H - y; the official code
  differs by that one pixel and we keep both, the crop maps back with the same rule).
- The weak-perspective fit ("POS") finds rows R1, R2 and a translation t with
      landmark_xy ~= (R1 . X + t_x, R2 . X + t_y)
  for the 3D template points X. R1 and R2 are the camera's right and up axes written in template
  coordinates, times the scale s in source pixels per template unit. R1 x R2 points from the head towards
  the camera.
"""
import math

import numpy as np
import scipy.io
from PIL import Image

# Deep3DFaceRecon's 5-point 3D face template (BFM units, head facing +z, y up): left eye, right eye, nose
# tip, left mouth corner, right mouth corner ("left" = image left for a frontal face).
FACE_TEMPLATE = np.array([
    [-0.31148657, 0.09036078, 0.13377953],
    [0.30979887, 0.08972035, 0.13179526],
    [0.00325350, -0.24617933, 0.55244243],
    [-0.25216303, -0.58132740, 0.22405732],
    [0.24848940, -0.58125650, 0.22235769],
])

# GRAM's 9-point cat-head template (head facing +z, y up) in the order of the CAT dataset's `.cat` files:
# left eye, right eye, mouth, left ear (3 points), right ear (3 points, mirrored, in reverse order).
CAT_TEMPLATE = np.array([
    [-4.893, 0.256, 3.936],
    [4.893, 0.256, 3.936],
    [0.0, -5.859, 8.948],
    [-11.580, 3.353, -6.677],
    [-12.896, 15.930, -4.882],
    [-5.203, 9.292, -3.133],
    [5.203, 9.292, -3.133],
    [12.896, 15.930, -4.882],
    [11.580, 3.353, -6.677],
])
# The official fit trusts eyes and mouth more than the ear points.
CAT_WEIGHTS = np.array([4.0, 4.0, 2.0, 0.5, 0.2, 0.2, 0.2, 0.2, 0.5])

# FFHQ crop constants of GRAM's align_img_ffhq: a template unit becomes 95 * size / 224 output pixels.
FACE_RESCALE = 95.0
FACE_REFERENCE_SIZE = 224.0
# Cat crop: the square box is 2 * 15 * scale source pixels wide.
CAT_HALF_SIZE = 15.0
# Deep3DFaceRecon renders its face model with a camera 10 units (BFM units, about 1 m) from the head.
FACE_CAMERA_DISTANCE = 10.0

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


# -----------------------------------------------------------------------------
# Reading inputs

def _read_numbers(path):
    with open(path, 'r', encoding='utf-8', errors='strict') as handle:
        tokens = handle.read().split()
    numbers = []
    for token in tokens:
        try:
            numbers.append(float(token))
        except ValueError:
            raise ValueError(f"{path}: {token!r} is not a number") from None
    return np.array(numbers, dtype=np.float64)


def _check_landmarks(path, points, count):
    if not np.all(np.isfinite(points)):
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(points))[0]})
        raise ValueError(f"{path}: landmark(s) {bad} are not finite (NaN or inf)")
    if np.max(np.ptp(points, axis=0)) < 2.0:
        raise ValueError(f"{path}: the {count} landmarks lie within 2 px of each other; expected a face/head")
    return points


def read_lm5p(path):
    """5 face landmarks [5, 2] (x, y) from a Deep3DFaceRecon-style text file: 5 lines of 'x y'."""
    numbers = _read_numbers(path)
    if numbers.size != 10:
        raise ValueError(f"{path}: found {numbers.size} numbers, expected 5 landmarks as 5 lines of 'x y' "
                         "(left eye, right eye, nose, left mouth corner, right mouth corner)")
    return _check_landmarks(path, numbers.reshape(5, 2), 5)


def read_cat_landmarks(path):
    """9 cat landmarks [9, 2] (x, y) from a CAT-dataset `.cat` file: '9 x1 y1 ... x9 y9'."""
    numbers = _read_numbers(path)
    if numbers.size == 0:
        raise ValueError(f"{path}: empty file, expected '9 x1 y1 ... x9 y9'")
    count = numbers[0]
    if count != 9 or numbers.size != 19:
        raise ValueError(f"{path}: header says {count:g} points and {(numbers.size - 1) / 2:g} (x, y) pairs "
                         "follow; expected '9' then 9 pairs (eyes, mouth, 3 + 3 ear points)")
    return _check_landmarks(path, numbers[1:].reshape(9, 2), 9)


def read_deep3d_angles(path):
    """The 3 Euler angles [rx, ry, rz] (radians) of a Deep3DFaceRecon `.mat` pose file (key 'angle')."""
    contents = scipy.io.loadmat(path)
    if 'angle' not in contents:
        keys = sorted(k for k in contents if not k.startswith('__'))
        raise ValueError(f"{path}: no 'angle' key (found {keys}); expected a Deep3DFaceRecon pose file")
    angle = np.asarray(contents['angle'], dtype=np.float64).reshape(-1)
    if angle.size != 3 or not np.all(np.isfinite(angle)):
        raise ValueError(f"{path}: 'angle' is {angle.tolist()}, expected 3 finite Euler angles")
    return angle


def read_extrinsics(path):
    """A GRAF camera-to-world matrix ([3, 4] or [4, 4]) from a CARLA `*_extrinsics.npy` file."""
    matrix = np.load(path, allow_pickle=False)
    if matrix.shape not in ((3, 4), (4, 4)) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"{path}: shape {matrix.shape}, expected a finite 3x4 or 4x4 camera-to-world matrix")
    return matrix


# -----------------------------------------------------------------------------
# The weak-perspective fit

def fit_weak_perspective(landmarks, template, weights=None):
    """Least-squares fit of landmarks [N, 2] (y up) to template [N, 3]: returns R1 [3], R2 [3], t [2].

    This is Deep3DFaceRecon's POS: the two image coordinates are fitted independently as affine functions
    of the 3D point (8 unknowns). With weights (cats), each landmark's two equations are multiplied by
    its weight.
    """
    n = len(template)
    design = np.zeros((2 * n, 8))
    design[0::2, 0:3] = template
    design[0::2, 3] = 1.0
    design[1::2, 4:7] = template
    design[1::2, 7] = 1.0
    target = np.asarray(landmarks, dtype=np.float64).reshape(2 * n)
    if weights is not None:
        row_weights = np.repeat(np.asarray(weights, dtype=np.float64), 2)
        design = design * row_weights[:, None]
        target = target * row_weights
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    return solution[0:3], solution[4:7], np.array([solution[3], solution[7]])


def camera_angles_from_fit(row1, row2):
    """GRAM camera pose (pitch, yaw) of the view direction R1 x R2, in template coordinates.

    pitch = polar angle from +y, yaw = azimuth from +x towards +z, so a frontal view is (pi/2, pi/2).
    This is the official cats formula.
    """
    view = np.cross(row1, row2)
    view = view / np.linalg.norm(view)
    yaw = math.atan2(-view[0], view[2]) + math.pi / 2
    pitch = math.atan(-view[1] / math.hypot(view[0], view[2])) + math.pi / 2
    return pitch, yaw


# -----------------------------------------------------------------------------
# Faces: FFHQ crop, and poses for photos without a Deep3DFaceRecon fit

def align_face(image, landmarks, size):
    """GRAM's FFHQ crop (gram.md 7.3) of an RGB PIL image with 5 landmarks, to a size x size PIL image.

    The official code resizes the whole image so that a template unit spans 95 * size / 224 pixels, then
    crops a size x size window centred on the projected template origin, reflect-padding the resized
    image when the window leaves it. At size 256 this is exactly the official rule; other sizes scale it.
    """
    width, height = image.size
    points = np.array(landmarks, dtype=np.float64)
    points[:, 1] = height - 1 - points[:, 1]
    row1, row2, translation = fit_weak_perspective(points, FACE_TEMPLATE)
    scale = (np.linalg.norm(row1) + np.linalg.norm(row2)) / 2
    zoom = FACE_RESCALE * size / (FACE_REFERENCE_SIZE * scale)
    resized_width, resized_height = math.floor(width * zoom), math.floor(height * zoom)
    if resized_width < 1 or resized_height < 1:
        raise ValueError(f"the face (scale {scale:.4g} px per template unit) is too large to crop at {size}^2")
    # translation[1] is measured upwards, hence (height/2 - t_y) for the vertical offset.
    left = math.floor(resized_width / 2 - size / 2 + (translation[0] - width / 2) * zoom)
    top = math.floor(resized_height / 2 - size / 2 + (height / 2 - translation[1]) * zoom)
    return crop_resized_window(image, (resized_width, resized_height), left, top, size)


def reflect_indices(indices, length):
    """Map indices outside [0, length) back inside as numpy's pad(mode='reflect') does (edge not repeated)."""
    indices = np.asarray(indices)
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= length, period - folded, folded)


def crop_resized_window(image, resized_size, left, top, size):
    """Same pixels as image.resize(resized_size, LANCZOS), reflect-padded, then cropped at (left, top).

    Only the resized pixels that the window (or its reflection) needs are computed, via PIL's `box`
    argument: each output pixel samples the source at the same position with the same kernel width as
    in the full resize. This keeps large photos with small faces from being upsampled whole.
    """
    width, height = image.size
    resized_width, resized_height = resized_size
    x_scale, y_scale = resized_width / width, resized_height / height
    columns = reflect_indices(np.arange(left, left + size), resized_width)
    rows = reflect_indices(np.arange(top, top + size), resized_height)
    x0, x1 = int(columns.min()), int(columns.max()) + 1
    y0, y1 = int(rows.min()), int(rows.max()) + 1
    # min(): x1 / x_scale can exceed width by a rounding error, which PIL rejects.
    box = (x0 / x_scale, y0 / y_scale, min(x1 / x_scale, width), min(y1 / y_scale, height))
    region = image.resize((x1 - x0, y1 - y0), Image.LANCZOS, box=box)
    pixels = np.asarray(region)[np.ix_(rows - y0, columns - x0)]
    return Image.fromarray(np.ascontiguousarray(pixels))


def face_rotation_from_fit(row1, row2):
    """The head rotation [3, 3] (template -> camera, x right, y up, z towards the camera) of a POS fit.

    R1 and R2 are only approximately orthogonal and of equal length; the nearest matrix with orthonormal
    rows (via SVD) is completed by their cross product.
    """
    u, _, vt = np.linalg.svd(np.stack([row1, row2]), full_matrices=False)
    rows = u @ vt
    return np.stack([rows[0], rows[1], np.cross(rows[0], rows[1])])


def deep3d_angles_from_rotation(rotation):
    """Euler angles (rx, ry, rz) with rotation = Rz(rz) @ Ry(ry) @ Rx(rx), Deep3DFaceRecon's order.

    Rx, Ry, Rz are right-handed rotations about the camera's x (right), y (up) and z (towards the viewer)
    axes. rx > 0 tips the top of the head towards the camera (we look down on it: GRAM pitch < pi/2);
    ry > 0 turns the nose towards image-right (the camera sits on the head's -x side: GRAM yaw > pi/2).
    """
    ry = math.asin(max(-1.0, min(1.0, -float(rotation[2, 0]))))
    rx = math.atan2(float(rotation[2, 1]), float(rotation[2, 2]))
    rz = math.atan2(float(rotation[1, 0]), float(rotation[0, 0]))
    return rx, ry, rz


def face_angles_from_landmarks(landmarks, image_height, camera_distance=FACE_CAMERA_DISTANCE, iterations=6):
    """Estimate Deep3DFaceRecon-convention head angles (rx, ry, rz) from 5 landmarks alone.

    Written to a `.mat` file as angle = [[rx, ry, 0]], they get the labels GRAM's FFHQ reader gives FFHQ
    (gram.md 6.4): pitch = pi/2 - (rx - 0.1), yaw = pi/2 + ry. So, as in FFHQ, a head seen straight on is
    labelled (pi/2 + 0.1, pi/2): the official 0.1 rad pitch offset is part of GRAM's training labels.

    A weak-perspective fit reads the nose, which is nearer the camera and so magnified, as a pitch. We
    undo that by assuming Deep3DFaceRecon's camera (10 template units away, about 1 m) and iterating:
    each landmark is pulled towards the fitted centre by its perspective magnification, given the depth
    the previous fit assigns to its template point, and the fit is redone (POSIT-style).

    Accuracy against known poses (tests/test_preprocess.py and a 3000-pose Monte Carlo with |rx| <= 0.3,
    |ry| <= 0.5, |rz| <= 0.15; error = |estimate - truth| in rad; IOD = distance between the eyes):

        camera            landmark noise  face shape        mean pitch / yaw   95% pitch / yaw   worst
        weak perspective  0               template          0.021 / 0.016      0.041 / 0.029     0.043
        10 units (~1 m)   0               template          0.000 / 0.000      0.000 / 0.000     0.000
        10 units          1% IOD          template          0.014 / 0.013      0.034 / 0.032     0.068
        10 units          2% IOD          template          0.027 / 0.026      0.066 / 0.064     0.141
        4 units (~40 cm)  0               template          0.036 / 0.026      0.069 / 0.046     0.071
        10 units          1% IOD          +-0.02 per coord  0.047 / 0.046      0.116 / 0.113     0.241

    The last row, a face whose landmarks differ from the mean template by 0.02 units (about 3% IOD) per
    coordinate, is closest to real photos: 5 points cannot tell a long nose from a pitched head.
    """
    points = np.array(landmarks, dtype=np.float64)
    points[:, 1] = image_height - 1 - points[:, 1]
    corrected = points
    for _ in range(iterations):
        row1, row2, translation = fit_weak_perspective(corrected, FACE_TEMPLATE)
        rotation = face_rotation_from_fit(row1, row2)
        depth_towards_camera = FACE_TEMPLATE @ rotation[2]
        magnification = camera_distance / (camera_distance - depth_towards_camera)
        corrected = translation + (points - translation) / magnification[:, None]
    return deep3d_angles_from_rotation(rotation)


# -----------------------------------------------------------------------------
# Cats: weighted fit, roll removal, crop and pose (gram.md 7.4)

def _signed_angle(from_vector, to_vector, axis):
    return math.atan2(float(np.dot(np.cross(from_vector, to_vector), axis)), float(np.dot(from_vector, to_vector)))


def cat_roll(row1, row2, landmarks_up):
    """Official roll (radians, counter-clockwise on screen) of a cat head from its fit and eye line.

    roll1 is the camera's roll about the view axis relative to a level camera (one whose right axis is
    horizontal, up x view); roll2 is the tilt of the eye line. The official rule starts at the eye line and
    moves towards roll1 by ln(|roll1 - roll2| in degrees) degrees. For differences below 1 degree that
    logarithm is negative (at 0 it is -inf and the official result is NaN), so we clamp it at 0 there:
    the eye-line roll is used. Differences of 1 degree or more are handled exactly as officially.
    """
    view = np.cross(row1, row2)
    view = view / np.linalg.norm(view)
    level_right = np.cross([0.0, 1.0, 0.0], view)
    level_right = level_right / np.linalg.norm(level_right)
    level_up = np.cross(view, level_right)
    roll1 = (_signed_angle(row1, level_right, view) + _signed_angle(row2, level_up, view)) / 2
    eye_line = landmarks_up[1] - landmarks_up[0]
    roll2 = math.atan2(eye_line[1], eye_line[0])
    difference = math.degrees(roll1 - roll2)
    if abs(difference) <= 1.0:
        return roll2
    return math.radians(math.degrees(roll2) + math.copysign(math.log(abs(difference)), difference))


def align_cat(image, landmarks, size):
    """GRAM's cat crop of an RGB PIL image with 9 `.cat` landmarks: (size x size PIL image, pitch, yaw).

    The image is zero-padded, rotated about the projected template origin to remove the roll, and the
    square of half-size 15 * scale around that origin is resized to size x size.
    """
    width, height = image.size
    points = np.array(landmarks, dtype=np.float64)
    points[:, 1] = height - points[:, 1]
    row1, row2, translation = fit_weak_perspective(points, CAT_TEMPLATE, CAT_WEIGHTS)
    if not np.all(np.isfinite(translation)) or np.linalg.norm(np.cross(row1, row2)) < 1e-9:
        raise ValueError("the cat landmarks give a degenerate fit (no head rotation can explain them)")
    pitch, yaw = camera_angles_from_fit(row1, row2)
    roll = cat_roll(row1, row2, points)
    half = CAT_HALF_SIZE * (0.75 * np.linalg.norm(row1) + 0.25 * np.linalg.norm(row2))
    center_x, center_y = translation[0], height - translation[1]
    # Official padding is floor(half); more is added only when the box would leave the padded canvas
    # (a head centred outside the photo), where the official code would fail.
    overshoot = max(half - center_x, center_x + half - width, half - center_y, center_y + half - height)
    pad = max(math.floor(half), math.ceil(overshoot), 0)
    canvas = Image.new('RGB', (width + 2 * pad, height + 2 * pad))
    canvas.paste(image, (pad, pad))
    center = (center_x + pad, center_y + pad)
    # PIL rotates counter-clockwise on screen; turning by -roll levels the eye line.
    rotated = canvas.rotate(-math.degrees(roll), resample=Image.BICUBIC, center=center)
    box = (center[0] - half, center[1] - half, center[0] + half, center[1] + half)
    return rotated.resize((size, size), Image.LANCZOS, box=box), pitch, yaw
