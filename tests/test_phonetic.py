"""The phonetic front end: visemes from speech (pocketsphinx, offline) and from text (espeak-ng's own
phoneme timings), and the predictor that uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talksplat.driving.audio import SAMPLE_RATE, espeak_exe, load_audio, synthesize_speech
from talksplat.driving.phonetic import (ARPABET_VISEME, VISEME_INDEX, VISEMES, PhoneSegment, align_phones,
                                        espeak_viseme, phonetic_track, recognise_phones, speak_with_phonemes,
                                        viseme_track)

# GRID file names spell their sentences (../shared/data/README.md).
_GRID = [dict(b="bin", l="lay", p="place", s="set"), dict(b="blue", g="green", r="red", w="white"),
         dict(a="at", b="by", i="in", w="with"), None,
         dict(zip("123456789z", "one two three four five six seven eight nine zero".split())),
         dict(a="again", n="now", p="please", s="soon")]


def grid_transcript(name: str) -> str:
    code = name.replace("id2_vcd_", "")[:6]
    return " ".join(code[i] if table is None else table[code[i]] for i, table in enumerate(_GRID))


def test_arpabet_map_covers_the_bundled_model():
    """Every phone of pocketsphinx's dictionary and noise dictionary has a viseme."""
    from pocketsphinx import get_model_path

    model = Path(get_model_path()) / "en-us"
    phones = set()
    for line in (model / "cmudict-en-us.dict").read_text(errors="replace").splitlines():
        phones.update(line.split()[1:])
    for line in (model / "en-us" / "noisedict").read_text().splitlines():
        phones.update(line.split()[1:])
    assert phones and phones <= set(ARPABET_VISEME), sorted(phones - set(ARPABET_VISEME))
    assert set(ARPABET_VISEME.values()) == set(VISEMES)
    assert [ARPABET_VISEME[p] for p in ("P", "B", "M", "F", "V", "UW", "OW", "SIL")] == \
        ["PP", "PP", "PP", "FF", "FF", "U", "O", "sil"]


def test_viseme_track_one_hot_at_frame_times():
    segs = [PhoneSegment("B", "PP", 0.10, 0.15), PhoneSegment("UW", "U", 0.15, 0.30)]
    v = viseme_track(segs, 40)
    assert v.shape == (40, len(VISEMES)) and np.all(v.sum(1) == 1)
    ids = v.argmax(1)
    assert (ids[10:15] == VISEME_INDEX["PP"]).all() and (ids[15:30] == VISEME_INDEX["U"]).all()
    assert (ids[:10] == 0).all() and (ids[30:] == 0).all()


