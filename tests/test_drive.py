"""`talksplat fit` (audio predictor stage) and `talksplat drive` on real GRID recordings, end to end."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talksplat.cli import main
from talksplat.core.ffmpeg import ffmpeg_exe

pytestmark = pytest.mark.e2e  # whole commands on real media (docs/architecture.md: tests)


@pytest.fixture(scope="module")
def grid_fit(shared_data, tmp_path_factory):
    """pwij3p prepared and fitted (a small avatar, the audio predictor); the same speaker's other clip prepared."""
    from talksplat.data_prep.config import PrepConfig
    from talksplat.data_prep.prep import run_prep

    root = tmp_path_factory.mktemp("drive")
    for clip in ("pwij3p", "id2_vcd_swwp2s"):
        run_prep(PrepConfig(videos=(shared_data / "grid" / f"{clip}.mpg",), out=root / clip, resolution=96, quiet=True))
    rc = main(["fit", str(root / "pwij3p"), "--out", str(root / "fit"), "--preset", "fast", "--steps", "30",
               "--quiet", "--driver.steps", "400"])
    assert rc == 0
    return root


def test_fit_trains_and_evaluates_the_audio_predictor(grid_fit):
    import json

    fit = grid_fit / "fit"
    assert (fit / "driver.safetensors").is_file()
    m = json.loads((fit / "metrics.json").read_text())
    assert "psnr" in m["heldout"]  # the avatar's figures are kept
    # fitted over the clip's plate: the whole held-out frames are scored and the fit keeps the plate for drive
    h = m["heldout"]
    assert h["frames"] == 15 and h["images"] == 15 and h["frame_psnr_min"] <= h["frame_psnr"]
    assert h["frame_psnr"] > 18 and h["fg_psnr"] > 18  # measured after 30 steps at 96 px: 21.6 / 22.3 dB
    assert (fit / "plate.png").is_file() and (fit / "source_frame.json").is_file()
    assert (fit / "heldout" / "frame_00060.png").is_file()
    d = m["driver"]["heldout"]
    assert d["frames"] == 15 and np.isfinite(d["lve_mm2"]) and d["lve_mm2"] < d["lve_mean_baseline_mm2"]


def test_lip_sync_on_another_clip_of_the_same_speaker(grid_fit, open_rig):
    """Train on pwij3p.mpg, evaluate on id2_vcd_swwp2s.mpg (same man, other sentence).

    Measured (400 steps, 2.7 s of training speech): LVE 13-15 mm² against 27.6 mm² for the
    mean-expression baseline, mouth-opening correlation 0.65-0.7."""
    from talksplat.data_prep.dataset import load_dataset
    from talksplat.driving.audio import load_audio
    from talksplat.driving.evaluate import LipGeometry
    from talksplat.driving.predictor import load_predictor
    from talksplat.driving.train import evaluate_predictor

    drv = load_predictor(grid_fit / "fit" / "driver.safetensors", rig_checksum=open_rig.checksum)
    train, test = load_dataset(grid_fit / "pwij3p"), load_dataset(grid_fit / "id2_vcd_swwp2s")
    tracked = {k: np.asarray(v, np.float32) for k, v in test.params.items()}
    ids = np.arange(test.num_timesteps)
    m = evaluate_predictor(drv, LipGeometry(open_rig, test.shape), load_audio(test.audio_path), 25.0, tracked, ids,
                        {k: np.asarray(v) for k, v in train.params.items()}, np.asarray(train.split["train"]))
    print(f"GRID pwij3p -> swwp2s: LVE {m['lve_mm2']:.2f} mm², mean baseline {m['lve_mean_baseline_mm2']:.2f} mm², "
          f"mouth-opening correlation {m['mouth_open_corr']:.3f}")
    assert m["lve_mm2"] < 0.75 * m["lve_mean_baseline_mm2"]
    assert m["mouth_open_corr"] > 0.4


def _probe(path: Path) -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def _check_mp4(path: Path, audio_seconds: float, fps: float, size: int | None, expected: int | None = None):
    """The MP4's streams, frame count and duration; ``size``: its square frames' side (None: any size)."""
    from talksplat.data_prep.decode import probe_video
    from talksplat.driving.audio import decode_audio
    from talksplat.render.video import read_video

    info = _probe(path)
    streams = re.findall(r"Stream #0:\d+.*?: (Video|Audio): (\w+)", info)
    assert sorted(streams) == [("Audio", "aac"), ("Video", "h264")], info
    frames, got_fps = read_video(path)
    expected = round(audio_seconds * fps) if expected is None else expected
    assert len(frames) == expected and got_fps == pytest.approx(fps)
    assert size is None or frames.shape[1:] == (size, size, 3)
    assert abs(probe_video(path).duration - audio_seconds) <= 1.0 / fps
    audio = decode_audio(path)
    assert abs(len(audio) / 16000 - audio_seconds) <= 1.0 / fps
    return frames


