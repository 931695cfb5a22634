"""Multi-view calibration files (cameras.json) and the VHAP / GaussianAvatars NeRF-style layout."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from talksplat.core.errors import InputError, OutputError, TalksplatError
from talksplat.data_prep.calibration import (CalibrationError, CameraCalib, load_calibration, match_videos,
                                             undistort_image, undistort_points, write_calibration)
from talksplat.data_prep.dataset import DatasetError, load_dataset
from talksplat.data_prep.nerf_import import (FLAME_NPZ_KEYS, NerfImportError, export_nerf_dataset,
                                             import_nerf_dataset)


# ============================================================================= calibration
def _rot(axis, angle) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.asarray(axis, float) / np.linalg.norm(axis) * angle)
    return R


def _calibs() -> list[CameraCalib]:
    K0 = np.array([[1400.0, 0, 955.5], [0, 1395.0, 541.25], [0, 0, 1]])
    K1 = np.array([[900.0, 0.5, 640.0], [0, 905.0, 360.0], [0, 0, 1]])
    return [
        CameraCalib("cam0", 1920, 1080, K0, np.array([-0.25, 0.08, 1e-3, -5e-4, -0.01]), _rot([0, 1, 0], 0.3),
                    np.array([0.05, -0.02, 1.1])),
        CameraCalib("cam1", 1280, 720, K1, np.zeros(0), _rot([1, 2, 0.5], -0.4), np.array([-0.1, 0.0, 0.9])),
    ]


def _write_doc(path, doc) -> None:
    path.write_text(json.dumps(doc))


def test_calibration_round_trip(tmp_path):
    calibs = _calibs()
    path = write_calibration(tmp_path / "sub" / "cameras.json", calibs)
    assert not [p for p in path.parent.iterdir() if p.name != "cameras.json"]  # no temporary left behind
    back = load_calibration(path)
    assert [c.id for c in back] == ["cam0", "cam1"]
    for a, b in zip(calibs, back):
        assert (a.width, a.height) == (b.width, b.height)
        for k in ("K", "dist", "R", "t"):
            np.testing.assert_allclose(getattr(b, k), getattr(a, k), rtol=0, atol=1e-12)
        assert b.K.dtype == np.float64 and b.source == path
        np.testing.assert_allclose(b.viewmat @ b.c2w, np.eye(4), atol=1e-12)
        X = np.array([0.01, 0.02, 0.03])
        np.testing.assert_allclose((b.viewmat @ np.append(X, 1))[:3], b.R @ X + b.t, atol=1e-12)
        np.testing.assert_allclose(b.c2w[:3, 3], b.center, atol=1e-12)
    # optional / short distortion: absent -> none, all zero -> none, 2 coefficients -> padded to 4
    doc = json.loads(path.read_text())
    del doc["cameras"][0]["distortion"]
    doc["cameras"][1]["distortion"] = [-0.1, 0.02]
    _write_doc(path, doc)
    a, b = load_calibration(path)
    assert a.dist.size == 0 and not a.has_distortion
    np.testing.assert_array_equal(b.dist, [-0.1, 0.02, 0, 0])


def _good_doc() -> dict:
    return {"cameras": [c.to_json() for c in _calibs()]}


def _bad(doc_fn):
    def make(path):
        doc = _good_doc()
        doc_fn(doc)
        _write_doc(path, doc)
    return make


BAD = {
    "unreadable": (lambda p: None, "cannot read"),
    "invalid_json": (lambda p: p.write_text('{"cameras": [}'), "invalid JSON"),
    "not_an_object": (lambda p: p.write_text("[1, 2]"), "'cameras'"),
    "missing_key": (_bad(lambda d: d["cameras"][1].pop("K")), "lacks 'K'"),
    "K_shape": (_bad(lambda d: d["cameras"][0].__setitem__("K", [[1, 0, 2], [0, 1, 2]])), "'K' has shape [2, 3]"),
    "R_shape": (_bad(lambda d: d["cameras"][0].__setitem__("R", [1, 0, 0])), "'R' has shape [3]"),
    "t_shape": (_bad(lambda d: d["cameras"][0].__setitem__("t", [1, 0])), "'t' has shape [2]"),
    "R_scaled": (_bad(lambda d: d["cameras"][0].__setitem__("R", (1.01 * np.eye(3)).tolist())), "not a rotation"),
    "R_reflection": (_bad(lambda d: d["cameras"][1].__setitem__("R", np.diag([1.0, 1, -1]).tolist())),
                     "not a rotation"),
    "duplicate_id": (_bad(lambda d: d["cameras"][1].__setitem__("id", "cam0")), "duplicate camera ids ['cam0']"),
    "zero_width": (_bad(lambda d: d["cameras"][0].__setitem__("width", 0)), "'width' must be positive"),
    "negative_height": (_bad(lambda d: d["cameras"][1].__setitem__("height", -5)), "'height' must be positive"),
    "bad_K": (_bad(lambda d: d["cameras"][0].__setitem__("K", [[0, 0, 1], [0, 1, 1], [0, 0, 1]])), "fx, fy > 0"),
    # non-finite numbers (JSON NaN / Infinity), overflowing integers, non-rotations: one line naming the camera
    "K_nan": (_bad(lambda d: d["cameras"][0]["K"][0].__setitem__(2, math.nan)), "('cam0'): 'K' has non-finite"),
    "K_huge_int": (_bad(lambda d: d["cameras"][1]["K"][0].__setitem__(0, 10 ** 400)),
                   "('cam1'): 'K' is not a numeric array"),
    "dist_inf": (_bad(lambda d: d["cameras"][0]["distortion"].__setitem__(1, math.inf)),
                 "('cam0'): 'distortion' has non-finite"),
    "R_nan": (_bad(lambda d: d["cameras"][1]["R"][2].__setitem__(0, math.nan)), "('cam1'): 'R' has non-finite"),
    "R_zero": (_bad(lambda d: d["cameras"][1].__setitem__("R", np.zeros((3, 3)).tolist())),
               "('cam1'): 'R' is not a rotation"),
    "t_inf": (_bad(lambda d: d["cameras"][0]["t"].__setitem__(2, -math.inf)), "('cam0'): 't' has non-finite"),
    "width_nan": (_bad(lambda d: d["cameras"][0].__setitem__("width", math.nan)),
                  "('cam0'): 'width' must be an integer number of pixels, got nan"),
    "height_inf": (_bad(lambda d: d["cameras"][1].__setitem__("height", math.inf)),
                   "('cam1'): 'height' must be an integer number of pixels, got inf"),
    "width_fraction": (_bad(lambda d: d["cameras"][1].__setitem__("width", 12.5)), "'width' must be an integer"),
    "id_newline": (_bad(lambda d: d["cameras"][1].__setitem__("id", "cam\n1")), "camera 1 ('cam\\n1'): 'id' must be"),
    "deep_nesting": (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_calibration(tmp_path, case):
    path = tmp_path / "cameras.json"
    make, expected = BAD[case]
    make(path)
    with pytest.raises(CalibrationError) as e:
        load_calibration(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg and expected in msg, msg
    assert isinstance(e.value, InputError) and isinstance(e.value, TalksplatError)


def test_match_videos(tmp_path):
    path = write_calibration(tmp_path / "cameras.json", _calibs())
    calibs = load_calibration(path)
    got = match_videos(calibs, [tmp_path / "cam1.mp4", "videos/cam0.MOV"])
    assert [c.id for c in got] == ["cam1", "cam0"]
    with pytest.raises(CalibrationError) as e:
        match_videos(calibs, ["cam0.mp4", "cam2.mp4"])
    msg = str(e.value)
    assert msg.startswith(str(path)) and "cam2.mp4" in msg and "'cam1'" in msg and "\n" not in msg, msg
    with pytest.raises(CalibrationError, match="cameras without a video"):
        match_videos(calibs, ["cam0.mp4"], calib_path="rig/cameras.json")
    with pytest.raises(CalibrationError, match="same camera id"):
        match_videos(calibs, ["a/cam0.mp4", "b/cam0.mp4", "cam1.mp4"])


def _project(calib: CameraCalib, X: np.ndarray, dist) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(calib.R)
    uv, _ = cv2.projectPoints(X, rvec, calib.t, calib.K, np.asarray(dist, float))
    return uv.reshape(-1, 2)


def test_undistort_points_matches_ideal_projection():
    cam = _calibs()[0]
    rng = np.random.default_rng(0)
    # points spread over the whole image (corners included), 0.8 - 1.4 m from the camera
    uv = rng.uniform([20, 20], [cam.width - 20, cam.height - 20], size=(300, 2))
    uv = np.concatenate([uv, [[5, 5], [cam.width - 5, cam.height - 5], [5, cam.height - 5]]])
    rays = np.linalg.solve(cam.K, np.concatenate([uv, np.ones((len(uv), 1))], 1).T).T
    Xc = rays * rng.uniform(0.8, 1.4, size=(len(uv), 1))
    X = (cam.R.T @ (Xc - cam.t).T).T  # world points
    ideal = _project(cam, X, np.zeros(5))
    distorted = _project(cam, X, cam.dist)
    assert np.abs(distorted - ideal).max() > 20  # the distortion is substantial
    und = undistort_points(distorted, cam)
    assert np.abs(und - ideal).max() < 0.05
    # no distortion: a no-op
    flat = CameraCalib(cam.id, cam.width, cam.height, cam.K, np.zeros(5), cam.R, cam.t)
    np.testing.assert_array_equal(undistort_points(distorted, flat), distorted)


def test_undistort_image():
    cam = _calibs()[0].scaled(0.25)  # 480 x 270: fast
    img = np.zeros((cam.height, cam.width), np.float32)
    flat = CameraCalib(cam.id, cam.width, cam.height, cam.K, np.zeros(0), cam.R, cam.t)
    assert undistort_image(img, flat) is img
    # a blob drawn at the distorted position of a point lands at the ideal position
    ideal = np.array([[60.0, 50.0]])
    x = np.linalg.solve(cam.K, [ideal[0, 0], ideal[0, 1], 1.0])
    Xw = cam.R.T @ (x - cam.t)
    d = _project(cam, Xw[None], cam.dist)[0]
    yy, xx = np.mgrid[: cam.height, : cam.width]
    img = np.exp(-((xx - d[0]) ** 2 + (yy - d[1]) ** 2) / (2 * 2.0 ** 2)).astype(np.float32)
    out = undistort_image(img, cam)
    assert out.shape == img.shape
    win = (np.abs(xx - ideal[0, 0]) < 12) & (np.abs(yy - ideal[0, 1]) < 12)
    w = out * win
    centroid = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
    assert np.abs(centroid - ideal[0]).max() < 0.3, (centroid, ideal, d)
    with pytest.raises(CalibrationError, match="480x270"):
        undistort_image(np.zeros((10, 10), np.uint8), cam)


def test_scaled():
    cam = _calibs()[0]
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (960, 540)
    np.testing.assert_allclose(half.K[[0, 1], [0, 1]], cam.K[[0, 1], [0, 1]] * 0.5)
    # cv2.resize maps pixel centres: u' = r (u + 0.5) - 0.5, so a projected point follows that mapping
    X = np.array([[0.02, -0.03, 0.4], [-0.1, 0.05, 0.2]])
    np.testing.assert_allclose(_project(half, X, np.zeros(5)), 0.5 * (_project(cam, X, np.zeros(5)) + 0.5) - 0.5,
                               atol=1e-9)
    np.testing.assert_allclose(half.K_talksplat[:2], 0.5 * cam.K_talksplat[:2], atol=1e-12)  # pixel corners scale
    assert half.dist is not cam.dist and np.array_equal(half.dist, cam.dist)
    np.testing.assert_array_equal(half.viewmat, cam.viewmat)
    third = _calibs()[1].scaled(1 / 3)  # 1280 x 720 -> 427 x 240: each axis by its own exact ratio
    assert (third.width, third.height) == (427, 240)
    np.testing.assert_allclose(third.K[0, 0], 900 * 427 / 1280)
    np.testing.assert_allclose(third.K[1, 1], 905 * 240 / 720)
    assert cam.scaled(1.0) == cam


# ============================================================================= NeRF layout
@pytest.fixture(scope="module")
def flame_rig(tmp_path_factory):
    from test_flame import synthetic_flame, write_flame  # the synthetic FLAME pickle of tests/test_flame.py

    from talksplat.rigs import HeadRig
    from talksplat.rigs.flame import load_flame

    path = write_flame(tmp_path_factory.mktemp("flame") / "generic_model.pkl", synthetic_flame())
    return HeadRig(load_flame(str(path)))


W, H = 16, 12
CAM_IDS = ["220700191", "221501007"]


def _look_at_gl(pos, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world in the OpenGL convention (x right, y up, looking down -z)."""
    pos = np.asarray(pos, float)
    z = pos - np.asarray(target, float)
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    m[:3, 3] = pos
    return m


