"""`talksplat view` in a real browser: Debian's headless chromium driven through chromedriver
(selenium), a real viser server, real rasterization.

Needs chromium and chromedriver (`scripts/install_test_tools.sh`, run by `.ci/run`); without them the
tests skip and say so (set TALKSPLAT_REQUIRE_BROWSER=1 to fail instead).  Screenshots are kept in
`test-artifacts/viewer/` (git-ignored).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e  # whole commands on real media (docs/architecture.md: tests)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "viewer"
BACKGROUND = (0.2, 0.3, 0.4)
RESOLUTION = 192


def _find(env: str, candidates: list[str]) -> str | None:
    for c in ([os.environ[env]] if os.environ.get(env) else []) + candidates:
        path = shutil.which(c) or (c if os.path.isfile(c) else None)
        if path and subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0:
            return path
    return None


def _unavailable(reason: str):
    if os.environ.get("TALKSPLAT_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    chromium = _find("TALKSPLAT_CHROMIUM", ["chromium", "chromium-browser"])
    driver = _find("TALKSPLAT_CHROMEDRIVER", ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
    if chromium is None or driver is None:
        _unavailable("no working chromium + chromedriver: run scripts/install_test_tools.sh (apt, needs root or sudo)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800",
                "--force-device-scale-factor=1", "--use-gl=angle", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(arg)
    # An explicit driver path: Selenium Manager is never asked to download anything.
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    """A fresh open-head avatar with one Gaussian per face (9,444)."""
    from talksplat.avatar import init_avatar, save_avatar
    from talksplat.rigs import load_rig

    return save_avatar(init_avatar(load_rig("open"), per_face=1), tmp_path_factory.mktemp("view") / "head.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def viewer(*args: str):
    """Start `talksplat view ARGS` on a free loopback port; yields (process, url, output lines)."""
    cmd = [sys.executable, "-m", "talksplat.cli", "view", *args, "--port", str(_free_port()),
           "--resolution", str(RESOLUTION), "--moving-resolution", str(RESOLUTION), "--device", "cpu",
           "--background", *map(str, BACKGROUND)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        url, deadline = None, time.time() + 120
        while url is None and time.time() < deadline and proc.poll() is None:
            for line in list(lines):
                m = re.search(r"talksplat view: (http://127\.0\.0\.1:\d+)", line)
                if m:
                    url = m.group(1)
            time.sleep(0.1)
        assert url, f"the viewer did not start: {''.join(lines)}"
        yield proc, url, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _stop(proc, lines) -> None:
    """Ctrl-C: the server stops cleanly, promptly, with exit status 0."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, "".join(lines)
    time.sleep(0.2)
    assert any("talksplat view: stopped" in line for line in lines), "".join(lines)
    assert not any("Traceback" in line for line in lines), "".join(lines)


def _wait(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if isinstance(value, np.ndarray) or value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _frames(driver) -> tuple[int, bool]:
    """(frames shown, last was full resolution) from the statistics panel."""
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.TAG_NAME, "body").text
    m = re.search(r"\((full|moving)\)\s+frames\s+(\d+)", text)
    return (int(m.group(2)), m.group(1) == "full") if m else (0, False)


def _canvas_image(driver) -> np.ndarray:
    """The 3D canvas as [H, W, 3] uint8, cut out of a page screenshot."""
    import imageio.v3 as iio
    from selenium.webdriver.common.by import By

    page = iio.imread(io.BytesIO(driver.get_screenshot_as_png()))[..., :3]
    r = max((c.rect for c in driver.find_elements(By.TAG_NAME, "canvas")), key=lambda r: r["width"] * r["height"])
    x, y, w, h = (int(round(r[k])) for k in ("x", "y", "width", "height"))
    return page[y:y + h, x:x + w]


def _head_pixels(img: np.ndarray) -> tuple[float, float]:
    """(fraction of the centre that is not background, largest difference from the background at the
    right edge), colours compared in 0..255."""
    bg = np.array(BACKGROUND) * 255
    H, W = img.shape[:2]
    centre = img[int(0.35 * H):int(0.65 * H), int(0.4 * W):int(0.6 * W)].astype(float)
    edge = img[int(0.3 * H):int(0.7 * H), int(0.93 * W):int(0.98 * W)].astype(float)
    return float((np.abs(centre - bg).max(-1) > 40).mean()), float(np.abs(edge - bg).max())


def _save(img: np.ndarray, name: str) -> Path:
    import imageio.v3 as iio

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    iio.imwrite(path, img)
    print(f"browser screenshot: {path}")
    return path