def test_drive_from_speech_writes_an_mp4_with_sound(grid_fit, shared_data, tmp_path):
    speech = shared_data / "audio" / "cmu_arctic_awb_a0007.wav"  # another voice, 4.0 s
    out = tmp_path / "talk.mp4"
    rc = main(["drive", str(grid_fit / "fit"), "--audio", str(speech), "--out", str(out), "--resolution", "128",
               "--pose", "idle", "--frame", "head", "--background", "#204080", "--arkit-csv", "--quiet"])
    assert rc == 0
    frames = _check_mp4(out, 4.0, 25.0, 128)
    corner = frames[:, :4, :4].reshape(-1, 3).mean(0)
    assert np.abs(corner - [0x20, 0x40, 0x80]).max() < 12  # the background colour
    centre = frames[:, 48:80, 48:80].astype(float)
    assert np.abs(centre - [0x20, 0x40, 0x80]).mean() > 30  # the head is there
    # the mouth moves with the speech: lower-face pixels vary over time more than the forehead
    z = np.load(out.with_suffix(".npz"))
    assert z["expression"].shape[0] == 100 and z["jaw"].shape == (100, 3) and float(z["fps"]) == 25.0
    assert z["jaw"][:, 0].std() > 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.csv", "talk.mp4", "talk.npz", "talk.wav"]
    assert str(z["audio"]) == "talk.wav"
    rows = out.with_suffix(".csv").read_text().splitlines()  # --arkit-csv: one Live Link Face row per frame
    assert len(rows) == 101 and rows[0].startswith("Timecode,") and len(rows[-1].split(",")) == 63


def test_drive_from_a_video_audio_track_and_replay(grid_fit, shared_data, tmp_path):
    import imageio.v3 as iio

    bg = np.zeros((100, 200, 3), np.uint8)
    bg[..., 1] = 200  # green, with a red left edge that the centre crop must cut away
    bg[:, :40, 0] = 255
    iio.imwrite(tmp_path / "bg.png", bg)
    out = tmp_path / "clip.mp4"
    rc = main(["drive", str(grid_fit / "fit"), "--audio", str(shared_data / "grid" / "lbbc2a.mpg"), "--out", str(out),
               "--resolution", "64", "--pose", "replay", "--camera", "25,5", "--background", str(tmp_path / "bg.png"),
               "--quiet"])
    assert rc == 0
    from talksplat.driving.audio import decode_audio

    frames = _check_mp4(out, len(decode_audio(shared_data / "grid" / "lbbc2a.mpg")) / 16000, 25.0, 64)
    assert np.abs(frames[:, :3, :3].reshape(-1, 3).mean(0) - [0, 200, 0]).max() < 15


def test_drive_in_the_subjects_own_frame(grid_fit, shared_data, tmp_path):
    """The default framing of an avatar fitted over its plate: the whole source frame, the head where it sat, the
    subject's background and torso around it, steady (no flicker where nothing is rendered)."""
    import cv2

    from talksplat.data_prep.dataset import load_dataset

    speech = shared_data / "audio" / "cmu_arctic_awb_a0007.wav"
    out = tmp_path / "own.mp4"
    assert main(["drive", str(grid_fit / "fit"), "--audio", str(speech), "--out", str(out), "--quiet"]) == 0
    frames = _check_mp4(out, 4.0, 25.0, None).astype(float)
    assert frames.shape[1:] == (288, 360, 3)  # the GRID clip's own size
    ds = load_dataset(grid_fit / "pwij3p")
    plate = cv2.imread(str(grid_fit / "fit" / "plate.png"))[..., ::-1].astype(float)
    t = ds.split["heldout"][0]
    source = ds.load_source_frame(t).astype(float)
    # away from the head the video is the plate, and the plate is the subject's own frame there
    border = np.zeros((288, 360), bool)
    border[:, :40] = border[:, -40:] = True
    assert np.abs(frames[:, border] - plate[border]).mean() < 4
    assert np.abs(source[border] - plate[border]).mean() < 6
    # the head is rendered where the subject's head was: what differs from the plate (which has no head) lies where
    # it does in the subject's own frame at a held-out time step, and about as large (a 30-step avatar: measured
    # centroids 2-3 px apart, areas 19.2k and 24.7k px)
    def head(img):
        ys, xs = np.nonzero(np.abs(img - plate).mean(-1) > 30)
        return np.array([xs.mean(), ys.mean()]), len(xs)

    (c_video, n_video), (c_source, n_source) = head(frames.mean(0)), head(source)
    assert np.abs(c_video - c_source).max() < 10 and 0.5 < n_video / n_source < 1.5, (c_video, c_source)
    # seam flicker: a static background patch changes frame to frame no more than the encoder's noise
    flicker = np.abs(np.diff(frames[:, 8:40, 8:40], axis=0)).mean()
    assert flicker < 1.0, flicker
    # --background replaces the plate; --max-size scales the frame down
    out2 = tmp_path / "black.mp4"
    assert main(["drive", str(grid_fit / "fit"), "--audio", str(speech), "--out", str(out2), "--background", "black",
                 "--max-size", "180", "--pose", "still", "--quiet"]) == 0
    small = _check_mp4(out2, 4.0, 25.0, None)
    assert small.shape[1:] == (144, 180, 3) and small[:, :10, :10].max() < 20