def _flame_step(rng) -> dict:
    return {"translation": rng.normal(size=(1, 3)) * 0.01, "rotation": rng.normal(size=(1, 3)) * 0.1,
            "neck_pose": rng.normal(size=(1, 3)) * 0.1, "jaw_pose": rng.normal(size=(1, 3)) * 0.1,
            "eyes_pose": rng.normal(size=(1, 6)) * 0.1, "expr": rng.normal(size=(1, 100))}


def make_nerf(root, seed: int = 0) -> dict:
    """2 cameras x 3 time steps in VHAP's layout; returns what was written (for comparisons)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for d in ("images", "fg_masks", "flame_param"):
        (root / d).mkdir(exist_ok=True)
    c2ws = [_look_at_gl([0.3, 0.05, 1.0]), _look_at_gl([-0.4, -0.1, 0.9], target=(0.0, 0.02, 0.0))]
    intr = [dict(fl_x=20.0, fl_y=21.0, cx=8.3, cy=5.9), dict(fl_x=18.5, fl_y=18.5, cx=7.6, cy=6.2)]
    shape = rng.normal(size=300)
    truth = {"c2w": c2ws, "intr": intr, "shape": shape, "steps": [], "rgb": {}, "mask": {}}
    divisions = {"train": [], "val": [], "test": []}
    for t in range(3):
        step = _flame_step(rng)
        static = {"static_offset": np.zeros((1, 5023, 3), np.float32)}
        np.savez(root / "flame_param" / f"{t:05d}.npz", shape=shape, **step, **static)
        truth["steps"].append(step)
        for c in range(2):
            rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
            mask = ((rng.random((H, W)) > 0.5) * 255).astype(np.uint8)
            name = f"{t:05d}_{c:02d}.png"
            frame = {"timestep_index": t, "timestep_index_original": t, "timestep_id": f"frame_{t:05d}",
                     "camera_index": c, "camera_id": CAM_IDS[c], "h": H, "w": W, **intr[c],
                     "camera_angle_x": 2 * math.atan(W / (2 * intr[c]["fl_x"])),
                     "transform_matrix": c2ws[c].tolist(), "file_path": f"images/{name}",
                     "flame_param_path": f"flame_param/{t:05d}.npz"}
            if c == 0:  # RGB PNG + a separate foreground mask
                cv2.imwrite(str(root / "images" / name), rgb[..., ::-1])
                cv2.imwrite(str(root / "fg_masks" / name), mask)
                frame["fg_mask_path"] = f"fg_masks/{name}"
            else:  # RGBA PNG: alpha is the mask
                cv2.imwrite(str(root / "images" / name), np.concatenate([rgb[..., ::-1], mask[..., None]], -1))
            truth["rgb"][CAM_IDS[c], t] = rgb
            truth["mask"][CAM_IDS[c], t] = mask
            div = "test" if t == 2 else ("val" if c == 1 else "train")
            divisions[div].append(frame)
    for div, frames in divisions.items():
        doc = {"cx": 7.6, "cy": 6.2, "fl_x": 18.5, "fl_y": 18.5, "h": H, "w": W,
               "timestep_indices": sorted({f["timestep_index"] for f in frames}),
               "camera_indices": sorted({f["camera_index"] for f in frames}), "frames": frames}
        (root / f"transforms_{div}.json").write_text(json.dumps(doc, indent=1))
    return truth


def _proj_gl(c2w_gl, fx, fy, cx, cy, X) -> np.ndarray:
    """Pinhole projection in the OpenGL camera convention (looking down -z, y up, image rows down)."""
    p = np.linalg.inv(c2w_gl) @ np.append(X, 1.0)
    return np.array([cx + fx * p[0] / -p[2], cy - fy * p[1] / -p[2]])


def _check_imported(ds, truth, rig) -> None:
    assert ds.meta["imported_from"] == "nerf" and ds.meta["fps"] == 25
    assert ds.meta["rig_name"] == rig.name and ds.meta["rig_checksum"] == rig.checksum
    assert ds.split == {"train": [0, 1], "heldout": [2]}
    assert ds.meta["cameras"] == CAM_IDS and ds.num_timesteps == 3
    assert len(ds.frames) == 6
    X = np.array([0.013, -0.021, 0.034])
    for fr in ds.frames:
        c = CAM_IDS.index(fr.camera)
        i = truth["intr"][c]
        np.testing.assert_allclose(fr.K, [[i["fl_x"], 0, i["cx"]], [0, i["fl_y"], i["cy"]], [0, 0, 1]])
        assert (fr.width, fr.height) == (W, H)
        np.testing.assert_allclose(fr.c2w, truth["c2w"][c] @ np.diag([1.0, -1, -1, 1]), atol=1e-12)
        p = fr.viewmat @ np.append(X, 1.0)
        assert p[2] > 0  # in front of the OpenCV camera
        uv = (fr.K @ (p[:3] / p[2]))[:2]
        np.testing.assert_allclose(uv, _proj_gl(truth["c2w"][c], i["fl_x"], i["fl_y"], i["cx"], i["cy"], X),
                                   atol=1e-9)
        np.testing.assert_array_equal(ds.load_image(fr), truth["rgb"][fr.camera, fr.timestep])
        np.testing.assert_array_equal(ds.load_mask(fr), truth["mask"][fr.camera, fr.timestep])
    assert ds.shape.shape == (rig.num_shape,)
    np.testing.assert_allclose(ds.shape, truth["shape"], atol=1e-6)
    steps = truth["steps"]
    for key, src in (("expression", "expr"), ("global_rot", "rotation"), ("neck", "neck_pose"),
                     ("jaw", "jaw_pose"), ("translation", "translation")):
        want = np.concatenate([s[src] for s in steps])
        if key == "expression":
            assert ds.params[key].shape == (3, rig.num_expression)
        np.testing.assert_allclose(ds.params[key], want, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(ds.params["eyes"], np.stack([s["eyes_pose"].reshape(2, 3) for s in steps]),
                               atol=1e-6)
    lm = ds.landmarks
    assert lm["points"].shape == (2, 3, 478, 2) and not lm["confidence"].any() and list(lm["cameras"]) == CAM_IDS


def test_nerf_import(tmp_path, flame_rig):
    truth = make_nerf(tmp_path / "nerf")
    out = import_nerf_dataset(tmp_path / "nerf", tmp_path / "ds", flame_rig)
    assert out == tmp_path / "ds"
    _check_imported(load_dataset(out), truth, flame_rig)
    # without re-encoding: the plain RGB PNGs are linked / copied as they are
    out2 = import_nerf_dataset(tmp_path / "nerf", tmp_path / "ds_linked", flame_rig, copy_images=False)
    _check_imported(load_dataset(out2), truth, flame_rig)
    # an existing output is refused (OutputError since talksplat.core.outputs; DatasetError before)
    with pytest.raises((DatasetError, OutputError), match="already holds a dataset"):
        import_nerf_dataset(tmp_path / "nerf", out, flame_rig)
    import_nerf_dataset(tmp_path / "nerf", out, flame_rig, overwrite=True)


def _frame_key(ds):
    return {(fr.camera, fr.timestep): fr for fr in ds.frames}


def test_nerf_round_trip(tmp_path, flame_rig):
    truth = make_nerf(tmp_path / "nerf")
    ds1 = load_dataset(import_nerf_dataset(tmp_path / "nerf", tmp_path / "ds1", flame_rig))
    exp = export_nerf_dataset(ds1.root, tmp_path / "nerf2")
    # the exported layout: VHAP's file names, keys and OpenGL matrices; split as VHAP's split_json
    docs = {d: json.loads((exp / f"transforms_{d}.json").read_text()) for d in ("train", "val", "test")}
    assert (exp / "transforms.json").is_file() and (exp / "canonical_flame_param.npz").is_file()
    assert {(f["camera_id"], f["timestep_index"]) for f in docs["train"]["frames"]} == {(CAM_IDS[0], 0),
                                                                                         (CAM_IDS[0], 1)}
    assert {(f["camera_id"], f["timestep_index"]) for f in docs["val"]["frames"]} == {(CAM_IDS[1], 0),
                                                                                       (CAM_IDS[1], 1)}
    assert len(docs["test"]["frames"]) == 2 and docs["test"]["timestep_indices"] == [2]
    f0 = docs["train"]["frames"][0]
    assert f0["file_path"] == "images/00000_00.png" and f0["fg_mask_path"] == "fg_masks/00000_00.png"
    np.testing.assert_allclose(f0["transform_matrix"], truth["c2w"][0], atol=1e-12)
    with np.load(exp / f0["flame_param_path"]) as z:
        assert {k: z[k].shape for k in z.files} == {
            "translation": (1, 3), "rotation": (1, 3), "neck_pose": (1, 3), "jaw_pose": (1, 3),
            "eyes_pose": (1, 6), "shape": (300,), "expr": (1, 100), "static_offset": (1, 5023, 3)}
    # re-import: the same dataset
    ds2 = load_dataset(import_nerf_dataset(exp, tmp_path / "ds2", flame_rig))
    assert ds2.split == ds1.split and ds2.meta["cameras"] == ds1.meta["cameras"]
    assert ds2.meta["fps"] == ds1.meta["fps"]
    k1, k2 = _frame_key(ds1), _frame_key(ds2)
    assert k1.keys() == k2.keys()
    for k, a in k1.items():
        b = k2[k]
        np.testing.assert_allclose(b.K, a.K, atol=1e-12)
        np.testing.assert_allclose(b.c2w, a.c2w, atol=1e-12)
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(ds2.load_image(b), ds1.load_image(a))
        np.testing.assert_array_equal(ds2.load_mask(b), ds1.load_mask(a))
    np.testing.assert_array_equal(ds2.shape, ds1.shape)
    for key in ds1.params:
        np.testing.assert_array_equal(ds2.params[key], ds1.params[key], err_msg=key)
    _check_imported(ds2, truth, flame_rig)


def test_nerf_fov_only_sequence_file_jpg(tmp_path, flame_rig):
    """camera_angle_x only, no w/h, JPEG images, no val/test, all time steps in one flame_param.npz."""
    root = tmp_path / "ga"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(1)
    T, angle = 2, 0.9
    frames, rgbs = [], []
    for t in range(T):
        rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "img" / f"{t}.jpg"), rgb[..., ::-1])
        rgbs.append(cv2.imread(str(root / "img" / f"{t}.jpg"))[..., ::-1])
        frames.append({"file_path": f"img/{t}.jpg", "transform_matrix": _look_at_gl([0, 0, 1.0]).tolist(),
                       "timestep_index": t, "camera_index": 0})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "fps": 30,
                                                            "frames": frames}))
    seq = {"translation": rng.normal(size=(T, 3)), "rotation": rng.normal(size=(T, 3)),
           "neck_pose": rng.normal(size=(T, 3)), "jaw_pose": rng.normal(size=(T, 3)),
           "eyes_pose": rng.normal(size=(T, 6)), "shape": rng.normal(size=(1, 300)), "expr": rng.normal(size=(T, 50)),
           "dynamic_offset": np.ones((T, 5, 3))}
    np.savez(root / "flame_param.npz", **seq)
    with pytest.warns(UserWarning, match="dynamic_offset"):
        ds = load_dataset(import_nerf_dataset(root, tmp_path / "ds", flame_rig))
    assert ds.meta["fps"] == 30 and ds.split == {"train": [0, 1], "heldout": []}
    assert ds.meta["cameras"] == ["00"]
    f = 0.5 * W / math.tan(0.5 * angle)
    for fr in ds.frames:
        np.testing.assert_allclose(fr.K, [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
        assert fr.mask is None
        np.testing.assert_array_equal(ds.load_image(fr), rgbs[fr.timestep])
    np.testing.assert_allclose(ds.params["expression"][:, :50], seq["expr"], atol=1e-6)
    assert not ds.params["expression"][:, 50:].any()  # padded to the rig's 100
    np.testing.assert_allclose(ds.params["jaw"], seq["jaw_pose"], atol=1e-6)
    np.testing.assert_allclose(ds.shape, seq["shape"][0], atol=1e-6)


def _err(fn) -> str:
    with pytest.raises(NerfImportError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_nerf_errors(tmp_path, flame_rig, sphere_rig):
    root = tmp_path / "nerf"
    make_nerf(root)
    # missing transforms_train.json
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = _err(lambda: import_nerf_dataset(empty, tmp_path / "o1", flame_rig))
    assert msg.startswith(str(empty / "transforms_train.json")) and "missing" in msg
    # a frame referencing a missing image
    (root / "images" / "00002_01.png").unlink()
    msg = _err(lambda: import_nerf_dataset(root, tmp_path / "o2", flame_rig))
    assert str(root / "transforms_test.json") in msg and "00002_01.png" in msg and "missing image" in msg
    make_nerf(root)
    # a FLAME file lacking keys
    bad = root / "flame_param" / "00001.npz"
    with np.load(bad) as z:
        d = {k: z[k] for k in z.files if k not in ("jaw_pose", "expr")}
    np.savez(bad, **d)
    msg = _err(lambda: import_nerf_dataset(root, tmp_path / "o3", flame_rig))
    assert msg.startswith(str(bad)) and "jaw_pose" in msg and "expr" in msg
    make_nerf(root)
    # a non-FLAME rig
    msg = _err(lambda: import_nerf_dataset(root, tmp_path / "o4", sphere_rig))
    assert "FLAME" in msg and "test_sphere" in msg
    # non-zero static offsets are dropped with a warning
    with np.load(root / "flame_param" / "00000.npz") as z:
        d = {k: z[k] for k in z.files}
    d["static_offset"] = np.full((1, 5023, 3), 1e-3)
    np.savez(root / "flame_param" / "00000.npz", **d)
    with pytest.warns(UserWarning, match="static_offset"):
        import_nerf_dataset(root, tmp_path / "o5", flame_rig)
    # nothing half-written is left beside the outputs that failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "nerf", "o5"]


def test_prep_command_imports_nerf_directory(tmp_path, flame_rig):
    """`talksplat prep DIR --rig flame:PATH` takes the NeRF-style branch end to end."""
    from test_flame import synthetic_flame, write_flame

    from talksplat.cli import main

    pkl = write_flame(tmp_path / "generic_model.pkl", synthetic_flame())
    truth = make_nerf(tmp_path / "nerf")
    assert main(["prep", str(tmp_path / "nerf"), "--out", str(tmp_path / "ds"), "--rig", f"flame:{pkl}",
                 "--quiet"]) == 0
    ds = load_dataset(tmp_path / "ds")
    _check_imported(ds, truth, flame_rig)
    # A directory that is not a NeRF export: one-line error, nothing written.
    (tmp_path / "empty").mkdir()
    assert main(["prep", str(tmp_path / "empty"), "--out", str(tmp_path / "ds2"), "--quiet"]) == 1
    assert not (tmp_path / "ds2").exists()


# ============================================================================= NeRF import: refusals
def _tree_hash(root) -> str:
    """SHA-256 over a folder: relative paths, modes, file bytes, symlink targets."""
    h = hashlib.sha256()
    root = Path(root)
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        h.update(f"{p.relative_to(root).as_posix()}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _edit_json(root, div: str, fn) -> None:
    path = root / f"transforms_{div}.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))  # NaN / Infinity written as JSON extensions, as Python's json does


def _edit_npz(path, fn) -> None:
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    fn(d)
    np.savez(path, **d)


def _to_sequence(root) -> None:
    """make_nerf's layout -> all time steps in SRC/flame_param.npz, no flame_param_path in the frames."""
    steps = []
    for t in range(3):
        with np.load(root / "flame_param" / f"{t:05d}.npz") as z:
            steps.append({k: z[k] for k in z.files})
    seq = {k: np.concatenate([s[k] for s in steps]) for k in FLAME_NPZ_KEYS if k != "shape"}
    np.savez(root / "flame_param.npz", shape=steps[0]["shape"], **seq)
    shutil.rmtree(root / "flame_param")
    for div in ("train", "val", "test"):
        _edit_json(root, div, lambda d: [f.pop("flame_param_path") for f in d["frames"]])


