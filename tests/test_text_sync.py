"""`talksplat bench text-sync`: the truth taken from espeak-ng's phonemes and the articulation figures, on
hand-made segments and mouth-opening curves with known answers (the avatar run itself is in the README)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from talksplat.benchmarks import text_sync as ts
from talksplat.core.errors import OptionError
from talksplat.driving.phonetic import PhoneSegment, espeak_viseme


def seg(phone: str, start: float, end: float) -> PhoneSegment:
    return PhoneSegment(phone, espeak_viseme(phone), start, end)


#: "mapa" at 25 fps with 0.6 s of silence around: m [0.60, 0.68), a [0.68, 0.84), p [0.84, 0.86) (a stop's
#: release, shorter than a frame), a [0.86, 1.00), then silence.
MAPA = [seg("_:", 0.0, 0.6), seg("m", 0.60, 0.68), seg("a", 0.68, 0.84), seg("p", 0.84, 0.86),
        seg("a", 0.86, 1.00), seg("@", 1.00, 1.04), seg("_", 1.04, 1.64)]
T = 41  # 1.64 s


def test_truth_frames_from_segments():
    t = ts.truth_frames(MAPA, T, fps=25.0)
    # frame f shows f / 25 s: m holds frames 15, 16 (0.60, 0.64); p is shorter than a frame -> nearest its middle
    assert [f.tolist() for f in t.bilabial] == [[15, 16], [21]]
    assert [f.tolist() for f in t.vowel] == [[17, 18, 19, 20], [22, 23, 24]]  # schwa "@" is not an open vowel
    assert t.speech.sum() == 11 and t.speech[15] and t.speech[25] and not t.speech[26]
    # rest: at least 0.2 s from the first / last phoneme (0.60 and 1.04)
    assert np.flatnonzero(t.rest).tolist() == list(range(0, 10)) + list(range(31, 41))
    assert not (t.rest & t.speech).any()


def curve(closed_frames, open_frames, rest=0.0, speech_level=0.05, wide=0.2):
    o = np.full(T, rest)
    o[15:26] = speech_level
    o[list(closed_frames)] = rest
    o[list(open_frames)] = wide
    return o


def test_articulating_mouth_scores_well():
    t = ts.truth_frames(MAPA, T, fps=25.0)
    o = curve([15, 16, 21], [17, 18, 19, 20, 22, 23, 24])
    th = ts.thresholds([o], [t])
    assert th["rest"] == 0.0 and th["wide"] == pytest.approx(0.2)
    assert th["closed"] == pytest.approx(0.05) and th["opened"] == pytest.approx(0.1)
    f = ts.articulation([o], [t], th["closed"], th["opened"])
    assert f["bilabial"] == 0.0 and f["vowel"] == pytest.approx(0.2) and f["ratio"] == 0.0
    assert f["closure_recall"] == 1.0 and f["vowel_recall"] == 1.0
    assert (f["bilabials"], f["vowels"]) == (2, 2)


def test_mouth_closing_one_frame_late_counts_within_the_tolerance():
    t = ts.truth_frames(MAPA, T, fps=25.0)
    o = curve([17, 22], [18, 19, 20, 23, 24])  # closes one frame after each bilabial
    assert ts.articulation([o], [t], 0.05, 0.1)["closure_recall"] == 1.0
    assert ts.articulation([o], [t], 0.05, 0.1, tolerance=0)["closure_recall"] == 0.0


def test_mouth_open_at_bilabials_fails():
    """A mouth wide open at p/b/m and only a little open on the vowels: ratio > 1, no closure."""
    t = ts.truth_frames(MAPA, T, fps=25.0)
    o = np.zeros(T)
    o[14:27] = 0.06
    o[[15, 16, 21]] = 0.2
    th = ts.thresholds([o], [t])
    assert th["closed"] == pytest.approx(0.05) and th["opened"] == pytest.approx(0.1)
    f = ts.articulation([o], [t], th["closed"], th["opened"])
    assert f["ratio"] == pytest.approx(0.2 / 0.06)
    assert f["closure_recall"] == 0.0
    assert f["vowel_recall"] == 1.0  # each vowel touches a wide bilabial frame within ±1 ...
    f0 = ts.articulation([o], [t], th["closed"], th["opened"], tolerance=0)
    assert f0["vowel_recall"] == 0.0 and f0["closure_recall"] == 0.0  # ... but not on its own frames


def test_static_mouth_has_ratio_one_and_nan_without_faces():
    t = ts.truth_frames(MAPA, T, fps=25.0)
    o = np.full(T, 0.03)
    th = ts.thresholds([o], [t])
    f = ts.articulation([o], [t], th["closed"], th["opened"])
    assert f["ratio"] == 1.0 and f["closure_recall"] == 0.0 and f["vowel_recall"] == 0.0
    f = ts.articulation([np.full(T, np.nan)], [t], 0.01, 0.02)
    assert math.isnan(f["ratio"]) and math.isnan(f["closure_recall"]) and f["bilabials"] == 0


def test_voice_list():
    assert ts.voice_list(["en-us,de", "fr", "de"]) == ["en-us", "de", "fr"]
    with pytest.raises(OptionError, match="voices with sentences: en-us, de, fr, es"):
        ts.voice_list(["en-us,xx"])


def test_unknown_voice_is_one_line_before_the_avatar_is_read(tmp_path, capsys):
    from talksplat.cli import main

    assert main(["bench", "text-sync", str(tmp_path / "missing"), "--voices", "klingon"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sentences for 'klingon'" in err[0] and "en-us" in err[0]


def test_bilabials_fall_where_espeak_says(tmp_path):
    """Real espeak-ng: every built-in sentence has bilabials and open vowels, and for a French sentence the
    bilabial frames are espeak's p, p, m, p, m, each at its own time after the padding."""
    from talksplat.driving.audio import AudioError, load_audio
    from talksplat.driving.drive import spoken_visemes

    try:
        wav, visemes, segs = spoken_visemes("Papa mange une pomme.", tmp_path / "fr.wav", "fr", pad_s=ts.PAD_S)
    except AudioError as e:  # no espeak-ng library (or its French voice): the message names espeak-ng
        pytest.skip(str(e))
    wave = load_audio(wav)
    T = int(round(len(wave) / 16000 * ts.FPS))
    t = ts.truth_frames(segs, T)
    pp = [s for s in segs if s.viseme == "PP"]
    assert [s.phone for s in pp] == ["p", "p", "m", "p", "m"]
    assert pp[0].start >= ts.PAD_S - 0.01  # the padding shifted espeak's times
    assert len(t.bilabial) == 5 and len(t.vowel) >= 3
    for s, frames in zip(pp, t.bilabial):
        assert np.all(np.abs(frames / ts.FPS - (s.start + s.end) / 2) <= max(s.end - s.start, 1 / ts.FPS))
    assert t.rest[:5].all() and t.rest[-5:].all() and not t.rest[t.bilabial[0]].any()
    # the viseme track the phonetic predictor gets says PP at those times (100 frames per second)
    for s in pp:
        assert visemes[int(math.ceil(s.start * 100)), 1] == 1.0
    # audio: the sentence lies between the pads (near-silence outside)
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    assert rms(wave[:int(0.5 * 16000)]) < 0.01 * rms(wave[int(0.6 * 16000):-int(0.6 * 16000)])
    for voice, sentences in ts.SENTENCES.items():
        for text in sentences:
            _, _, segs = spoken_visemes(text, tmp_path / "s.wav", voice, pad_s=0.0)
            tr = ts.truth_frames(segs, int(segs[-1].end * ts.FPS) + 1)
            assert len(tr.bilabial) >= 2 and len(tr.vowel) >= 2, (voice, text)
