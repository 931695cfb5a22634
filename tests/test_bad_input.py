"""The bad-input matrix: every way a hostile but realistic user got talksplat wrong, one row each.

Each row builds its inputs in a fresh folder, runs the real command (``talksplat.cli.main``, in
process, fd-level stderr captured), and checks the contract of docs/troubleshooting.md:

- exit status 1 and exactly one line on stderr, ``talksplat: error: ...`` holding the expected words
  (no traceback, no C++ logging, no second line);
- nothing new, nothing half-written and no input changed: every file under the case folder and under
  the shared inputs (a video, a dataset, a fit folder, a FLAME file, a NeRF-style export) is hashed
  before and after, hidden partials and lock files included.

Kills, locks held by another process and the NaN loss stop are tested below the matrix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import Inputs

from talksplat.cli import main

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def inputs(small_inputs) -> Inputs:
    return small_inputs


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` (hidden ones too) -> sha256 of its contents, or "dir"."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            key = str(p)
            out[key] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- helpers for the rows
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
    return dst


def _edit_npz(path: Path, **changes) -> None:
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d.update(changes)
    np.savez(path, **d)


def _truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _dataset(w: Path, i: Inputs, edit=None) -> Path:
    ds = _copy(i.dataset, w / "ds")
    if edit is not None:
        edit(ds)
    return ds


def _fit_copy(w: Path, i: Inputs, edit=None) -> Path:
    fit = _copy(i.fit, w / "fit")
    if edit is not None:
        edit(fit)
    return fit


def _edit_avatar(fit: Path, **tensors) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = fit / "avatar.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    for k, fn in tensors.items():
        if k == "header":
            h = json.loads(meta["talksplat"])
            fn(h)
            meta = {"talksplat": json.dumps(h)}
        else:
            t[k] = fn(t[k])
    save_file(t, str(path), metadata=meta)


def _nerf(w: Path, i: Inputs, edit=None) -> Path:
    src = _copy(i.nerf, w / "nerf")
    if edit is not None:
        edit(src)
    return src


def _first_frame(div: str, fn):
    def edit(src: Path):
        _edit_json(src / f"transforms_{div}.json", lambda d: fn(d["frames"][0]))
    return edit


def _drive(fit: Path, *more: str, audio: Path | None = None, out: Path | None = None, w: Path | None = None):
    return ["drive", str(fit), "--audio", str(audio), "--out", str(out if out is not None else w / "talk.mp4"),
            "--resolution", "32", "--quiet", *more]


def _random_bytes(path: Path, n: int = 4000, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def _own_output_beside(w: Path) -> Path:
    """A dataset folder of ours with one foreign file added."""
    ds = w / "old"
    ds.mkdir()
    (ds / "meta.json").write_text(json.dumps({"format": "talksplat-dataset", "version": 1}))
    (ds / ".talksplat").write_text('{"kind": "dataset"}')
    (ds / "notes.txt").write_text("mine")
    return ds


# ------------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    id: str
    make: Callable[[Path, Inputs], list[str]]
    message: str
    env: dict | None = None


def prep(w, i, *more, video=None, out=None):
    return ["prep", str(video or i.clip), "--out", str(out or w / "ds"), "--quiet", *more]


ROWS = [
    # -------------------------------------------------------------------------------------- prep
    Row("prep-overwrite-dir-holding-the-input", lambda w, i: prep(
        w, i, "--overwrite", video=_copy(i.clip, (w / "d").mkdir() or w / "d" / "my_only_copy.mp4"), out=w / "d"),
        "holds the input"),
    Row("prep-overwrite-foreign-folder", lambda w, i: prep(
        w, i, "--overwrite", out=(w / "d").mkdir() or (w / "d" / "notes.txt").write_text("x") and w / "d"),
        "not part of a talksplat dataset"),
    Row("prep-overwrite-dataset-with-a-foreign-file", lambda w, i: prep(w, i, "--overwrite", out=_own_output_beside(w)),
        "holds notes.txt"),
    Row("prep-non-empty-out", lambda w, i: prep(
        w, i, out=(w / "d").mkdir() or (w / "d" / "notes.txt").write_text("x") and w / "d"), "exists and is not empty"),
    Row("prep-existing-dataset", lambda w, i: prep(w, i, out=_copy(i.dataset, w / "d")), "already holds a dataset"),
    Row("prep-out-is-a-file", lambda w, i: prep(w, i, out=_copy(i.wav, w / "x.wav")), "exists and is not a directory"),
    Row("prep-out-is-the-input", lambda w, i: prep(w, i, out=i.clip), "exists and is not a directory"),
    Row("prep-out-under-a-file", lambda w, i: prep(w, i, out=_copy(i.wav, w / "x.wav") / "ds"), "is a file, not a folder"),
    Row("prep-read-only-out", lambda w, i: prep(w, i, out=Path("/proc/talksplat-test/ds")), "/proc/talksplat-test"),
    Row("prep-heldout-1.5", lambda w, i: prep(w, i, "--heldout", "1.5"), "--heldout 1.5: out of range (0 to 0.9)"),
    Row("prep-heldout-negative", lambda w, i: prep(w, i, "--heldout", "-0.1"), "--heldout -0.1: out of range"),
    Row("prep-max-frames-0", lambda w, i: prep(w, i, "--max-frames", "0"), "--max-frames 0: out of range (at least 1)"),
    Row("prep-fps-0", lambda w, i: prep(w, i, "--fps", "0"), "--fps 0.0: out of range (1 to 240)"),
    Row("prep-fps-nan", lambda w, i: prep(w, i, "--fps", "nan"), "--fps nan: must be a finite number"),
    Row("prep-fps-inf", lambda w, i: prep(w, i, "--fps", "inf"), "--fps inf: must be a finite number"),
    Row("prep-resolution-10", lambda w, i: prep(w, i, "--resolution", "10"), "--resolution 10: out of range"),
    Row("prep-min-face-fraction-2", lambda w, i: prep(w, i, "--min-face-fraction", "2"), "--min-face-fraction 2.0"),
    Row("prep-tracking-lr-negative", lambda w, i: prep(w, i, "--tracking.lr", "-1"), "--tracking.lr -1.0: out of range"),
    Row("prep-tracking-iters-negative", lambda w, i: prep(w, i, "--tracking.full-iters", "-3"),
        "--tracking.full-iters -3"),
    Row("prep-missing-video", lambda w, i: prep(w, i, video=w / "missing.mp4"), "missing.mp4: no such file"),
    Row("prep-random-bytes", lambda w, i: prep(w, i, video=_random_bytes(w / "x.mp4")), "x.mp4: not a video file"),
    Row("prep-truncated-70", lambda w, i: prep(w, i, video=_truncate(_copy(i.clip, w / "cut.mp4"), 0.7)),
        "cut.mp4: damaged or truncated video"),
    Row("prep-truncated-30", lambda w, i: prep(w, i, video=_truncate(_copy(i.clip, w / "cut.mp4"), 0.3)),
        "cut.mp4: damaged or truncated video"),
    Row("prep-audio-only", lambda w, i: prep(w, i, video=i.wav), "no video stream"),
    Row("prep-two-videos-without-calibration", lambda w, i: ["prep", str(i.clip), str(i.clip), "--out",
                                                             str(w / "ds")], "without --calibration"),
    Row("prep-missing-calibration", lambda w, i: prep(w, i, "--calibration", str(w / "cams.json")), "cams.json"),
    Row("prep-unknown-rig", lambda w, i: prep(w, i, "--rig", "bogus"), "unknown rig 'bogus'"),
    Row("prep-flame-without-path", lambda w, i: prep(w, i, "--rig", "flame"), "FLAME model not found",
        env={"TALKSPLAT_FLAME": None}),
    Row("prep-corrupt-flame", lambda w, i: prep(w, i, "--rig", f"flame:{_random_bytes(w / 'f.pkl')}"),
        "not a readable FLAME pickle"),
    Row("prep-truncated-flame", lambda w, i: prep(w, i, "--rig", f"flame:{_truncate(_copy(i.flame, w / 'f.pkl'), 0.5)}"),
        "not a readable FLAME pickle"),
    # ------------------------------------------------------------------------------- NeRF import
    Row("import-cx-nan", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, _first_frame("train", lambda f: f.update(cx=float("nan"))))), "cx"),
    Row("import-zero-transform", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, _first_frame("train", lambda f: f.update(transform_matrix=np.zeros((4, 4)).tolist())))),
        "transform_matrix"),
    Row("import-nan-flame-params", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, lambda s: _edit_npz(s / "flame_param" / "00001.npz", jaw_pose=np.full((1, 3), np.nan)))),
        "00001.npz"),
    Row("import-absolute-file-path", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, _first_frame("train", lambda f: f.update(file_path=str(i.nerf / f["file_path"]))))), "outside"),
    Row("import-dotdot-file-path", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, _first_frame("train", lambda f: f.update(file_path=os.path.relpath(i.nerf / f["file_path"], w / "nerf"))))),
        "outside"),
    Row("import-outside-mask", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, _first_frame("train", lambda f: f.update(fg_mask_path=str(i.nerf / f["fg_mask_path"]))))), "outside"),
    Row("import-outside-flame-params", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, _first_frame("train", lambda f: f.update(flame_param_path=str(i.nerf / f["flame_param_path"]))))),
        "outside"),
    Row("import-into-itself", lambda w, i: prep(w, i, "--overwrite", "--rig", f"flame:{i.flame}",
                                                video=_nerf(w, i), out=w / "nerf"), "holds the input"),
    Row("import-truncated-json", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, lambda s: _truncate(s / "transforms_train.json", 0.5))), "invalid JSON"),
    Row("import-missing-image", lambda w, i: prep(w, i, "--rig", f"flame:{i.flame}", video=_nerf(
        w, i, lambda s: (s / "images" / "00000_00.png").unlink())), "missing image"),
    # --------------------------------------------------------------------------------------- fit
    Row("fit-nan-rig-params", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_npz(
        d / "rig_params.npz", expression=np.full((12, 52), np.nan, np.float32)))), "--out", str(w / "fit")],
        "'expression' holds non-finite values"),
    Row("fit-inf-shape", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_npz(
        d / "rig_params.npz", shape=np.full(_shape_len(d), np.inf, np.float32)))), "--out", str(w / "fit")],
        "'shape' holds non-finite values"),
    Row("fit-truncated-rig-params", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _truncate(
        d / "rig_params.npz", 0.5))), "--out", str(w / "fit")], "rig_params.npz: not a readable .npz file"),
    Row("fit-wrong-shape-rig-params", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_npz(
        d / "rig_params.npz", jaw=np.zeros((12, 2), np.float32)))), "--out", str(w / "fit")],
        "'jaw' has shape [12, 2], expected [12, 3]"),
    Row("fit-too-few-time-steps", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_npz(
        d / "rig_params.npz", **{k: v[:5] for k, v in _frame_arrays(d).items()}))), "--out", str(w / "fit")],
        "has timestep"),
    Row("fit-wrong-expression-count", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_npz(
        d / "rig_params.npz", expression=np.zeros((12, 7), np.float32)))), "--out", str(w / "fit")],
        "7 expression"),
    Row("fit-missing-image", lambda w, i: ["fit", str(_dataset(w, i, lambda d: (
        d / "images" / "cam0" / "00004.png").unlink())), "--out", str(w / "fit")], "00004.png: missing or empty"),
    Row("fit-empty-mask", lambda w, i: ["fit", str(_dataset(w, i, lambda d: (
        d / "masks" / "cam0" / "00002.png").write_bytes(b""))), "--out", str(w / "fit")], "00002.png: missing or empty"),
    Row("fit-nan-intrinsics", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_json(
        d / "transforms.json", lambda t: t["frames"][3].update(K=[[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1]])))),
        "--out", str(w / "fit")], "frame 3: 'K' holds non-finite values"),
    Row("fit-zero-camera", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_json(
        d / "transforms.json", lambda t: t["frames"][0].update(c2w=np.zeros((4, 4)).tolist())))),
        "--out", str(w / "fit")], "not a rigid camera-to-world"),
    Row("fit-image-outside-dataset", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_json(
        d / "transforms.json", lambda t: t["frames"][0].update(image="../elsewhere.png")))), "--out", str(w / "fit")],
        "points outside the dataset folder"),
    Row("fit-garbage-meta", lambda w, i: ["fit", str(_dataset(w, i, lambda d: (d / "meta.json").write_text("{x"))),
                                          "--out", str(w / "fit")], "unreadable dataset metadata"),
    Row("fit-not-a-dataset", lambda w, i: ["fit", str(w), "--out", str(w / "fit")], "not a talksplat dataset"),
    Row("fit-missing-dataset", lambda w, i: ["fit", str(w / "nope"), "--out", str(w / "fit")],
        "no such dataset directory"),
    Row("fit-steps-negative", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"), "--steps", "-5"],
        "--steps -5: out of range"),
    Row("fit-steps-0", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"), "--steps", "0"], "--steps 0"),
    Row("fit-budget-0", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"), "--budget", "0"], "--budget 0"),
    Row("fit-dssim-2", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"), "--loss.lambda-dssim", "2"],
        "--loss.lambda-dssim 2.0: out of range (0 to 1)"),
    Row("fit-driver-lr-0", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"), "--driver.lr", "0"],
        "--driver.lr 0.0: out of range (above 0, up to 1)"),
    Row("fit-sh-degree-4", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"), "--sh-degree", "4"],
        "--sh-degree 4"),
    Row("fit-threads-0", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"), "--threads", "0"],
        "--threads 0: out of range (1 to 1024)"),
    Row("fit-existing-fit", lambda w, i: ["fit", str(i.dataset), "--out", str(_fit_copy(w, i))],
        "already holds a fit (pass --resume to continue or --overwrite"),
    Row("fit-overwrite-foreign-folder", lambda w, i: ["fit", str(i.dataset), "--out", str(
        (w / "mine").mkdir() or (w / "mine" / "thesis.pdf").write_text("x") and w / "mine"), "--overwrite"],
        "holds thesis.pdf"),
    Row("fit-overwrite-fit-with-a-foreign-file", lambda w, i: ["fit", str(i.dataset), "--out", str(_fit_copy(
        w, i, lambda f: (f / "heldout" / "notes.txt").write_text("x"))), "--overwrite"], "holds heldout/notes.txt"),
    Row("fit-out-is-the-dataset", lambda w, i: ["fit", str(_dataset(w, i)), "--out", str(w / "ds"), "--overwrite"],
        "holds the input"),
    Row("fit-out-holds-the-dataset", lambda w, i: ["fit", str(_dataset(w, i)), "--out", str(w), "--overwrite"],
        "holds the input"),
    Row("fit-out-under-a-file", lambda w, i: ["fit", str(i.dataset), "--out", str(_copy(i.wav, w / "x.wav") / "fit")],
        "is a file, not a folder"),
    Row("fit-resume-without-checkpoint", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "new"), "--resume"],
        "no checkpoint to resume from"),
    Row("fit-driver-only-without-audio", lambda w, i: ["fit", str(_dataset(w, i, lambda d: _edit_json(
        d / "meta.json", lambda m: m.update(audio=None)))), "--out", str(w / "fit"), "--driver-only"],
        "has no audio.wav"),
    Row("fit-missing-lpips-weights", lambda w, i: ["fit", str(i.dataset), "--out", str(w / "fit"),
                                                   "--lpips-weights", str(w / "lpips.pth")], "lpips.pth"),
    # ------------------------------------------------------------------------------------- drive
    Row("drive-out-wav-is-the-audio", lambda w, i: _drive(i.fit, audio=_copy(i.wav, w / "studio.wav"),
                                                           out=w / "studio.mp4"), "is the input"),
    Row("drive-out-is-the-audio-video", lambda w, i: _drive(i.fit, "--overwrite", audio=_copy(i.clip, w / "clip.mp4"),
                                                             out=w / "clip.mp4"), "is the input"),
    Row("drive-out-hard-link-to-the-audio", lambda w, i: _drive(
        i.fit, "--overwrite", audio=_copy(i.wav, w / "a.wav"), out=os.link(w / "a.wav", w / "b.wav") or w / "b.mp4"),
        "is the input"),
    Row("drive-existing-output", lambda w, i: _drive(i.fit, audio=i.wav, out=_copy(i.clip, w / "talk.mp4")),
        "already exists (pass --overwrite"),
    Row("drive-overwrite-foreign-output", lambda w, i: _drive(i.fit, "--overwrite", audio=i.wav,
                                                               out=_copy(i.clip, w / "talk.mp4")),
        "was not written by talksplat"),
    Row("drive-overwrite-foreign-npz", lambda w, i: _drive(i.fit, "--overwrite", audio=i.wav, out=w / "talk.mp4")
        if not np.savez(w / "talk.npz", x=np.zeros(3)) else [], "talk.npz: exists and was not written by talksplat"),
    Row("drive-resolution-100000", lambda w, i: _drive(i.fit, "--resolution", "100000", audio=i.wav, w=w),
        "--resolution 100000: out of range (16 to 8192)"),
    Row("drive-resolution-odd", lambda w, i: _drive(i.fit, "--resolution", "33", audio=i.wav, w=w), "must be even"),
    Row("drive-camera-nan", lambda w, i: _drive(i.fit, "--camera", "nan,0", audio=i.wav, w=w), "--camera nan,0"),
    Row("drive-camera-one-number", lambda w, i: _drive(i.fit, "--camera", "20", audio=i.wav, w=w),
        "expected yaw,pitch"),
    Row("drive-fps-0", lambda w, i: _drive(i.fit, "--fps", "0", audio=i.wav, w=w), "--fps 0.0: out of range"),
    Row("drive-batch-0", lambda w, i: _drive(i.fit, "--batch", "0", audio=i.wav, w=w), "--batch 0"),
    Row("drive-audio-and-text", lambda w, i: _drive(i.fit, "--text", "hi", audio=i.wav, w=w), "exactly one of"),
    Row("drive-missing-audio", lambda w, i: _drive(i.fit, audio=w / "none.wav", w=w), "none.wav: no such audio file"),
    Row("drive-corrupt-audio", lambda w, i: _drive(i.fit, audio=_random_bytes(w / "x.wav"), w=w),
        "x.wav: cannot read audio"),
    Row("drive-not-mp4", lambda w, i: _drive(i.fit, audio=i.wav, out=w / "talk.mov"), "must be an .mp4 file"),
    Row("drive-bad-colour", lambda w, i: _drive(i.fit, "--background", "#12", audio=i.wav, w=w), "expected #rrggbb"),
    Row("drive-missing-background", lambda w, i: _drive(i.fit, "--background", str(w / "bg.png"), audio=i.wav, w=w),
        "white, black, #rrggbb or an existing image file"),
    Row("drive-out-under-a-file", lambda w, i: _drive(i.fit, audio=i.wav, out=_copy(i.wav, w / "x.wav") / "t.mp4"),
        "is a file, not a folder"),
    Row("drive-not-a-fit", lambda w, i: _drive(w, audio=i.wav, w=w), "not a fit folder or avatar file"),
    Row("drive-nan-avatar", lambda w, i: _drive(_fit_copy(w, i, lambda f: _edit_avatar(
        f, local_means=lambda t: t * float("nan"))), audio=i.wav, w=w), "'local_means' holds non-finite values"),
    Row("drive-binding-out-of-range", lambda w, i: _drive(_fit_copy(w, i, lambda f: _edit_avatar(
        f, binding=lambda t: t + 10 ** 7)), audio=i.wav, w=w), "'binding' names faces"),
    Row("drive-zeroed-rig-checksum", lambda w, i: _drive(_fit_copy(w, i, lambda f: _edit_avatar(
        f, header=lambda h: h.update(rig_checksum="0" * 64))), audio=i.wav, w=w),
        "avatar.safetensors: avatar was built on rig"),
    Row("drive-truncated-avatar", lambda w, i: _drive(_fit_copy(w, i, lambda f: _truncate(
        f / "avatar.safetensors", 0.5)), audio=i.wav, w=w), "avatar.safetensors"),
    Row("drive-predictor-of-another-avatar", lambda w, i: _drive(_fit_copy(w, i, lambda f: _edit_avatar(
        f, opacity_logits=lambda t: t + 0.1)), audio=i.wav, w=w), "trained for another avatar"),
    Row("drive-nan-predictor", lambda w, i: _drive(_fit_copy(w, i, lambda f: _edit_safetensors(
        f / "driver.safetensors", "mean", lambda t: t * float("nan"))), audio=i.wav, w=w),
        "'mean' holds non-finite values"),
    Row("drive-truncated-predictor", lambda w, i: _drive(_fit_copy(w, i, lambda f: _truncate(
        f / "driver.safetensors", 0.5)), audio=i.wav, w=w), "not a talksplat driver file"),
    Row("drive-no-predictor", lambda w, i: _drive(_fit_copy(w, i, lambda f: (f / "driver.safetensors").unlink()),
                                                  audio=i.wav, w=w), "no audio predictor here"),
    Row("drive-nan-tuned-params", lambda w, i: _drive(_fit_copy(w, i, lambda f: _edit_npz(
        f / "tuned_params.npz", neck=np.full((12, 3), np.nan, np.float32))), audio=i.wav, w=w),
        "'neck' holds non-finite values"),
    Row("drive-truncated-tuned-params", lambda w, i: _drive(_fit_copy(w, i, lambda f: _truncate(
        f / "tuned_params.npz", 0.4)), audio=i.wav, w=w), "tuned_params.npz: not a readable .npz file"),
    # --------------------------------------------------------------------------------------- run
    Row("run-corrupt-audio", lambda w, i: ["run", str(i.clip), "--audio", str(_random_bytes(w / "x.m4a")), "--out",
                                           str(w / "work")], "x.m4a: cannot read audio"),
    Row("run-no-audio", lambda w, i: ["run", str(i.clip), "--out", str(w / "work")], "exactly one of"),
    Row("run-missing-video", lambda w, i: ["run", str(w / "v.mp4"), "--audio", str(i.wav), "--out", str(w / "work")],
        "v.mp4: no such file"),
    Row("run-corrupt-video", lambda w, i: ["run", str(_random_bytes(w / "v.mp4")), "--audio", str(i.wav), "--out",
                                           str(w / "work")], "v.mp4: not a video file"),
    Row("run-truncated-video", lambda w, i: ["run", str(_truncate(_copy(i.clip, w / "v.mp4"), 0.7)), "--audio",
                                             str(i.wav), "--out", str(w / "work")], "damaged or truncated"),
    Row("run-driver-disabled", lambda w, i: ["run", str(i.clip), "--audio", str(i.wav), "--out", str(w / "work"),
                                             "--driver.no-enabled"], "always trains the audio predictor"),
    Row("run-bad-background", lambda w, i: ["run", str(i.clip), "--audio", str(i.wav), "--out", str(w / "work"),
                                            "--background", "#zzzzzz"], "expected #rrggbb"),
    Row("run-camera-inf", lambda w, i: ["run", str(i.clip), "--audio", str(i.wav), "--out", str(w / "work"),
                                        "--camera", "inf,0"], "--camera inf,0"),
    Row("run-steps-negative", lambda w, i: ["run", str(i.clip), "--audio", str(i.wav), "--out", str(w / "work"),
                                            "--steps", "-5"], "--steps -5"),
    Row("run-out-is-a-file", lambda w, i: ["run", str(i.clip), "--audio", str(i.wav), "--out",
                                           str(_copy(i.wav, w / "w.wav"))], "exists and is not a directory"),
    Row("run-output-is-the-input", lambda w, i: ["run", str(_copy(i.clip, (w / "work").mkdir() or w / "work" / "talk.mp4")),
                                                 "--audio", str(i.wav), "--out", str(w / "work")], "is the input"),
    # -------------------------------------------------------------------------------------- view
    Row("view-params-audio-outside", lambda w, i: ["view", str(i.fit), "--params", str(_params(w, i, audio="/etc/hostname"))],
        "outside the parameters file's folder"),
    Row("view-params-nan", lambda w, i: ["view", str(i.fit), "--params", str(_params(
        w, i, jaw=np.full((4, 3), np.nan, np.float32)))], "'jaw' holds non-numeric or non-finite values"),
    Row("view-params-truncated", lambda w, i: ["view", str(i.fit), "--params", str(_truncate(_params(w, i), 0.5))],
        "not a readable .npz parameters file"),
    Row("view-resolution-2048", lambda w, i: ["view", str(i.fit), "--resolution", "2048"],
        "--resolution 2048: out of range (16 to 1024)"),
    Row("view-port-0", lambda w, i: ["view", str(i.fit), "--port", "0"], "--port 0"),
    Row("view-nan-avatar", lambda w, i: ["view", str(_fit_copy(w, i, lambda f: _edit_avatar(
        f, log_scales=lambda t: t * float("inf"))))], "'log_scales' holds non-finite values"),
    Row("view-audio-and-params", lambda w, i: ["view", str(i.fit), "--audio", str(i.wav), "--params", str(i.wav)],
        "give one of them"),
    # ------------------------------------------------------------------------------------ render
    Row("render-existing-png", lambda w, i: ["render", "--out", str((w / "a.png").write_bytes(b"x") and w / "a.png"),
                                             "--resolution", "32"], "a.png: already exists"),
    Row("render-overwrite-foreign-png", lambda w, i: ["render", "--out", str(
        (w / "a.png").write_bytes(b"x") and w / "a.png"), "--resolution", "32", "--overwrite"],
        "was not written by talksplat"),
    Row("render-expr-nan", lambda w, i: ["render", "--out", str(w / "a.png"), "--expr", "jawOpen=nan"],
        "not a finite number"),
]


def _shape_len(ds: Path) -> int:
    with np.load(ds / "rig_params.npz") as z:
        return len(z["shape"])


def _frame_arrays(ds: Path) -> dict:
    with np.load(ds / "rig_params.npz") as z:
        return {k: z[k] for k in z.files if k != "shape"}


def _edit_safetensors(path: Path, key: str, fn) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    t[key] = fn(t[key])
    save_file(t, str(path), metadata=meta)


def _params(w: Path, i: Inputs, **changes) -> Path:
    """A drive parameters file (4 frames of the fit's rig) with ``changes``."""
    from talksplat.rigs import load_rig

    rig = load_rig("open")
    d = {"shape": np.zeros(rig.num_shape, np.float32), "expression": np.zeros((4, rig.num_expression), np.float32),
         **{k: np.zeros((4, 3), np.float32) for k in ("jaw", "neck", "global_rot", "translation")},
         "eyes": np.zeros((4, 2, 3), np.float32), "fps": np.float32(25.0), "audio": np.asarray("talk.wav")}
    d.update({k: (np.asarray(v) if k == "audio" else v) for k, v in changes.items()})
    np.savez(w / "p.npz", **d)
    return w / "p.npz"


def test_the_matrix_is_big_enough():
    """The issue asked for at least 60 cases across prep, import, fit, drive, run and view."""
    kinds = {r.id.split("-")[0] for r in ROWS}
    assert len(ROWS) >= 60 and {"prep", "import", "fit", "drive", "run", "view"} <= kinds
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, inputs: Inputs, tmp_path, capfd, monkeypatch):
    for k, v in (row.env or {}).items():
        monkeypatch.delenv(k, raising=False) if v is None else monkeypatch.setenv(k, v)
    work = tmp_path / "case"
    work.mkdir()
    argv = row.make(work, inputs)
    capfd.readouterr()
    before = _snapshot(tmp_path, inputs.root)
    rc = main(argv)
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1, (out, err)
    assert len(lines) == 1 and lines[0].startswith("talksplat: error: "), err
    assert row.message in lines[0], lines[0]
    after = _snapshot(tmp_path, inputs.root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files created, changed or removed by a refused command: {changed}"