def _set_frame(div, i, key, value):
    return lambda root, tmp: _edit_json(root, div, lambda d: d["frames"][i].__setitem__(key, value))


def _set_top(div, key, value):
    return lambda root, tmp: _edit_json(root, div, lambda d: d.__setitem__(key, value))


def _set_matrix(fn):
    def edit(d):
        m = np.asarray(d["frames"][0]["transform_matrix"], float)
        d["frames"][0]["transform_matrix"] = fn(m).tolist()
    return lambda root, tmp: _edit_json(root, "train", edit)


def _poison(key, value, idx=0):
    def edit(d):
        a = d[key].astype(np.float64)
        a.reshape(-1)[idx] = value
        d[key] = a
    return edit


def _poison_step(key, value, idx=0):
    return lambda root, tmp: _edit_npz(root / "flame_param" / "00001.npz", _poison(key, value, idx))


def _poison_sequence(key, value, idx=0):
    def setup(root, tmp):
        _to_sequence(root)
        _edit_npz(root / "flame_param.npz", _poison(key, value, idx))
    return setup


def _outside(kind: str, raw: str, field: str = "file_path", div: str = "train"):
    """A frame whose `field` leads outside SRC: '../', absolute, or through a symlink inside SRC."""
    def setup(root, tmp):
        src = {"file_path": root / "images" / "00000_00.png", "fg_mask_path": root / "fg_masks" / "00000_00.png",
               "flame_param_path": root / "flame_param" / "00000.npz"}[field]
        target = tmp / f"outside{src.suffix}"
        shutil.copyfile(src, target)
        value = {"dotdot": raw, "absolute": str(target)}.get(kind, raw)
        if kind == "symlink":
            os.symlink(target, root / raw)
        _edit_json(root, div, lambda d: d["frames"][0].__setitem__(field, value))
    return setup


