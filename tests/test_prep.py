"""`talksplat prep` end to end: real GRID video (real decoding, real FaceMesh, real segmentation,
real tracking), a synthetic calibrated multi-view set rendered with our rasterizer, and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from talksplat.data_prep.dataset import load_dataset
from talksplat.core.ffmpeg import ffmpeg_exe
from talksplat.data_prep.decode import read_wav
from talksplat.data_prep.embedding import landmark_embedding
from talksplat.data_prep.landmarks import OUTER_EYE_CORNERS
from talksplat.data_prep.config import PrepConfig
from talksplat.data_prep.prep import run_prep
from talksplat.data_prep.tracking import project
from talksplat.rigs import load_rig

pytestmark = pytest.mark.e2e  # whole commands on real media (docs/architecture.md: tests)

#: Mean landmark error of the tracked head, as a fraction of the inter-ocular distance (outer eye
#: corners), over all 478 FaceMesh points.  Measured on the 11 GRID clips at 512 px: 1.2 % to 2.0 %
#: (mean 1.5 %, about 1 px at GRID's 360x288).  3 % leaves room for resolution and platform
#: differences but fails a fit that is off by a landmark spacing or drifts in some frames.
GRID_TRACKING_THRESHOLD = 0.03


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def reprojection_error(ds, rig) -> np.ndarray:
    """Per image: mean distance (fraction of inter-ocular distance) between the dataset's stored
    landmarks and the tracked rig's landmarks projected with the dataset's own K and c2w."""
    emb = landmark_embedding(rig)
    p = {k: torch.as_tensor(v) for k, v in ds.params.items()}
    from talksplat.rigs.base import RigParams

    T = ds.num_timesteps
    params = RigParams(shape=torch.as_tensor(ds.shape)[None].expand(T, -1), **p)
    with torch.no_grad():
        pts = emb.points(rig, rig(params).vertices)  # [T, L, 3]
    cams = list(ds.landmarks["cameras"])
    out = []
    for fr in ds.frames:
        c = cams.index(fr.camera)
        obs = ds.landmarks["points"][c, fr.timestep]
        uv = project(pts[fr.timestep:fr.timestep + 1], torch.as_tensor(fr.viewmat).float()[None],
                     torch.as_tensor(fr.K).float()[None])[0, 0].numpy()
        iod = np.linalg.norm(obs[OUTER_EYE_CORNERS[0]] - obs[OUTER_EYE_CORNERS[1]])
        out.append(np.linalg.norm(uv - obs, axis=1).mean() / iod)
    return np.array(out)


@pytest.fixture(scope="module")
def grid_dataset(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "ds"
    rep = run_prep(PrepConfig(videos=(shared_data / "grid" / "bbaf2n.mpg",), out=out, resolution=256, quiet=True))
    return rep, load_dataset(out)


def test_grid_clip_end_to_end(grid_dataset):
    rep, ds = grid_dataset
    fps = ds.meta["fps"]
    assert ds.num_timesteps == 75 and len(ds.frames) == 75  # 2.98 s at 25 fps
    # Audio: 16 kHz mono, as long as the video within one frame.
    audio, sr = read_wav(ds.audio_path)
    assert sr == 16000 and audio.ndim == 1
    assert abs(len(audio) / sr - ds.num_timesteps / fps) <= 1 / fps
    assert np.abs(audio).max() > 0.05  # speech, not silence
    # Images and masks: 256x256, the mask covers the head and shoulders but not the backdrop.
    img, mask = ds.load_image(ds.frames[10]), ds.load_mask(ds.frames[10])
    assert img.shape == (256, 256, 3) and mask.shape == (256, 256)
    coverage = np.mean([(ds.load_mask(f) > 127).mean() for f in ds.frames[::10]])
    assert 0.25 < coverage < 0.85, coverage
    lm = ds.landmarks["points"][0, 10]
    face_px = mask[lm[:, 1].astype(int).clip(0, 255), lm[:, 0].astype(int).clip(0, 255)]
    assert (face_px > 127).mean() > 0.95  # the face is foreground
    assert mask[:8, :8].max() < 64 and mask[:8, -8:].max() < 64  # backdrop corners are background
    # Tracking accuracy, and consistency of the stored cameras with the crops.
    err = rep.tracking_error["mean_iod"]
    print(f"GRID bbaf2n tracking error: {100 * err:.2f}% of the inter-ocular distance")
    assert err < GRID_TRACKING_THRESHOLD
    per_image = reprojection_error(ds, load_rig("open"))
    assert per_image.mean() < GRID_TRACKING_THRESHOLD
    assert abs(per_image.mean() - err) < 0.005  # the dataset's K / c2w reproduce the tracker's fit
    # Metadata.
    assert ds.meta["split"]["heldout"] == list(range(60, 75))  # 10 %, raised to a fifth of the clip
    assert ds.meta["rig"]["checksum"] == load_rig("open").checksum
    assert ds.meta["monocular"] and ds.meta["focal_px"] > 0
    assert set(ds.meta["timings_s"]) >= {"decode", "landmarks", "tracking", "masks"}
    # The stages' wall times, in order.
    assert list(rep.stage_seconds) == ["inputs", "audio", "landmarks", "tracking", "frames", "metadata"]
    assert all(v >= 0 for v in rep.stage_seconds.values()) and "tracking " in rep.describe()


def test_grid_mouth_moves_with_speech(grid_dataset):
    """The tracked mouth opens and closes while the speaker talks (GRID sentences)."""
    _, ds = grid_dataset
    rig = load_rig("open")
    jaw_open = ds.params["expression"][:, rig.expression_index("jawOpen")] + ds.params["jaw"][:, 0]
    assert jaw_open.max() - jaw_open.min() > 0.1


def render_multiview_set(tmp_path: Path, T: int = 30, size: int = 320):
    """Three calibrated cameras filming the open-head avatar while it turns and opens its mouth."""
    from talksplat.avatar import init_avatar
    from talksplat.avatar.render import render_avatar
    from talksplat.data_prep.calibration import CameraCalib, write_calibration
    from talksplat.render.camera import look_at
    from talksplat.render.video import VideoWriter, to_uint8

    rig = load_rig("open")
    avatar = init_avatar(rig, per_face=2, sh_degree=0)
    p = rig.zero_params(T)
    t = torch.linspace(0, 2 * math.pi, T)
    p.global_rot[:, 1] = 0.25 * torch.sin(t)
    p.expression[:, rig.expression_index("jawOpen")] = 0.5 * (0.5 - 0.5 * torch.cos(2 * t))
    p.translation[:] = torch.tensor([0.0, 0.05, 0.0])
    calibs, vms = [], []
    f = 2.2 * size
    K = np.array([[f, 0, size / 2 - 0.5], [0, f, size / 2 - 0.5], [0, 0, 1]])  # OpenCV pixel centres
    for i, yaw in enumerate((-30.0, 0.0, 30.0)):
        y = math.radians(yaw)
        eye = torch.tensor([0.8 * math.sin(y), 0.1, 0.8 * math.cos(y)])
        vm = look_at(eye, torch.tensor([0.0, 0.02, 0.0]), torch.tensor([0.0, 1.0, 0.0])).double().numpy()
        calibs.append(CameraCalib(id=f"cam{i}", width=size, height=size, K=K, dist=np.zeros(5), R=vm[:3, :3],
                                  t=vm[:3, 3]))
        vms.append(vm)
    write_calibration(tmp_path / "cameras.json", calibs)
    bg = torch.tensor([[0.2, 0.35, 0.5]])
    videos = []
    for cal in calibs:
        path = tmp_path / f"{cal.id}.mp4"
        Kt = torch.as_tensor(cal.K_talksplat).float()[None]
        with VideoWriter(path, size, size, fps=25) as w, torch.no_grad():
            for i in range(T):
                pi = type(p)(**{k: v[i:i + 1] for k, v in p.__dict__.items()})
                col, _, _ = render_avatar(avatar, rig, pi, torch.as_tensor(cal.viewmat).float()[None], Kt, size,
                                          size, backgrounds=bg, backend="cpu")
                w.write(to_uint8(col[0, 0]))
        videos.append(path)
    return rig, p, calibs, videos


def test_multiview_prep_recovers_head(tmp_path):
    rig, gt, calibs, videos = render_multiview_set(tmp_path)
    out = tmp_path / "ds"
    rep = run_prep(PrepConfig(videos=tuple(videos), calibration=tmp_path / "cameras.json", out=out,
                              resolution=256, quiet=True))
    ds = load_dataset(out)
    assert ds.meta["cameras"] == ["cam0", "cam1", "cam2"] and not ds.meta["monocular"]
    assert ds.num_timesteps == 30 and len(ds.frames) == 90
    fr = ds.frames[0]
    cal = calibs[0].scaled(256 / 320)
    assert np.allclose(fr.K, cal.K_talksplat, atol=1e-6) and np.allclose(fr.c2w, calibs[0].c2w, atol=1e-9)
    assert (fr.width, fr.height) == (256, 256)
    # Tracked vertices against the rendered truth, in metres (calibrated cameras: no scale ambiguity).
    from talksplat.rigs.base import RigParams

    T = ds.num_timesteps
    pred = RigParams(shape=torch.as_tensor(ds.shape)[None].expand(T, -1),
                     **{k: torch.as_tensor(v) for k, v in ds.params.items()})
    with torch.no_grad():
        err = (rig(pred).vertices - rig(gt).vertices)[:, rig.region("face")].norm(dim=-1).mean()
    print(f"multi-view prep: face vertex error {1e3 * float(err):.2f} mm, landmark error "
          f"{100 * rep.tracking_error['mean_iod']:.2f}% IOD")
    assert float(err) < 0.004  # 4 mm: FaceMesh on our own renders is the limit, not the solver
    assert reprojection_error(ds, rig).mean() < 0.03


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talksplat.cli", *args], capture_output=True, text=True, cwd=cwd)


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("talksplat: error")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def assert_nothing_written(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")], list(parent.iterdir())


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, shared_data):
    d = tmp_path_factory.mktemp("bad")
    grid = shared_data / "grid" / "bbaf2n.mpg"
    (d / "notes.mp4").write_text("this is not a video\n")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "2", "-pix_fmt", "yuv420p", str(d / "noface.mp4"))
    ffmpeg("-i", str(grid), "-t", "0.6", str(d / "short.mp4"))
    # The face is visible for the first 0.5 s only; a black box covers the rest.
    ffmpeg("-i", str(grid), "-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='gte(t,0.5)'",
           str(d / "lost.mp4"))
    ffmpeg("-i", str(grid), "-t", "1.2", str(d / "cam0.mp4"))
    ffmpeg("-i", str(grid), "-t", "1.2", str(d / "cam1.mp4"))
    (d / "broken.json").write_text("{not json")
    cams = {"cameras": [{"id": i, "width": 360, "height": 288, "K": [[400, 0, 180], [0, 400, 144], [0, 0, 1]],
                         "R": np.eye(3).tolist(), "t": [0, 0, 1]} for i in ("camA", "camB")]}
    (d / "wrongids.json").write_text(json.dumps(cams))
    return d


@pytest.mark.parametrize("case, args, expect", [
    ("not a video", ["notes.mp4"], "notes.mp4: not a video"),
    ("no face", ["noface.mp4"], "noface.mp4: no face found"),
    ("face lost", ["lost.mp4"], "lost.mp4: face lost for most of the clip"),
    ("too short", ["short.mp4"], "short.mp4: clip is"),
    ("bad calibration", ["cam0.mp4", "cam1.mp4", "--calibration", "broken.json"], "broken.json"),
    ("ids mismatch", ["cam0.mp4", "cam1.mp4", "--calibration", "wrongids.json"], "wrongids.json"),
    ("missing file", ["nothere.mp4"], "nothere.mp4"),
])
def test_bad_input_one_line_error_nothing_written(bad_inputs, case, args, expect):
    proc = run_cli("prep", *args, "--out", "out", "--resolution", "128", "--quiet", cwd=bad_inputs)
    line = error_line(proc)
    assert expect in line, line
    assert_nothing_written(bad_inputs, "out")


def test_refuses_existing_dataset_unless_overwrite(grid_dataset, tmp_path):
    _, ds = grid_dataset
    proc = run_cli("prep", "whatever.mp4", "--out", str(ds.root), "--quiet")
    assert "already holds a dataset" in error_line(proc)
    assert (ds.root / "meta.json").is_file()  # untouched


def test_two_people_one_subject_followed(shared_data, tmp_path, capsys):
    """Two GRID speakers side by side: prep follows one of them through the whole clip."""
    grid = shared_data / "grid"
    both = tmp_path / "two.mp4"
    ffmpeg("-i", str(grid / "lbbc2a.mpg"), "-i", str(grid / "sbwe5n.mpg"), "-filter_complex", "hstack=inputs=2",
           "-t", "1.6", "-an", str(both))
    rep = run_prep(PrepConfig(videos=(both,), out=tmp_path / "ds", resolution=128, quiet=True))
    ds = load_dataset(tmp_path / "ds")
    assert ds.meta["audio"] is None and ds.num_timesteps == 40
    assert "two.mp4: no audio track" in capsys.readouterr().err  # said even with quiet
    # Every stored crop shows the same person: the crop centres never jump between the halves.
    centres = np.array([fr.K[0, 2] for fr in ds.frames])  # principal point moves opposite to the crop
    assert np.ptp(centres) < 0.25 * 128
    assert rep.tracking_error["mean_iod"] < GRID_TRACKING_THRESHOLD
