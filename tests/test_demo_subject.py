"""The synthetic demo subject (talksplat.demo.subject): speech, motion that follows it, and a video that
reads back with its audio and in which mediapipe FaceMesh finds the face and sees the mouth move.

Everything is real: espeak-ng where installed (else the procedural voice), the CPU rasterizer, H.264 +
AAC through ffmpeg, mediapipe FaceMesh.  About 10 s on two CPU cores."""

from __future__ import annotations

import numpy as np
import pytest

from talksplat.demo.subject import demo_speech, make_demo_subject, procedural_speech, subject_motion
from talksplat.driving.audio import SAMPLE_RATE, decode_audio, espeak_exe, frame_rms
from talksplat.rigs import load_rig

FPS = 25.0
#: Correlation of jawOpen with the speech level (40 ms frames, dB, floored 40 dB below the loud speech).
#: Measured 0.976-0.990 for both clips with espeak-ng and with the procedural voice.
JAW_LEVEL_CORRELATION = 0.9
#: jawOpen inside pauses (runs of >= 4 frames 40 dB below the loud speech, their edge frames left out).
#: Measured at most 0.007; talking frames average about 0.41.
JAW_IN_SILENCE = 0.05
#: Correlation of the lip gap FaceMesh measures in the rendered video with the ground-truth jawOpen.
#: Measured 0.986 on the 2.4 s clip at 320 px.
LIP_GAP_CORRELATION = 0.8


@pytest.fixture(scope="module")
def rig():
    return load_rig("open")


def level_db(wave: np.ndarray, T: int) -> np.ndarray:
    """[T] speech level per video frame (40 ms windows centred at i / fps), dB."""
    rms = frame_rms(wave, SAMPLE_RATE, hop_s=1 / FPS, win_s=1 / FPS)[:T]
    return 20 * np.log10(np.maximum(rms, 1e-7))


def pause_frames(db: np.ndarray, threshold: float, min_len: int = 4) -> np.ndarray:
    """[T] bool: frames inside runs of >= min_len frames below ``threshold``, without each run's first and
    last frame (the mouth is still closing or already opening there)."""
    quiet = db < threshold
    out = np.zeros_like(quiet)
    i = 0
    while i < len(quiet):
        j = i
        while j < len(quiet) and quiet[j]:
            j += 1
        if j - i >= min_len:
            out[i + 1:j - 1] = True
        i = max(j, i + 1)
    return out


@pytest.mark.parametrize("use_tts", [True, False], ids=["tts", "procedural"])
@pytest.mark.parametrize("kind", ["train", "drive"])
def test_motion_follows_speech(tmp_path, rig, kind, use_tts):
    if use_tts and espeak_exe() is None:
        pytest.skip("espeak-ng is not installed")
    wave, source = demo_speech(kind, tmp_path / "speech.wav", use_tts=use_tts)
    assert source == ("espeak-ng" if use_tts else "procedural")
    assert wave.dtype == np.float32 and wave.ndim == 1
    seconds = len(wave) / SAMPLE_RATE
    assert (7.0 < seconds < 11.0) if kind == "train" else (3.0 < seconds < 6.0), seconds
    assert np.allclose(decode_audio(tmp_path / "speech.wav"), wave, atol=2e-4)  # the WAV holds the same speech

    p = subject_motion(wave, FPS, rig, seed=3)
    T = int(round(seconds * FPS))
    assert p.expression.shape == (T, rig.num_expression) and p.global_rot.shape == (T, 3)
    assert p.eyes.shape == (T, 2, 3) and p.shape.shape == (T, rig.num_shape)
    jaw_open = p.expression[:, rig.expression_index("jawOpen")].numpy()
    db = level_db(wave, T)
    ref = np.percentile(db, 95)
    r = np.corrcoef(jaw_open, np.clip(db, ref - 40, ref))[0, 1]
    assert r > JAW_LEVEL_CORRELATION, r
    pauses = pause_frames(db, ref - 40)
    assert pauses.sum() >= 8  # the speech has real pauses (lead-in, between phrases, the end)
    assert jaw_open[pauses].max() < JAW_IN_SILENCE, jaw_open[pauses].max()
    assert jaw_open[db > ref - 10].mean() > 0.25  # and the mouth opens while talking
    assert jaw_open.max() <= 0.55 and np.allclose(p.jaw[:, 0].numpy(), 0.1 * jaw_open, atol=1e-6)
    # The head moves a few degrees, the eyes blink.
    deg = np.rad2deg(np.abs(p.global_rot.numpy()).max(0))
    assert 0.3 < deg.max() < 6.0, deg
    if kind == "train":
        assert p.expression[:, rig.expression_index("eyeBlinkLeft")].max() > 0.8