def _strings(key):
    def setup(root, tmp):
        _edit_npz(root / "flame_param" / "00001.npz", lambda d: d.__setitem__(key, np.array(["a"])))
    return setup


OUTSIDE = "points outside"
NERF_BAD = {
    # intrinsics: NaN / Inf / non-positive / not a number, in a frame or at the top level
    "cx_nan": (_set_frame("train", 0, "cx", math.nan), "transforms_train.json", ["frame 0", "'cx'", "finite", "nan"]),
    "cy_inf_top": (_set_top("val", "cy", -math.inf), "transforms_val.json", ["'cy'", "finite"]),
    "fl_x_nan": (_set_frame("test", 1, "fl_x", math.nan), "transforms_test.json", ["frame 1", "'fl_x'"]),
    "fl_y_inf_top": (_set_top("train", "fl_y", math.inf), "transforms_train.json", ["'fl_y'", "finite"]),
    "fl_x_text": (_set_frame("train", 1, "fl_x", "wide"), "transforms_train.json", ["'fl_x' must be a number"]),
    "fl_x_zero": (_set_frame("train", 0, "fl_x", 0.0), "transforms_train.json", ["'fl_x'", "positive"]),
    "fl_y_huge_int": (_set_frame("train", 0, "fl_y", 10 ** 400), "transforms_train.json", ["'fl_y'"]),
    "w_nan": (_set_frame("train", 0, "w", math.nan), "transforms_train.json", ["'w'", "finite"]),
    "h_inf": (_set_frame("val", 0, "h", math.inf), "transforms_val.json", ["'h'", "finite"]),
    "w_zero_top": (_set_top("train", "w", 0), "transforms_train.json", ["'w'", "positive"]),
    "h_negative": (_set_frame("train", 1, "h", -12), "transforms_train.json", ["frame 1", "'h'", "positive"]),
    "angle_x_nan": (_set_frame("train", 0, "camera_angle_x", math.nan), "transforms_train.json",
                    ["'camera_angle_x'", "finite"]),
    "angle_y_inf": (_set_frame("train", 0, "camera_angle_y", math.inf), "transforms_train.json",
                    ["'camera_angle_y'", "finite"]),
    "angle_x_zero_top": (_set_top("test", "camera_angle_x", 0.0), "transforms_test.json",
                         ["'camera_angle_x'", "(0, pi)"]),
    # transform_matrix: singular, scaled, mirrored, NaN, not homogeneous
    "matrix_zero": (_set_matrix(lambda m: np.zeros((4, 4))), "transforms_train.json",
                    ["frame 0", "'transform_matrix' has bottom row"]),
    "matrix_zero_rotation": (_set_matrix(lambda m: np.concatenate([np.zeros((3, 4)), m[3:]])),
                             "transforms_train.json", ["frame 0", "'transform_matrix' is not a rigid"]),
    "matrix_singular": (_set_matrix(lambda m: m @ np.diag([1.0, 1.0, 0.0, 1.0])), "transforms_train.json",
                        ["'transform_matrix' is not a rigid"]),
    "matrix_scaled": (_set_matrix(lambda m: m @ np.diag([2.0, 2.0, 2.0, 1.0])), "transforms_train.json",
                      ["'transform_matrix' is not a rigid", "no scale"]),
    "matrix_mirrored": (_set_matrix(lambda m: m @ np.diag([-1.0, 1.0, 1.0, 1.0])), "transforms_train.json",
                        ["'transform_matrix' is not a rigid", "det = -1"]),
    "matrix_nan": (_set_matrix(lambda m: m * np.where(np.arange(16).reshape(4, 4) == 6, np.nan, 1.0)),
                   "transforms_train.json", ["'transform_matrix' holds non-finite"]),
    "matrix_inf_3x4": (_set_matrix(lambda m: m[:3] * np.where(np.arange(12).reshape(3, 4) == 3, np.inf, 1.0)),
                       "transforms_train.json", ["'transform_matrix' holds non-finite"]),
    "matrix_bottom_row": (_set_matrix(lambda m: np.concatenate([m[:3], [[0, 0, 1, 1]]])), "transforms_train.json",
                          ["bottom row"]),
    # indices and fps
    "timestep_nan": (_set_frame("train", 0, "timestep_index", math.nan), "transforms_train.json",
                     ["'timestep_index' must be a non-negative integer, got nan"]),
    "timestep_negative": (_set_frame("train", 0, "timestep_index", -1), "transforms_train.json", ["'timestep_index'"]),
    "camera_index_text": (_set_frame("val", 0, "camera_index", "left"), "transforms_val.json", ["'camera_index'"]),
    "fps_nan": (_set_top("train", "fps", math.nan), "transforms_train.json", ["'fps'", "finite"]),
    "fps_zero": (_set_top("train", "fps", 0), "transforms_train.json", ["'fps'", "positive"]),
    # FLAME parameters: NaN / Inf in each key, per time step and in the whole-sequence file
    **{f"step_{k}_nan": (_poison_step(k, math.nan, 1 if k != "shape" else 7), "flame_param/00001.npz",
                         [f"'{k}'", "non-finite"]) for k in FLAME_NPZ_KEYS},
    "step_expr_inf": (_poison_step("expr", -math.inf, 42), "flame_param/00001.npz", ["'expr'", "non-finite"]),
    "step_jaw_text": (_strings("jaw_pose"), "flame_param/00001.npz", ["'jaw_pose'", "must hold numbers"]),
    **{f"sequence_{k}_nan": (_poison_sequence(k, math.nan, 4), "flame_param.npz", [f"'{k}'", "non-finite"])
       for k in FLAME_NPZ_KEYS},
    "sequence_rotation_inf": (_poison_sequence("rotation", math.inf, 8), "flame_param.npz", ["'rotation'"]),
    # paths leading outside SRC
    "image_dotdot": (_outside("dotdot", "../outside.png"), "transforms_train.json",
                     ["frame 0: file_path '../outside.png' points outside", "--allow-external-paths"]),
    "image_absolute": (_outside("absolute", ""), "transforms_train.json", ["frame 0: file_path '/", OUTSIDE]),
    "image_symlink": (_outside("symlink", "images/link.png"), "transforms_train.json",
                      ["file_path 'images/link.png' points outside"]),
    "image_no_suffix": (_outside("dotdot", "../outside"), "transforms_train.json",
                        ["file_path '../outside'", OUTSIDE]),
    "mask_absolute": (_outside("absolute", "", "fg_mask_path"), "transforms_train.json",
                      ["frame 0: fg_mask_path '/", OUTSIDE]),
    "flame_dotdot": (_outside("dotdot", "../outside.npz", "flame_param_path", "val"), "transforms_val.json",
                     ["frame 0: flame_param_path '../outside.npz' points outside"]),
    "flame_symlink": (_outside("symlink", "flame_param/link.npz", "flame_param_path"), "transforms_train.json",
                      ["flame_param_path 'flame_param/link.npz'", OUTSIDE]),
}


