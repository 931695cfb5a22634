"""`talksplat view` without a browser: camera conversion, resolution handling, the render loop,
parameter files, training data and bad input (real rig, real rasterization, real viser server)."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from talksplat.avatar import init_avatar, save_avatar
from talksplat.render.camera import look_at
from talksplat.driving.fit_reader import open_fit
from talksplat.viewer.config import ViewConfig
from talksplat.viewer.inputs import Sequence, load_params_file, load_training, resolve_avatar
from talksplat.viewer.renderer import (AvatarRenderer, RenderLoop, RenderRequest, intrinsics_from_fov, render_size,
                                       viser_camera, viser_to_viewmat)
from talksplat.viewer.server import Viewer, is_loopback


def viser_pose(eye, target, up=(0.0, 1.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """The (wxyz, position) viser reports for a browser camera at `eye` looking at `target`: viser's
    own CameraHandle math (OpenCV axes: forward +z, up -y) and its own quaternion conversion."""
    import viser.transforms as vtf

    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    z = (target - eye) / np.linalg.norm(target - eye)
    y = -(up - (up @ z) * z)
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    return vtf.SO3.from_matrix(np.stack([x, y, z], axis=1)).wxyz, eye


@pytest.mark.parametrize("eye, target", [((0, 0, 1), (0, 0, 0)), ((0.3, 0.2, 0.5), (0.0, 0.05, 0.0)),
                                         ((-0.6, -0.1, -0.4), (0.1, 0.0, 0.2))])
def test_viser_camera_matches_our_look_at(eye, target):
    wxyz, pos = viser_pose(eye, target)
    ours = look_at(torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(viser_to_viewmat(wxyz, pos), ours, atol=1e-9)
    np.testing.assert_allclose(viser_to_viewmat(-wxyz, pos), ours, atol=1e-9)  # q and -q: same rotation


def test_viser_camera_projects_like_the_browser():
    """The look-at point lands at the image centre in front of the camera, world up is image up, and
    the vertical field of view spans exactly the image height."""
    wxyz, pos = viser_pose((0.2, 0.1, 0.8), (0.0, 0.0, 0.0))
    fov = math.radians(30)
    cam = viser_camera(wxyz, pos, fov, aspect=16 / 9, resolution=640)
    assert (cam.width, cam.height) == (640, 360)

    def project(p):
        x = cam.viewmat @ np.append(p, 1.0)
        uv = cam.K @ x[:3]
        return uv[:2] / uv[2], x[2]

    (u, v), depth = project(np.zeros(3))
    assert depth == pytest.approx(np.linalg.norm(pos)) and (u, v) == pytest.approx((320, 180))
    (_, v_up), _ = project(np.array([0.0, 0.05, 0.0]))
    assert v_up < 180
    # A point on the edge of the vertical field of view projects onto the top image border.
    R = cam.viewmat[:3, :3]
    fwd, up = R[2], -R[1]
    (u, v), _ = project(pos + fwd + math.tan(fov / 2) * up)
    assert (u, v) == pytest.approx((320, 0), abs=1e-6)


def test_intrinsics_from_fov():
    K = intrinsics_from_fov(math.radians(90), 200, 100)
    np.testing.assert_allclose(K, [[50, 0, 100], [0, 50, 50], [0, 0, 1]], atol=1e-9)


@pytest.mark.parametrize("aspect, res, size", [(1.0, 512, (512, 512)), (16 / 9, 512, (512, 288)),
                                               (0.5, 512, (256, 512)), (1.0, 4096, (1024, 1024)),
                                               (1.0, 3, (16, 16)), (100.0, 64, (64, 8)),
                                               (float("nan"), 128, (128, 128)), (0.0, 128, (128, 128))])
def test_render_size(aspect, res, size):
    assert render_size(aspect, res) == size


@pytest.fixture(scope="module")
def sphere_renderer(sphere_rig):
    torch.manual_seed(0)
    return AvatarRenderer(init_avatar(sphere_rig, per_face=2), sphere_rig, torch.device("cpu"), (0.0, 0.0, 1.0))


def _neutral(rig) -> dict[str, np.ndarray]:
    return {k: v[0].numpy() for k, v in rig.zero_params(1).__dict__.items()}


def test_render_callback_draws_the_avatar_at_the_requested_size(sphere_renderer, sphere_rig):
    wxyz, pos = viser_pose((0.0, 0.0, 0.5), (0.0, 0.0, 0.0))
    for res, aspect in [(64, 1.0), (96, 1.5)]:
        cam = viser_camera(wxyz, pos, math.radians(40), aspect, res)
        frame = sphere_renderer.render(_neutral(sphere_rig), cam)
        W, H = render_size(aspect, res)
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert frame.num_gaussians == sphere_renderer.num_gaussians and frame.seconds > 0
        # Blue background at the corners, the (whitish) sphere in the centre.
        assert np.abs(frame.image[0, 0].astype(int) - [0, 0, 255]).max() <= 1
        assert frame.image[H // 2, W // 2, 0] > 100
    # Opening the jaw changes the render (the lower half of the sphere is skinned to the jaw).
    cam = viser_camera(wxyz, pos, math.radians(40), 1.0, 64)
    opened = _neutral(sphere_rig)
    opened["jaw"] = np.array([0.5, 0.0, 0.0], np.float32)
    a = sphere_renderer.render(_neutral(sphere_rig), cam).image.astype(int)
    b = sphere_renderer.render(opened, cam).image.astype(int)
    assert np.abs(a - b).mean() > 1.0


def test_the_subject_frame_is_behind_the_avatar_at_the_source_camera(sphere_rig):
    """An avatar fitted over a plate: at the source camera (any field of view) the plate shows behind it, resampled
    for the browser's camera, the background colour where the plate does not reach; elsewhere the colour."""
    wxyz, pos = viser_pose((0.0, 0.0, 0.5), (0.0, 0.0, 0.0))
    src = viser_camera(wxyz, pos, math.radians(40), 1.0, 64)
    plate = np.zeros((64, 64, 3), np.uint8)
    plate[:, :32] = (255, 0, 0)  # red left half, green right half
    plate[:, 32:] = (0, 255, 0)
    torch.manual_seed(0)
    r = AvatarRenderer(init_avatar(sphere_rig, per_face=2), sphere_rig, torch.device("cpu"), (0.0, 0.0, 1.0),
                       plate=(plate, src.K, src.viewmat))
    img = r.render(_neutral(sphere_rig), src).image.astype(int)
    assert np.abs(img[2, 2] - [255, 0, 0]).max() <= 2 and np.abs(img[2, 61] - [0, 255, 0]).max() <= 2
    assert img[32, 32, 0] > 100 and img[32, 32, 1] > 100  # the (whitish) sphere in front
    wide = r.render(_neutral(sphere_rig), viser_camera(wxyz, pos, math.radians(60), 1.0, 64)).image.astype(int)
    assert np.abs(wide[1, 1] - [0, 0, 255]).max() <= 2  # beyond the plate: the colour
    assert np.abs(wide[20, 16] - [255, 0, 0]).max() <= 2 and np.abs(wide[20, 47] - [0, 255, 0]).max() <= 2
    aside = viser_pose((0.2, 0.0, 0.45), (0.0, 0.0, 0.0))
    moved = r.render(_neutral(sphere_rig), viser_camera(*aside, math.radians(40), 1.0, 64)).image.astype(int)
    assert np.abs(moved[2, 2] - [0, 0, 255]).max() <= 1  # another camera: the colour