def test_drive_source_frame_needs_a_plate_and_the_source_camera(grid_fit, small_inputs, tmp_path, capsys):
    speech = str(small_inputs.wav)
    for fit, args, expect in ((grid_fit / "fit", ["--camera", "20,0"], "--camera 20,0 needs --frame head"),
                              (small_inputs.fit, [], "was not fitted over a plate")):
        capsys.readouterr()
        assert main(["drive", str(fit), "--audio", speech, "--out", str(tmp_path / "x.mp4"), "--frame", "source",
                     "--quiet", *args]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
    assert not list(tmp_path.iterdir())  # nothing written


def test_drive_silence_keeps_the_mouth_closed(grid_fit, tmp_path):
    from talksplat.driving.audio import write_wav
    from talksplat.driving.predictor import load_predictor

    write_wav(tmp_path / "silence.wav", np.zeros(32000, np.float32))
    out = tmp_path / "quiet.mp4"  # not silence.mp4: its quiet.wav beside it would replace the input
    assert main(["drive", str(grid_fit / "fit"), "--audio", str(tmp_path / "silence.wav"), "--out", str(out),
                 "--resolution", "32", "--frame", "head", "--pose", "still", "--quiet"]) == 0
    z = np.load(out.with_suffix(".npz"))
    drv = load_predictor(grid_fit / "fit" / "driver.safetensors")
    ne = len(drv.layout.expr_ids)
    assert z["jaw"].shape == (50, 3)
    assert np.allclose(z["jaw"], drv.rest[ne:], atol=1e-5)  # every frame: the subject's silent mouth
    assert np.allclose(z["expression"][:, drv.layout.expr_ids], drv.rest[:ne], atol=1e-5)


def test_drive_from_text(grid_fit, tmp_path):
    from talksplat.driving.audio import espeak_exe

    if espeak_exe() is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp_path / "hello.mp4"
    assert main(["drive", str(grid_fit / "fit"), "--text", "Hello, this is a test.", "--out", str(out),
                 "--resolution", "64", "--frame", "head", "--pose", "still", "--quiet"]) == 0
    from talksplat.driving.audio import decode_audio

    seconds = len(decode_audio(out)) / 16000
    assert 1.0 < seconds < 4.0
    frames = len(np.load(out.with_suffix(".npz"))["expression"])  # round(speech duration * fps)
    _check_mp4(out, seconds, 25.0, 64, expected=frames)


def test_drive_bad_input(grid_fit, tmp_path, capsys):
    fit = grid_fit / "fit"
    out = tmp_path / "x.mp4"

    def err(args) -> str:
        capsys.readouterr()
        assert main(args) == 1
        e = capsys.readouterr().err.strip()
        assert len(e.splitlines()) == 1, e
        return e

    assert "missing.wav: no such audio file" in err(["drive", str(fit), "--audio", str(tmp_path / "missing.wav"),
                                                      "--out", str(out)])
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"\0" * 100)
    assert "junk.m4a: cannot read audio" in err(["drive", str(fit), "--audio", str(junk), "--out", str(out)])
    assert "exactly one of --audio" in err(["drive", str(fit), "--out", str(out)])
    empty_fit = tmp_path / "nofit"
    empty_fit.mkdir()
    assert "nofit: not a fit folder" in err(["drive", str(empty_fit), "--text", "hi", "--out", str(out)])
    # an avatar without a predictor
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "avatar.safetensors").write_bytes((fit / "avatar.safetensors").read_bytes())
    assert "driver.safetensors: no audio predictor here" in err(["drive", str(bare), "--text", "hi", "--out", str(out)])
    assert "--background" in err(["drive", str(fit), "--text", "hi", "--out", str(out), "--background", "mauve"])
    assert "--camera" in err(["drive", str(fit), "--text", "hi", "--out", str(out), "--camera", "left"])
    # no GPU with NVENC here: NVIDIA's encoder refused in one line, before any work (auto falls back to libx264)
    assert "--encoder nvenc" in err(["drive", str(fit), "--text", "hi", "--out", str(out), "--encoder", "nvenc"])
    # --text without any TTS on the PATH names the package to install
    path = os.environ["PATH"]
    try:
        os.environ["PATH"] = str(tmp_path)
        assert "install espeak-ng" in err(["drive", str(fit), "--text", "hi", "--out", str(out)])
    finally:
        os.environ["PATH"] = path
    assert not out.exists() and not out.with_suffix(".npz").exists() and not out.with_suffix(".wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "junk.m4a", "nofit"]


def test_driver_only_needs_audio(tmp_path, capsys):
    """A dataset without audio: `fit` skips the predictor with a warning, `--driver-only` fails in one line."""
    from talksplat.benchmarks.synthetic_dataset import write_synthetic_dataset
    from talksplat.rigs import load_rig

    ds = tmp_path / "silent"
    write_synthetic_dataset(ds, load_rig("open"), T=6, size=48)
    assert main(["fit", str(ds), "--out", str(tmp_path / "fit"), "--steps", "2", "--quiet"]) == 0
    assert "skipping the audio predictor" in capsys.readouterr().err
    assert not (tmp_path / "fit" / "driver.safetensors").exists()
    assert main(["fit", str(ds), "--out", str(tmp_path / "fit"), "--driver-only", "--quiet"]) == 1
    e = capsys.readouterr().err.strip()
    assert len(e.splitlines()) == 1 and "silent: the dataset has no audio.wav" in e


def test_viewer_plays_predicted_and_driven_sequences(grid_fit, shared_data, tmp_path, open_rig):
    """`talksplat view --audio` runs the avatar's predictor; `--params` reads what `drive` wrote."""
    from talksplat.viewer.inputs import load_params_file, predict_sequence

    speech = shared_data / "audio" / "cmu_arctic_awb_a0007.wav"
    seq = predict_sequence(grid_fit / "fit" / "avatar.safetensors", speech, 25.0, open_rig)
    assert seq.length == 100 and seq.audio == speech and seq.frames["jaw"][:, 0].std() > 1e-3
    out = tmp_path / "d.mp4"
    assert main(["drive", str(grid_fit / "fit"), "--audio", str(speech), "--out", str(out), "--resolution", "32",
                 "--frame", "head", "--quiet"]) == 0
    driven = load_params_file(out.with_suffix(".npz"), open_rig)
    assert driven.length == 100 and driven.audio == out.with_suffix(".wav") and driven.fps == 25.0
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "avatar.safetensors").write_bytes((grid_fit / "fit" / "avatar.safetensors").read_bytes())
    with pytest.raises(ValueError, match="driver.safetensors: no audio predictor here"):
        predict_sequence(bare / "avatar.safetensors", speech, 25.0, open_rig)