@pytest.mark.parametrize("case", sorted(NERF_BAD))
def test_nerf_bad_input_refused_source_untouched(tmp_path, flame_rig, case):
    """Each bad input: one line naming the json / npz file and the field; the source folder is
    byte-for-byte (and mode-for-mode) unchanged and nothing is written."""
    root = tmp_path / "nerf"
    make_nerf(root)
    setup, rel, parts = NERF_BAD[case]
    setup(root, tmp_path)
    before = _tree_hash(root)
    with pytest.raises(NerfImportError) as e:
        import_nerf_dataset(root, tmp_path / "result", flame_rig)
    msg = str(e.value)
    assert msg.startswith(f"{root / rel}:") and "\n" not in msg, msg
    assert all(p in msg for p in parts), (parts, msg)
    assert isinstance(e.value, InputError) and isinstance(e.value, TalksplatError)
    assert _tree_hash(root) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("result", ".result"))]


def test_nerf_external_paths_allowed_on_request(tmp_path, flame_rig):
    root = tmp_path / "nerf"
    truth = make_nerf(root)
    # images in a folder beside SRC, reached by an absolute path and through a symlinked folder
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(root / "images"), str(elsewhere))
    os.symlink(elsewhere, root / "images")
    _edit_json(root, "train", lambda d: d["frames"][0].__setitem__("file_path", str(elsewhere / "00000_00.png")))
    before = _tree_hash(root)
    msg = _err(lambda: import_nerf_dataset(root, tmp_path / "ds", flame_rig))
    assert msg.startswith(str(root / "transforms_train.json")) and OUTSIDE in msg and str(root) in msg
    out = import_nerf_dataset(root, tmp_path / "ds", flame_rig, allow_external_paths=True)
    _check_imported(load_dataset(out), truth, flame_rig)
    assert _tree_hash(root) == before


