"""The viewer in a real browser: headless Chromium (Selenium + chromedriver) opens the page, drags the camera
and asks for a random seed; the image the page shows must change and equal G.render for the camera the
browser reports. Skips when Chromium, chromedriver, selenium or viser are missing (e.g. on a laptop).

Set GRAM_VIEWER_SCREENSHOT=path to keep a copy of the page's screenshot (README's docs/viewer.png).
"""
import base64
import io
import math
import os
import shutil
import tempfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT

webdriver = pytest.importorskip('selenium.webdriver', reason='selenium is not installed (pip install selenium)')
pytest.importorskip('viser', reason='viser is not installed (pip install -r requirements.txt)')

from generators import load_generator  # noqa: E402
from rendering import views  # noqa: E402
from utils.images import to_uint8  # noqa: E402
from utils.seeds import latent_for_seed  # noqa: E402

CHROMIUM = next((path for path in map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome')) if path), None)
CHROMEDRIVER = shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason='headless Chromium and chromedriver are not installed '
                                       '(Debian: apt-get install -y chromium chromium-driver)')

IMG_SIZE, PREVIEW_SIZE = 96, 32
TIMEOUT = 25  # seconds for any one thing the page must do; the whole test takes about 15 s on 2 cores
# Chromium as root in a container: no sandbox, no GPU (WebGL runs on SwiftShader), nothing fetched from outside.
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--enable-unsafe-swiftshader', '--disable-quic',
                  '--no-first-run', '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--disable-dev-shm-usage', '--window-size=1100,700')

# The side panel's rendered view (a blob: URL image) drawn into a canvas and read back as PNG.
READ_PANEL_IMAGE = """
const image = Array.from(document.querySelectorAll('img')).find(i => i.src.startsWith('blob:') && i.complete);
if (!image || image.naturalWidth === 0) return null;
const canvas = document.createElement('canvas');
canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
canvas.getContext('2d').drawImage(image, 0, 0);
return canvas.toDataURL('image/png');
"""


def wait_for(condition, what, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page did not {what} within {timeout} s")


def panel_image(driver):
    url = driver.execute_script(READ_PANEL_IMAGE)
    if url is None:
        return None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))).convert('RGB'))


def settled_image(driver, viewer, previous=None):
    """(panel image, view) once the viewer shows a full-size render of the browser's latest camera."""
    def ready():
        shown = viewer.shown
        if shown is None or shown.img_size != IMG_SIZE or viewer.current_view() != shown:
            return None
        image = panel_image(driver)
        if image is None or image.shape != (IMG_SIZE, IMG_SIZE, 3) or viewer.shown is not shown:
            return None
        if previous is not None and np.array_equal(image, previous):
            return None
        return image, shown
    return wait_for(ready, 'show a full-size render of the current camera')


def close(a, b):
    return np.abs(a.astype(int) - b.astype(int)).max() <= 1


def browser_pose(generator, viewer):
    """GRAM's pose and zoom of the camera the browser last reported, through the tested conversion."""
    client = next(iter(viewer.server.get_clients().values()))
    pitch, yaw, distance = views.viser_to_gram(client.camera.position, client.camera.wxyz)
    return views.clamp_pose(generator, pitch, yaw) + (distance,)


def expected_render(generator, view):
    """G.render, called here, for a view's seed, psi, pose and field of view."""
    saved = generator.camera['fov']
    generator.camera['fov'] = view.fov
    try:
        with torch.no_grad():
            image = generator.render(latent_for_seed(view.seed, generator.z_dim),
                                     torch.tensor([view.pitch], dtype=torch.float64),
                                     torch.tensor([view.yaw], dtype=torch.float64), img_size=IMG_SIZE,
                                     truncation_psi=view.truncation, lock_view_dependence=True)
    finally:
        generator.camera['fov'] = saved
    return to_uint8(image)[0]