def test_browser_shows_the_avatar_and_expressions_change_it(browser, avatar_file, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    shots = tmp_path / "shots"
    with viewer(str(avatar_file), "--screenshot-dir", str(shots)) as (proc, url, lines):
        browser.get(url)
        _wait(lambda: _frames(browser)[0] > 0 and _frames(browser)[1], 120, "a rendered frame")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "9,444" in body and "CPU" in body and re.search(r"render\s+\d+\s*ms", body), body

        def head_shown():
            img = _canvas_image(browser)
            centre, edge = _head_pixels(img)
            return img if centre > 0.8 and edge < 25 else None

        neutral = _wait(head_shown, 60, "the avatar in the canvas centre over our background")
        _save(neutral, "neutral.png")

        # Open the jaw with the jawOpen expression slider (keyboard: End = maximum).
        label = browser.find_element(By.XPATH, "//label[normalize-space()='jawOpen']")
        slider = browser.find_element(By.ID, label.get_attribute("for"))
        thumb = slider.find_element(By.CSS_SELECTOR, "[role=slider]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", thumb)
        n0 = _frames(browser)[0]
        thumb.send_keys(Keys.END)
        _wait(lambda: thumb.get_attribute("aria-valuenow") == "1", 20, "jawOpen = 1 in the slider")
        _wait(lambda: _frames(browser)[0] > n0 and _frames(browser)[1], 120, "a frame with the jaw open")
        H = neutral.shape[0]

        def mouth_changed():
            img = _canvas_image(browser)
            if img.shape != neutral.shape:
                return None
            diff = np.abs(img.astype(float) - neutral.astype(float)).sum(-1)
            lower, top = diff[int(0.55 * H):int(0.8 * H)].mean(), diff[:int(0.3 * H)].mean()
            return img if lower > 1.0 and lower > 5 * top else None

        opened = _wait(mouth_changed, 60, "the rendered mouth to open")
        _save(opened, "jaw_open.png")

        # The screenshot button writes a PNG at full resolution.
        button = browser.find_element(By.XPATH, "//button[normalize-space()='Screenshot']")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", button)
        png = _wait(lambda: next(iter(shots.glob("*.png")), None) if shots.is_dir() else None, 60, "a screenshot PNG")
        import imageio.v3 as iio

        written = iio.imread(png)
        assert max(written.shape[:2]) == RESOLUTION and written.shape[2] == 3
        _stop(proc, lines)


def _wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((0.2 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes())
    return path


def test_browser_plays_a_driven_sequence_with_audio(browser, avatar_file, tmp_path):
    from selenium.webdriver.common.by import By

    from talksplat.rigs import load_rig

    rig = load_rig("open")
    T = 75  # 3 s at 25 fps
    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = 0.25 * (1 - np.cos(np.linspace(0, 6 * np.pi, T))) / 2
    np.savez(tmp_path / "drive.npz", shape=np.zeros(rig.num_shape, np.float32),
             expression=np.zeros((T, rig.num_expression), np.float32), global_rot=np.zeros((T, 3), np.float32),
             neck=np.zeros((T, 3), np.float32), jaw=jaw, eyes=np.zeros((T, 2, 3), np.float32),
             translation=np.zeros((T, 3), np.float32), fps=np.float32(25.0), audio=np.array("speech.wav"))
    _wav(tmp_path / "speech.wav", T / 25)
    with viewer(str(avatar_file), "--params", str(tmp_path / "drive.npz")) as (proc, url, lines):
        browser.get(url)
        _wait(lambda: _frames(browser)[0] > 0, 120, "a rendered frame")
        audio = _wait(lambda: browser.find_elements(By.ID, "talksplat-audio"), 30, "the <audio> element")[0]
        assert audio.get_attribute("src").startswith("data:audio/wav;base64,")
        assert browser.execute_script("return arguments[0].duration", audio) == pytest.approx(3.0, abs=0.05)

        def clock() -> int:
            m = re.search(r"frame (\d+) / 74", browser.find_element(By.TAG_NAME, "body").text)
            return int(m.group(1)) if m else -1

        assert clock() == 0
        play = browser.find_element(By.XPATH, "//button[normalize-space()='Play']")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", play)
        # Frames advance on the server; the browser's audio was started at the same time step.
        _wait(lambda: clock() >= 10, 30, "playback to advance")
        _wait(lambda: browser.execute_script("return !arguments[0].paused && arguments[0].currentTime > 0.2", audio),
              20, "the audio to play in sync")
        pause = browser.find_element(By.XPATH, "//button[normalize-space()='Pause']")
        browser.execute_script("arguments[0].click();", pause)
        _wait(lambda: browser.execute_script("return arguments[0].paused", audio), 20, "the audio to pause")
        frame_at_pause = clock()
        audio_at_pause = browser.execute_script("return arguments[0].currentTime", audio)
        # Audio and frames stopped at the same time step (within a few frames: the server's clock and
        # the browser's ran separately while playing).
        assert abs(audio_at_pause * 25 - frame_at_pause) <= 6, (audio_at_pause, frame_at_pause)
        time.sleep(0.5)
        assert clock() == frame_at_pause
        _save(_canvas_image(browser), "driven_paused.png")
        _stop(proc, lines)