def test_nerf_never_writes_over_or_into_source(tmp_path, flame_rig):
    root = tmp_path / "nerf"
    make_nerf(root)
    for p in (root / "images").iterdir():
        os.chmod(p, 0o444)  # read-only sources: a hard link must not pass the dataset's 0644 on to them
    before = _tree_hash(root)
    for out, overwrite in ((root, False), (root, True), (tmp_path, True)):  # the source, or a folder holding it
        with pytest.raises(TalksplatError) as e:
            import_nerf_dataset(root, out, flame_rig, overwrite=overwrite)
        assert "\n" not in str(e.value) and str(out) in str(e.value)
        assert _tree_hash(root) == before
    ds = load_dataset(import_nerf_dataset(root, tmp_path / "ds", flame_rig, copy_images=False))
    assert _tree_hash(root) == before
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o444 for p in (root / "images").iterdir())
    fr = next(f for f in ds.frames if f.camera == CAM_IDS[0])
    assert not os.path.samefile(ds.root / fr.image, root / "images" / f"{fr.timestep:05d}_00.png")
    # sources that already have the dataset's mode are hard-linked; still nothing changes
    for p in (root / "images").iterdir():
        os.chmod(p, 0o644)
    before = _tree_hash(root)
    ds = load_dataset(import_nerf_dataset(root, tmp_path / "ds2", flame_rig, copy_images=False))
    assert os.path.samefile(ds.root / fr.image, root / "images" / f"{fr.timestep:05d}_00.png")
    assert _tree_hash(root) == before