def test_render_loop_drops_stale_requests_and_refines_when_still(sphere_renderer, sphere_rig):
    shown = []
    loop = RenderLoop(sphere_renderer, lambda frame, final: shown.append((frame.image.shape, final)), settle_s=0.3)
    loop.start()
    try:
        wxyz, pos = viser_pose((0.0, 0.0, 0.5), (0.0, 0.0, 0.0))
        frame = _neutral(sphere_rig)
        n = 30
        for i in range(n):  # a camera drag: many requests in quick succession
            loop.submit(RenderRequest(lambda res: viser_camera(wxyz, pos, 0.7, 1.0, res), frame, 128, 32))
            time.sleep(0.002)
        deadline = time.time() + 30
        while time.time() < deadline and not (shown and shown[-1][1]):
            time.sleep(0.05)
    finally:
        loop.stop()
        loop.join(5)
    assert not loop.is_alive()
    moving = [s for s, final in shown if not final]
    assert moving and all(s == (32, 32, 3) for s in moving)
    assert shown[-1] == ((128, 128, 3), True)  # full resolution once the camera stopped
    assert [final for _, final in shown].count(True) == 1
    assert loop.dropped > 0 and len(moving) < n  # stale requests were dropped, not queued


def _write_params(path, rig, T=5, **override):
    arrays = {"shape": np.zeros(rig.num_shape, np.float32), "expression": np.zeros((T, rig.num_expression)),
              "global_rot": np.zeros((T, 3)), "neck": np.zeros((T, 3)), "jaw": np.zeros((T, 3)),
              "eyes": np.zeros((T, 2, 3)), "translation": np.zeros((T, 3)), "fps": np.float64(25.0)}
    arrays["jaw"][:, 0] = np.linspace(0, 0.3, T)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_params_file_loads(tmp_path, sphere_rig):
    (tmp_path / "speech.wav").write_bytes(b"RIFF....WAVE")
    p = _write_params(tmp_path / "drive.npz", sphere_rig, T=7, fps=np.float32(30.0), audio=np.array("speech.wav"))
    seq = load_params_file(p, sphere_rig)
    assert seq.length == 7 and seq.fps == 30.0 and seq.audio == tmp_path / "speech.wav"
    f = seq.frame(6)
    assert f["jaw"][0] == pytest.approx(0.3) and f["eyes"].shape == (2, 3) and f["shape"].shape == (2,)
    assert seq.frame(100)["jaw"][0] == pytest.approx(0.3)  # clamped to the last frame