def check_view(generator, viewer, shown_image, view):
    """The page shows G.render of the view, and the view is the browser's camera and the panel's settings."""
    pitch, yaw, distance = browser_pose(generator, viewer)
    # the viewer ignores float32 echo noise of the browser's camera (viewer.POSE_NOISE)
    assert (view.pitch, view.yaw) == pytest.approx((pitch, yaw), abs=1e-4)
    assert view.fov == pytest.approx(views.zoomed_fov(generator.camera['fov'], distance), rel=1e-3)
    assert (view.seed, view.truncation, view.mode) == (int(viewer.seed.value), float(viewer.truncation.value), 'rgb')
    assert_same_image(shown_image, expected_render(generator, view))


def assert_same_image(shown, expected):
    # The panel image travels as PNG, so it is lossless; 1 level is left for a browser's colour handling.
    difference = np.abs(shown.astype(int) - expected.astype(int))
    assert difference.max() <= 1, f"page image differs from G.render by up to {difference.max()}"


def test_browser_orbit_and_seed_show_g_render(tmp_path):
    import viewer as viewer_module
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    generator = load_generator(REPO_ROOT / 'ckpts' / 'synthetic_heads.pt')
    viewer = viewer_module.Viewer(generator, 'cpu', host='127.0.0.1', port=0, img_size=IMG_SIZE,
                                  preview_size=PREVIEW_SIZE, seed=0, truncation=0.7,
                                  output_dir=str(tmp_path / 'exports'), verbose=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix='chromium-profile-', dir=tmp_path)
    options.add_argument(f'--user-data-dir={profile}')
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(TIMEOUT)
        driver.set_script_timeout(TIMEOUT)
        driver.get(f'http://127.0.0.1:{viewer.port}/')

        # 1. the first view: the frontal camera of seed 0
        first, view = settled_image(driver, viewer)
        assert (view.seed, view.pitch, view.yaw) == pytest.approx((0, math.pi / 2, math.pi / 2), abs=1e-4)
        check_view(generator, viewer, first, view)

        # 2. drag the camera to the left in the 3D view: the camera orbits, the image follows
        canvas = wait_for(lambda: driver.find_elements(By.TAG_NAME, 'canvas'), 'draw its 3D canvas')[0]
        actions = ActionChains(driver)
        actions.move_to_element_with_offset(canvas, -150, 0).click_and_hold()
        for _ in range(4):  # a short drag: about 0.2 rad, inside the pose range
            actions.move_by_offset(-5, -1).pause(0.05)
        actions.release().perform()
        wait_for(lambda: abs(viewer.yaw - math.pi / 2) > 0.02 or None, 'report the dragged camera')
        orbited, view = settled_image(driver, viewer, previous=first)
        assert abs(view.yaw - math.pi / 2) > 0.02
        pitch_range, yaw_range = views.pose_range(generator)
        assert pitch_range[0] <= view.pitch <= pitch_range[1] and yaw_range[0] <= view.yaw <= yaw_range[1]
        check_view(generator, viewer, orbited, view)
        assert np.abs(orbited.astype(int) - first.astype(int)).mean() > 1.0

        # 3. a random seed from the page's button: another head at the same camera
        old_seed = int(viewer.seed.value)
        button = driver.find_element(By.XPATH, "//button[contains(., 'Random seed')]")
        button.click()
        wait_for(lambda: int(viewer.seed.value) != old_seed or None, 'change the seed')
        reseeded, view = settled_image(driver, viewer, previous=orbited)
        assert view.seed != old_seed
        check_view(generator, viewer, reseeded, view)
        assert np.abs(reseeded.astype(int) - orbited.astype(int)).mean() > 1.0

        # the browser's number box holds the new seed too
        seed_text = driver.execute_script(
            "return Array.from(document.querySelectorAll('input')).map(i => i.value)")
        assert str(int(viewer.seed.value)) in seed_text

        for close in driver.find_elements(By.CSS_SELECTOR, 'button.mantine-Notification-closeButton'):
            close.click()  # the "software WebGL" notice would hide part of the screenshot
        time.sleep(0.3)
        screenshot = tmp_path / 'viewer.png'
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        if os.environ.get('GRAM_VIEWER_SCREENSHOT'):
            shutil.copyfile(screenshot, os.environ['GRAM_VIEWER_SCREENSHOT'])
    finally:
        if driver is not None:
            driver.quit()
        viewer.stop()