def test_error_classes():
    from talksplat.data_prep.calibration import CalibrationError as CE

    assert issubclass(NerfImportError, InputError) and issubclass(CE, InputError)
    assert issubclass(NerfImportError, ValueError) and issubclass(CE, TalksplatError)


# ============================================================================= property: damaged inputs
def _one_line_or_result(fn):
    """The reader's result, or None when it raised a TalksplatError whose message is one line.
    Any other exception propagates (fails the test)."""
    try:
        return fn()
    except TalksplatError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        return None


def _all_finite(x) -> bool:
    if isinstance(x, dict):
        return all(_all_finite(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_all_finite(v) for v in x)
    a = np.asarray(x)
    return a.dtype.kind not in "fc" or bool(np.all(np.isfinite(a)))


def _damaged(rng, valid: bytes, i: int) -> bytes:
    """Random bytes, a truncation at a random offset, or a few random byte changes of `valid`."""
    kind = i % 3
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 2048)))
    if kind == 1:
        return valid[:int(rng.integers(0, len(valid)))]
    b = bytearray(valid)
    for j in rng.integers(0, len(b), size=int(rng.integers(1, 4))):
        b[j] = int(rng.integers(0, 256))
    return bytes(b)


BAD_NUMBERS = (math.nan, math.inf, -math.inf)