@pytest.mark.parametrize("override, message", [
    ({"jaw": None}, "missing arrays ['jaw']"),
    ({"fps": None}, "missing 'fps'"),
    ({"fps": np.float64(0.0)}, "fps must be a positive number"),
    ({"expression": np.zeros((5, 7))}, "'expression' has shape (5, 7)"),
    ({"shape": np.zeros(9)}, "'shape' has 9 components"),
    ({"neck": np.zeros((4, 3))}, "'neck' has 4 frames"),
    ({"eyes": np.full((5, 2, 3), np.nan)}, "non-finite"),
    ({"expression": np.zeros((0, 3)), "global_rot": np.zeros((0, 3)), "neck": np.zeros((0, 3)),
      "jaw": np.zeros((0, 3)), "eyes": np.zeros((0, 2, 3)), "translation": np.zeros((0, 3))}, "no frames"),
])
def test_bad_params_files_name_the_file(tmp_path, sphere_rig, override, message):
    p = _write_params(tmp_path / "bad.npz", sphere_rig, **override)
    with pytest.raises(ValueError) as e:
        load_params_file(p, sphere_rig)
    assert str(p) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_unreadable_params_files(tmp_path, sphere_rig):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    for path, message in [(tmp_path / "junk.npz", "not a readable .npz"), (tmp_path / "nope.npz", "not found")]:
        with pytest.raises(ValueError, match=message) as e:
            load_params_file(path, sphere_rig)
        assert str(path) in str(e.value)


def test_loopback_hosts():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")