def test_procedural_speech_is_deterministic_with_pauses():
    a, b = procedural_speech(3.0, seed=5), procedural_speech(3.0, seed=5)
    assert a.shape == (48_000,) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, procedural_speech(3.0, seed=6))
    db = 20 * np.log10(np.maximum(frame_rms(a), 1e-7))
    active = (db > db.max() - 30).mean()
    assert 0.3 < active < 0.9, active  # syllables and pauses, not a constant buzz
    assert np.abs(a).max() <= 1.0


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return make_demo_subject(out, seconds=2.4, size=320, fps=FPS, seed=0)


def test_subject_files(subject, rig):
    from talksplat.render.video import read_video

    assert subject["frames"] == 60 and subject["speech_source"] in ("espeak-ng", "procedural")
    assert subject["drive_source"] == subject["speech_source"]
    frames, fps = read_video(subject["video"])
    assert frames.shape == (60, 320, 320, 3) and fps == FPS
    audio = decode_audio(subject["video"])  # the AAC track
    assert abs(len(audio) / SAMPLE_RATE - 2.4) < 0.05, len(audio) / SAMPLE_RATE
    assert np.sqrt(np.mean(audio ** 2)) > 0.01  # speech, not silence
    drive = decode_audio(subject["drive_speech"])
    assert 3.0 < len(drive) / SAMPLE_RATE < 6.0
    with np.load(subject["params"]) as z:
        assert z["expression"].shape == (60, rig.num_expression) and z["eyes"].shape == (60, 2, 3)
        assert z["shape"].shape == (rig.num_shape,) and float(z["fps"]) == FPS
        assert list(z["expression_names"]) == list(rig.expression_names)
    # The frame: a head in the middle on a wall that is not the subject's colour.
    f = frames[30].astype(np.float64)
    assert np.abs(f[:10, :10].mean((0, 1)) - f[150:170, 150:170].mean((0, 1))).max() > 20
    assert not list(subject["video"].parent.glob(".subject*"))  # no temporary files left


def test_facemesh_sees_the_face_and_the_mouth_move(subject, rig):
    from talksplat.data_prep.landmarks import FaceMeshDetector
    from talksplat.render.video import read_video

    frames, _ = read_video(subject["video"])
    with FaceMeshDetector(static=True, max_faces=1) as det:  # every 6th frame, each on its own
        assert all(len(det.detect(f)) == 1 for f in frames[::6])
    with FaceMeshDetector(static=False, max_faces=1) as det:  # all frames, as prep runs it
        found = [det.detect(f) for f in frames]
    assert all(len(f) == 1 for f in found)
    lm = np.stack([f[0][:, :2] for f in found])  # [T, 478, 2] px
    height = (lm[:, :, 1].max(1) - lm[:, :, 1].min(1)) / 320
    assert 0.3 < height.mean() < 0.55, height.mean()  # FaceMesh's face (brow to chin) in a webcam framing
    iod = np.linalg.norm(lm[:, 33] - lm[:, 263], axis=1)
    gap = np.linalg.norm(lm[:, 13] - lm[:, 14], axis=1) / iod  # inner lips
    with np.load(subject["params"]) as z:
        jaw_open = z["expression"][:, rig.expression_index("jawOpen")]
    r = np.corrcoef(gap, jaw_open)[0, 1]
    assert r > LIP_GAP_CORRELATION, r