def _number_leaves(x, path=()):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _number_leaves(v, path + (k,))
    elif isinstance(x, list):
        for k, v in enumerate(x):
            yield from _number_leaves(v, path + (k,))
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path


def _json_variant(rng, doc: dict, valid: bytes, i: int) -> bytes:
    """Damaged bytes (i % 4 < 3), or the document with one number replaced by NaN / Inf / a huge
    integer / a string / null."""
    if i % 4 < 3:
        return _damaged(rng, valid, i % 4)
    doc = json.loads(json.dumps(doc))
    leaves = list(_number_leaves(doc))
    path = leaves[int(rng.integers(len(leaves)))]
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = [*BAD_NUMBERS, 10 ** 400, "7", None][int(rng.integers(6))]
    return json.dumps(doc).encode()


def _npz_variant(rng, arrays: dict, i: int) -> tuple[bytes, bool]:
    """(bytes, poisoned): damaged npz bytes (i % 4 < 3) or the arrays with one NaN / Inf (must be refused)."""
    buf = io.BytesIO()
    if i % 4 < 3:
        np.savez(buf, **arrays)
        return _damaged(rng, buf.getvalue(), i % 4), False
    key = FLAME_NPZ_KEYS[int(rng.integers(len(FLAME_NPZ_KEYS)))]
    a = arrays[key].astype(np.float64)
    a.reshape(-1)[int(rng.integers(a.size))] = BAD_NUMBERS[int(rng.integers(3))]
    np.savez(buf, **{**arrays, key: a})
    return buf.getvalue(), True


def test_property_damaged_flame_parameter_files(tmp_path):
    """Per-time-step and whole-sequence FLAME npz readers: a finite result or a one-line TalksplatError."""
    from talksplat.data_prep import nerf_import as ni

    rng = np.random.default_rng(20240601)
    step = {**_flame_step(rng), "shape": rng.normal(size=300)}
    seq = {**{k: np.concatenate([_flame_step(rng)[k] for _ in range(3)]) for k in step if k != "shape"},
           "shape": rng.normal(size=(1, 300))}
    readers = {
        "step": (step, lambda p: ni._per_step(ni._load_npz(p, str(p)), p)),
        "sequence": (seq, lambda p: ni._sequence_params(p, [0, 1, 2])),
    }
    for name, (arrays, read) in readers.items():
        loaded = 0
        for i in range(32):
            data, poisoned = _npz_variant(rng, arrays, i)
            path = tmp_path / f"{name}.npz"
            path.write_bytes(data)
            out = _one_line_or_result(lambda: read(path))
            assert out is None or (not poisoned and _all_finite(out)), (name, i)
            loaded += out is not None
        assert loaded < 32


def test_property_damaged_transforms_json(tmp_path):
    """transforms_train.json damaged, truncated, or with a number replaced by NaN / Inf / junk: the frames
    parse with finite cameras, or a one-line TalksplatError."""
    from talksplat.data_prep import nerf_import as ni

    root = tmp_path / "nerf"
    make_nerf(root)
    jp = root / "transforms_train.json"
    valid = jp.read_bytes()
    doc = json.loads(valid)
    rng = np.random.default_rng(7)
    for i in range(32):
        jp.write_bytes(_json_variant(rng, doc, valid, i))

        def parse():
            frames, _ = ni._parse_frames(root)
            return [(f.c2w_gl, ni._intrinsics(f.raw, f.top, "test", (W, H))[0]) for f in frames]

        out = _one_line_or_result(parse)
        assert out is None or _all_finite(out), i


def test_property_damaged_cameras_json(tmp_path):
    path = tmp_path / "cameras.json"
    doc = _good_doc()
    valid = json.dumps(doc).encode()
    rng = np.random.default_rng(11)
    for i in range(32):
        path.write_bytes(_json_variant(rng, doc, valid, i))
        out = _one_line_or_result(lambda: load_calibration(path))
        assert out is None or _all_finite([[c.K, c.dist, c.R, c.t] for c in out]), i
