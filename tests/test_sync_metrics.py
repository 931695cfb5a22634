"""driving/sync_metrics.py on synthetic FaceMesh landmark arrays with known answers (no data, no torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from talksplat.driving import sync_metrics as sm

IOD = 100.0  # px between the outer eye corners of the template face


def face(openings, seed: int = 0, scale: float = 1.0, angle: float = 0.0, shift=(0.0, 0.0)) -> np.ndarray:
    """[T, 478, 3] px: a template face whose inner-lip gap is ``opening * IOD`` in frame t, then scaled, rotated
    (radians, in the image plane) and shifted."""
    rng = np.random.default_rng(seed)
    tpl = rng.uniform(-60, 60, (478, 3))
    tpl[33, :2], tpl[263, :2] = (-IOD / 2, 0.0), (IOD / 2, 0.0)
    out = np.repeat(tpl[None], len(openings), 0)
    for t, o in enumerate(openings):
        for i, (u, l) in enumerate(sm.INNER_LIP_PAIRS):
            x = 8.0 * (i - 2)
            out[t, u, :2] = (x, 60.0 - o * IOD / 2)
            out[t, l, :2] = (x, 60.0 + o * IOD / 2)
    c, s = math.cos(angle), math.sin(angle)
    xy = out[..., :2] @ np.array([[c, s], [-s, c]]) * scale + np.asarray(shift)
    out[..., :2] = xy
    return out


def test_mouth_opening_is_the_inner_lip_gap_over_the_interocular_distance():
    o = np.array([0.0, 0.05, 0.2])
    np.testing.assert_allclose(sm.mouth_opening(face(o)), o, atol=1e-12)
    np.testing.assert_allclose(sm.interocular(face(o)), IOD)
    # invariant to position, scale and in-plane rotation
    np.testing.assert_allclose(sm.mouth_opening(face(o, scale=2.7, angle=0.4, shift=(30, -12))), o, atol=1e-12)
    # the fit's one-image form (open-mouth held-out images) is the same measure
    from talksplat.fitting.regions import mouth_gap

    np.testing.assert_allclose([mouth_gap(f) for f in face(o, scale=1.3, angle=-0.2)], o, atol=1e-12)


def test_normalised_mouth_removes_position_scale_and_roll():
    o = np.linspace(0, 0.2, 6)
    a = sm.normalised_mouth(face(o))
    b = sm.normalised_mouth(face(o, scale=0.3, angle=-0.7, shift=(200, 50)))
    np.testing.assert_allclose(a, b, atol=1e-9)
    np.testing.assert_allclose(a.mean(1), 0.0, atol=1e-12)  # centroid removed
    assert sm.lip_landmark_distance(face(o), face(o, scale=3, angle=0.2, shift=(5, 5))) == pytest.approx(0, abs=1e-9)


def test_lmd_known_value_and_mean_shape_removal():
    o = np.full(4, 0.1)
    real, av = face(o), face(o)
    # move one lip point by 10 px (0.1 IOD) in every frame: the centroid moves by 0.1 / 40, so
    # that point is 0.1 * 39/40 off and each of the other 39 is 0.1 / 40 off
    k = sm.LIP_POINTS[0]
    av[:, k, 0] += 10.0
    expected = (0.1 * 39 / 40 + 39 * 0.1 / 40) / 40
    assert sm.lip_landmark_distance(real, av) == pytest.approx(expected, rel=1e-9)
    # a constant shape difference (another identity) is removed entirely by subtracting each mean shape
    assert sm.lip_landmark_distance(real, av, remove_mean_shape=True) == pytest.approx(0, abs=1e-12)
    # a different motion is not
    assert sm.lip_landmark_distance(face(np.array([0, 0.2, 0, 0.2])), face(np.array([0.2, 0, 0.2, 0])),
                                    remove_mean_shape=True) > 0.01


def test_correlation_finds_the_lag_and_its_sign():
    rng = np.random.default_rng(1)
    real = rng.uniform(0, 0.2, 60)
    late = np.concatenate([np.full(2, 0.1), real[:-2]])  # the avatar shows real frame t at t + 2
    corrs = sm.lag_correlations(real, late, 3)
    assert set(corrs) == set(range(-3, 4))
    lag, r = sm.best_lag(corrs)
    assert lag == 2 and r == pytest.approx(1.0)
    assert abs(corrs[0]) < 0.5
    lag, r = sm.best_lag(sm.lag_correlations(late, real, 3))
    assert lag == -2 and r == pytest.approx(1.0)
    assert sm.lag_correlations(real, np.full(60, 0.1), 1)[0] == 0.0  # a static mouth correlates with nothing


def test_correlation_ignores_missing_frames():
    rng = np.random.default_rng(2)
    real = rng.uniform(0, 0.2, 40)
    av = real * 0.5 + 0.01
    av[[3, 17]] = np.nan
    assert sm.lag_correlations(real, av, 0)[0] == pytest.approx(1.0)


def test_speech_masks_pauses_and_silences():
    fps = 25.0
    # 10 silent frames, 10 voiced, a 4-frame pause (0.16 s), 10 voiced, an 8-frame pause (0.32 s), 10 voiced,
    # 10 silent
    level = np.array([-80] * 10 + [-20] * 10 + [-70] * 4 + [-20] * 10 + [-70] * 8 + [-20] * 10 + [-80] * 10, float)
    inside, silence = sm.speech_masks(level, fps)
    assert inside[10:34].all() and not inside[:10].any()  # the short pause is inside speech
    assert not inside[34:42].any()  # the long one is not ...
    assert silence[34:42].all() and silence[:10].all() and silence[52:].all()  # ... it is silence (>= 0.2 s)
    assert not silence[20:24].any() and not silence[10:20].any()


def test_speech_masks_noise_floor_close_to_the_speech():
    # GRID-like: a noise floor only 25 dB under the speech; the 30 dB rule alone would call it all voiced
    rng = np.random.default_rng(3)
    level = np.concatenate([-42 + 1.5 * rng.standard_normal(12), -17 + 2 * rng.standard_normal(50),
                            -42 + 1.5 * rng.standard_normal(13)])
    inside, silence = sm.speech_masks(level, 25.0)
    assert silence[:12].all() and silence[62:].all() and inside[12:62].all() and not silence[12:62].any()


def test_closure_recall_and_open_in_silence():
    real = np.array([0.0, 0.0, 0.2, 0.2, 0.0, 0.0, 0.2, 0.2, 0.0, 0.0])
    thr = sm.closed_threshold(real)
    assert 0.0 < thr < 0.1
    inside = np.ones(10, bool)
    inside[-2:] = False  # the last closed frames are outside speech: not counted
    av = np.array([0.0, 0.15, 0.2, 0.2, 0.0, 0.0, 0.2, 0.2, 0.2, 0.2])
    recall, n = sm.closure_recall(real, av, inside, thr)
    assert n == 4 and recall == pytest.approx(3 / 4)
    silence = np.zeros(10, bool)
    silence[-4:] = True
    # real open inside speech: frames 2, 3, 6, 7; the avatar is closed in none of them
    assert sm.closed_when_open(real, av, inside, thr) == 0.0
    assert sm.closed_when_open(real, np.zeros(10), inside, thr) == 1.0  # a mouth that never opens
    ois, n = sm.open_in_silence(av, silence, thr)
    assert n == 4 and ois == pytest.approx(1.0)
    assert math.isnan(sm.closure_recall(np.full(10, 0.2), av, inside, thr)[0])


def test_sync_metrics_perfect_copy_and_static_mouth():
    fps = 25.0
    t = np.arange(75)
    opening = np.clip(0.12 * np.sin(2 * np.pi * t / 15), 0, None)  # closes for half of each cycle
    opening[:10] = 0.0
    level = np.where(opening > 0, -20.0, -25.0)
    level[:10] = -80.0
    real = face(opening)
    copy = sm.sync_metrics(real, face(opening, seed=3, scale=2.0, angle=0.3), level, fps)
    assert copy["corr_lag0"] == pytest.approx(1.0) and copy["best_lag"] == 0
    assert copy["amplitude_ratio"] == pytest.approx(1.0) and copy["lmd_centered"] == pytest.approx(0, abs=1e-9)
    assert copy["closure_recall"] == pytest.approx(1.0) and copy["closure_frames"] > 10
    assert copy["open_in_silence"] == 0.0 and copy["silence_frames"] == 10 and copy["frames"] == 75
    static = sm.sync_metrics(real, face(np.full(75, 0.06)), level, fps)
    assert static["corr_lag0"] == 0.0 and static["amplitude_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert static["closure_recall"] == 0.0 and static["open_in_silence"] == 1.0 and static["closed_when_open"] == 0.0
    assert static["lmd_centered"] > copy["lmd_centered"] + 0.003  # 10 of the 40 lip points move


def test_sync_metrics_skips_frames_without_a_face_and_checks_lengths():
    opening = np.tile([0.0, 0.1, 0.2], 10)
    real, av = face(opening), face(opening)
    av[5] = np.nan
    m = sm.sync_metrics(real, av, np.zeros(30), 25.0)
    assert m["frames"] == 29 and m["corr_lag0"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        sm.sync_metrics(real, av[:20], np.zeros(20), 25.0)
    with pytest.raises(ValueError):
        sm.mouth_opening(np.zeros((3, 10, 2)))


def test_mean_metrics_leaves_out_nan():
    m = sm.mean_metrics([{k: 1.0 for k in sm.SUMMARY_KEYS}, {**{k: 3.0 for k in sm.SUMMARY_KEYS},
                                                              "closure_recall": math.nan}])
    assert m["corr_lag0"] == 2.0 and m["closure_recall"] == 1.0 and m["videos"] == 2


def test_audio_levels_and_envelope_per_video_frame():
    hop, fps = 0.01, 25.0  # 4 RMS steps per video frame
    rms = np.concatenate([np.zeros(40), np.full(40, 0.1), np.zeros(20)])  # 0.4 s silence, 0.4 s sound, 0.2 s
    db = sm.frame_levels_db(rms, hop, fps, 26)
    assert db.shape == (26,)
    np.testing.assert_allclose(db[10:20], 20.0 * np.log10(0.1))
    assert (db[:10] < -100).all() and (db[20:] < -100).all()  # the last frame is past the audio's end
    env = sm.loudness_envelope(rms, hop, fps, 26)
    assert env.min() >= 0 and env.max() == pytest.approx(1.0)
    assert env[12:18].min() > 0.9 and env[:8].max() < 0.05 and env[22:].max() < 0.05