@pytest.mark.skipif(espeak_exe() is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_espeak_reports_its_own_phonemes():
    """The library synthesis says the same as the espeak-ng program (speech starts and ends at the same
    times; the program adds trailing silence), and its phonemes are the sentence's, in order, inside the
    audio; German works through the same alphabet."""
    from talksplat.driving.audio import decode_audio

    wave, rate, segs = speak_with_phonemes("bin blue at f two now", "en-us")
    ref = decode_audio(synthesize_speech("bin blue at f two now", voice="en-us"), rate)
    span = [np.flatnonzero(np.abs(x) > 0.01)[[0, -1]] / rate for x in (wave, ref)]
    assert np.abs(span[0] - span[1]).max() < 0.02, span
    vis = [s.viseme for s in segs if s.viseme != "sil"]
    assert vis[:4] == ["PP", "I", "nn", "PP"], segs[:6]  # b I n b(lue)
    assert "FF" in vis and vis.count("PP") == 2
    starts = [s.start for s in segs]
    assert starts == sorted(starts) and segs[-1].end <= len(wave) / rate + 1e-6
    _, _, de = speak_with_phonemes("Guten Morgen, wie geht es Ihnen?", "de")
    de_vis = [s.viseme for s in de if s.viseme != "sil"]
    assert de_vis[0] == "kk" and "PP" in de_vis and "U" in de_vis  # G(uten) M(orgen) (G)u(ten)
    assert espeak_viseme("tS") == "CH" and espeak_viseme("'u:") == "U" and espeak_viseme("_:") == "sil"


def test_recognition_against_the_true_transcripts(shared_data):
    """Speaker-independent recognition on ten real GRID speakers, scored against a forced alignment of
    each clip's true sentence: the viseme of most 10 ms frames, and most bilabial closures (p/b/m)
    found by at least one of the two recognisers within 30 ms."""
    if shared_data is None or not (shared_data / "grid").is_dir():
        pytest.skip("needs the GRID clips in ../shared/data/grid")
    accs, found, total = [], 0, 0
    for clip in sorted((shared_data / "grid").glob("*.mpg")):
        wave = load_audio(clip)
        T = len(wave) // 160 + 1
        truth = viseme_track(align_phones(wave, grid_transcript(clip.stem)), T).argmax(1)
        both = phonetic_track(wave, T)
        words = both[:, :len(VISEMES)].argmax(1)
        accs.append(float((words == truth).mean()))
        pp = np.flatnonzero(truth == VISEME_INDEX["PP"])
        for run in np.split(pp, np.flatnonzero(np.diff(pp) > 1) + 1) if len(pp) else []:
            lo, hi = max(0, run[0] - 3), run[-1] + 4
            total += 1
            found += bool(both[lo:hi, VISEME_INDEX["PP"]].any() or both[lo:hi, len(VISEMES) + VISEME_INDEX["PP"]].any())
    print(f"frame viseme accuracy {np.mean(accs):.3f} (min {min(accs):.3f}); bilabials found {found}/{total}")
    assert np.mean(accs) >= 0.7 and min(accs) >= 0.5
    assert total >= 8 and found / total >= 0.7


def test_recognise_silence_and_noise():
    assert [s.viseme for s in recognise_phones(np.zeros(SAMPLE_RATE, np.float32))] == ["sil"]
    noise = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
    v = viseme_track(recognise_phones(noise), 100)
    assert v[:, VISEME_INDEX["sil"]].mean() > 0.5


@pytest.mark.skipif(espeak_exe() is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_phonetic_predictor_trains_saves_and_takes_known_visemes(tmp_path, open_rig):
    """The `phonetic` encoder through training, the driver file and prediction: features carry the
    visemes; a saved driver predicts the same; given visemes equal to the recognised ones give the same
    output as recognition."""
    import torch

    from talksplat.driving.config import PredictorConfig
    from talksplat.driving.features import make_encoder
    from talksplat.driving.predictor import choose_layout, load_predictor
    from talksplat.driving.train import train_predictor

    fps = 25.0
    wave = load_audio(synthesize_speech("Place the blue book by the window, please.", tmp_path / "a.wav"))
    enc = make_encoder("phonetic")
    feats = enc.encode(torch.from_numpy(wave))
    assert feats.shape == (len(wave) // 160 + 1, 81 + 2 * len(VISEMES)) and enc.dim == feats.shape[1]
    assert torch.allclose(feats[:, 81:].sum(1), torch.full((feats.shape[0],), 2.0))
    T = int(len(wave) / SAMPLE_RATE * fps)
    E = open_rig.num_expression
    expr = np.zeros((T, E), np.float32)
    expr[:, open_rig.expression_index("jawOpen")] = np.random.default_rng(0).uniform(0, 0.5, T)
    jaw = np.zeros((T, 3), np.float32)
    layout = choose_layout(open_rig, expr)
    drv = train_predictor(wave, fps, layout.pack(expr, jaw), np.arange(T), layout,
                          PredictorConfig(steps=5, encoder="phonetic", batch=2), rig_checksum=open_rig.checksum)
    assert drv.encoder_spec == "phonetic"
    pred = drv.predict(wave, fps, T)
    drv.save(tmp_path / "driver.safetensors")
    again = load_predictor(tmp_path / "driver.safetensors", rig_checksum=open_rig.checksum)
    track = enc.visemes(wave).numpy()
    given = again.predict(wave, fps, T, visemes=track)
    assert np.allclose(given["jaw"], pred["jaw"], atol=1e-5)
    assert np.allclose(given["expression"], pred["expression"], atol=1e-5)
    other = again.predict(wave, fps, T, visemes=np.roll(track, 40, axis=0), close_in_silence=False)
    assert not np.allclose(other["expression"], pred["expression"], atol=1e-4)  # the visemes are used