def test_bench_drive_runs():
    from talksplat.benchmarks.config import BenchDriveConfig
    from talksplat.benchmarks.drive import bench_drive

    rows = bench_drive(BenchDriveConfig(seconds=1.0, resolution=(32,), device=("cpu", "cuda"), per_face=1))
    cpu = rows[0]
    assert cpu["device"] == "cpu" and cpu["frames"] == 25 and cpu["audio_seconds"] == 1.0
    assert 0 < cpu["predict_seconds"] < cpu["seconds"] and cpu["realtime_factor"] == pytest.approx(cpu["seconds"], rel=0.01)
    assert len(rows) == 2 and (rows[1].get("skipped") == "no CUDA device") != ("frames" in rows[1])


def test_render_poses_a_fitted_avatar_with_its_subjects_identity(grid_fit, tmp_path, monkeypatch):
    """`talksplat render --avatar FIT`: the Gaussians sit on the subject's head (the fit's identity), so the rig is
    posed with that shape, not the rig's mean head; a bare avatar file (no fit folder beside it) uses the mean."""
    from talksplat.avatar import render as avatar_render

    shapes = []
    real = avatar_render.render_avatar

    def spy(avatar, rig, params, *a, **k):
        shapes.append(params.shape[0].cpu().numpy().copy())
        return real(avatar, rig, params, *a, **k)

    monkeypatch.setattr(avatar_render, "render_avatar", spy)
    fit = grid_fit / "fit"
    assert main(["render", "--avatar", str(fit), "--out", str(tmp_path / "x.png"), "--resolution", "48"]) == 0
    subject = np.load(fit / "tuned_params.npz")["shape"]
    assert np.abs(subject).max() > 0.05 and np.allclose(shapes[-1], subject, atol=1e-6)
    bare = tmp_path / "bare" / "avatar.safetensors"
    bare.parent.mkdir()
    bare.write_bytes((fit / "avatar.safetensors").read_bytes())
    assert main(["render", "--avatar", str(bare), "--out", str(tmp_path / "y.png"), "--resolution", "48"]) == 0
    assert not shapes[-1].any()