def _fit_folder(tmp_path, rig, T=6):
    """A fit folder as `talksplat fit` leaves it: avatar (header names the dataset), tuned parameters,
    and a dataset whose first training camera is off to the side."""
    ds = tmp_path / "dataset"
    ds.mkdir()
    c2w = np.eye(4)
    c2w[:3, :3] = np.diag([1.0, -1.0, -1.0])  # the monocular convention: at the origin, looking down -z
    c2w[:3, 3] = [0.05, 0.0, 0.6]
    (ds / "meta.json").write_text(json.dumps({"format": "talksplat-dataset", "version": 1, "fps": 30,
                                              "split": {"train": [1, 2, 3], "heldout": [4, 5]}, "audio": None}))
    frames = [{"image": f"images/cam0/{t:05d}.png", "timestep": t, "camera": "cam0", "width": 200, "height": 100,
               "K": [[150, 0, 100], [0, 150, 50], [0, 0, 1]], "c2w": c2w.tolist()} for t in range(1, T)]
    (ds / "transforms.json").write_text(json.dumps({"frames": frames}))
    fit = tmp_path / "fit"
    fit.mkdir()
    save_avatar(init_avatar(rig, per_face=1), fit / "avatar.safetensors", extra={"dataset": str(ds)})
    _write_params(fit / "tuned_params.npz", rig, T=T)
    return fit, c2w


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fit_folder_gives_training_camera_sequence_and_playback(tmp_path, sphere_rig, sphere_renderer):
    fit, c2w = _fit_folder(tmp_path, sphere_rig)
    avatar_file, fit_dir = resolve_avatar(fit)
    assert avatar_file == fit / "avatar.safetensors" and fit_dir == fit
    assert resolve_avatar(avatar_file) == (avatar_file, fit)
    seq, cam = load_training(open_fit(fit_dir), sphere_rig)
    assert seq.length == 6 and seq.fps == 30.0 and seq.audio is None
    np.testing.assert_allclose(cam.c2w, c2w)
    assert (cam.width, cam.height) == (200, 100)

    cfg = ViewConfig(avatar=fit, port=_free_port(), resolution=64)
    viewer = Viewer(cfg, sphere_renderer, sphere_rig, [seq], cam, seq.shape, title="test")
    try:
        # "Reset camera" goes to the training camera: same centre, same viewing direction, same
        # vertical field of view; a viser camera there converts back to the dataset's viewmat.
        pos, target, up, fov = viewer.home
        np.testing.assert_allclose(pos, c2w[:3, 3])
        np.testing.assert_allclose((target - pos) / np.linalg.norm(target - pos), c2w[:3, 2], atol=1e-9)
        assert fov == pytest.approx(2 * math.atan(50 / 150))
        wxyz, p = viser_pose(pos, target, up)
        np.testing.assert_allclose(viser_to_viewmat(wxyz, p), np.linalg.inv(c2w), atol=1e-9)
        # The time slider sets every field of the frame; playback runs on the clock and loops.
        viewer._seek(5)
        assert viewer.state["jaw"][0] == pytest.approx(0.3)
        viewer._play()
        time.sleep(0.25)  # 30 fps, 6 frames: the sequence wraps within 0.2 s
        viewer._pause()
        assert not viewer.playing
        assert viewer.gui_time.value == viewer.time_index
        np.testing.assert_allclose(viewer.state["jaw"], seq.frame(viewer.time_index)["jaw"])
        # Overlays follow the parameters: the rig wireframe is the posed mesh, the centres the posed means.
        viewer.wire.visible = viewer.centres.visible = True
        viewer._seek(5)
        params = sphere_rig.zero_params(1)
        params.jaw[0, 0] = 0.3
        with torch.no_grad():
            verts = sphere_rig(params).vertices
            means = sphere_renderer.avatar.posed_geometry(verts, sphere_rig.faces)[0]
        np.testing.assert_allclose(viewer.wire.vertices, verts[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(viewer.centres.points, means[0].numpy(), atol=2e-3)  # stored as float16
    finally:
        viewer.close()


def talksplat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talksplat.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def open_avatar(tmp_path_factory):
    from talksplat.rigs import load_rig

    path = tmp_path_factory.mktemp("avatar") / "small.safetensors"
    return save_avatar(init_avatar(load_rig("open"), per_face=1), path)


@pytest.mark.parametrize("case, message", [
    ("missing", "avatar not found"),
    ("not_a_fit", "not a fit folder"),
    ("wrong_rig", "rig"),
    ("bad_npz", "not a readable .npz"),
    ("wrong_npz", "rig 'open_head' has"),
    ("both", "give one of them"),
    ("resolution", "--resolution 2048"),
])
def test_bad_input_is_one_clear_line(tmp_path, sphere_rig, open_avatar, case, message):
    args = [str(open_avatar), "--port", str(_free_port())]
    named = str(open_avatar)
    if case == "missing":
        named = str(tmp_path / "nope.safetensors")
        args[0] = named
    elif case == "not_a_fit":
        named = args[0] = str(tmp_path)
    elif case == "wrong_rig":
        named = args[0] = str(save_avatar(init_avatar(sphere_rig, per_face=1), tmp_path / "sphere.safetensors"))
    elif case == "bad_npz":
        (tmp_path / "bad.npz").write_text("hello")
        named = str(tmp_path / "bad.npz")
        args += ["--params", named]
    elif case == "wrong_npz":
        named = str(_write_params(tmp_path / "drive.npz", sphere_rig))
        args += ["--params", named]
    elif case == "both":
        args += ["--params", "x.npz", "--audio", "x.wav"]
        named = "--audio"
    elif case == "resolution":
        args += ["--resolution", "2048"]
        named = "--resolution"
    r = talksplat("view", *args)
    assert r.returncode != 0
    assert message in r.stderr and named in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "talksplat view: http" not in r.stdout


def test_view_is_a_subcommand():
    r = talksplat("view", "--help")
    assert r.returncode == 0 and "AVATAR" in r.stdout and "--params" in r.stdout and "--audio" in r.stdout


def test_sequence_frame_includes_shape(sphere_rig):
    from talksplat.rigs import RigSequence

    seq = Sequence("s", RigSequence(np.ones(2), {
        "expression": np.ones((2, 3)), "global_rot": np.zeros((2, 3)), "neck": np.zeros((2, 3)),
        "jaw": np.zeros((2, 3)), "eyes": np.zeros((2, 2, 3)), "translation": np.zeros((2, 3))}), 25.0)
    f = seq.frame(1)
    assert set(f) == {"shape", "expression", "global_rot", "neck", "jaw", "eyes", "translation"}


def test_audio_for_the_page(tmp_path):
    from talksplat.viewer.playback import wav_data_uri

    (tmp_path / "a.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    (tmp_path / "a.mp3").write_bytes(b"ID3\x03")
    uri, why = wav_data_uri(tmp_path / "a.wav")
    assert uri == "data:audio/wav;base64,UklGRgAAAABXQVZF" and why == ""
    assert wav_data_uri(tmp_path / "a.mp3") == (None, "audio a.mp3 is not a WAV file")
    assert wav_data_uri(tmp_path / "none.wav")[0] is None
