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
                          PredictorConfig(steps=5, encoder="phonetic", batch=2), rig_checksum=open_rig.checksum,
                          rig=open_rig)
    assert drv.encoder_spec == "phonetic" and drv.meta["viseme_prior"] is True
    pred = drv.predict(wave, fps, T)
    drv.save(tmp_path / "driver.safetensors")
    again = load_predictor(tmp_path / "driver.safetensors", rig_checksum=open_rig.checksum)
    track = enc.visemes(wave).numpy()
    given = again.predict(wave, fps, T, visemes=track)
    assert np.allclose(given["jaw"], pred["jaw"], atol=1e-5)
    assert np.allclose(given["expression"], pred["expression"], atol=1e-5)
    other = again.predict(wave, fps, T, visemes=np.roll(track, 40, axis=0), close_in_silence=False)
    assert not np.allclose(other["expression"], pred["expression"], atol=1e-4)  # the visemes are used


# ------------------------------------------------------------------------------ the rig's viseme prior
def test_open_head_viseme_prior_is_a_plausible_arkit_table(open_rig, sphere_rig):
    """Every viseme, only the rig's own units, ARKit's 0..1: rest in silence, lips closed for p/b/m with the
    jaw nearly shut, lower lip rolled for f/v, rounding for o/u/w; a rig without named units has none."""
    prior = open_rig.viseme_prior()
    assert prior is not None and set(prior) == set(VISEMES)
    named = {u for shape in prior.values() for u in shape}
    assert named <= set(open_rig.expression_names)
    assert all(0.0 <= x <= 1.0 for shape in prior.values() for x in shape.values())
    assert all(x == 0.0 for x in prior["sil"].values())
    assert prior["PP"]["mouthClose"] > 0 and prior["PP"]["mouthPressLeft"] == prior["PP"]["mouthPressRight"] > 0
    assert prior["PP"]["jawOpen"] < prior["aa"]["jawOpen"] and prior["PP"]["jawOpen"] <= 0.1
    assert prior["aa"]["jawOpen"] == max(s.get("jawOpen", 0.0) for s in prior.values())
    assert prior["FF"]["mouthRollLower"] > 0
    assert prior["O"]["mouthFunnel"] > 0 and prior["U"]["mouthPucker"] > 0
    assert all("jawOpen" in s for v, s in prior.items() if v != "sil")
    prior["PP"]["mouthClose"] = 5.0  # a copy: the rig's table stays as it is
    assert open_rig.viseme_prior()["PP"]["mouthClose"] < 1.0
    assert sphere_rig.viseme_prior() is None  # numbered units (FLAME): learned from data only


def _prior_layout():
    """A small ARKit-named layout: jawOpen, mouthClose, mouthFunnel predicted; mouthPucker still in training
    (not predicted); training frames that open by the unit plus a jaw rotation of 0.1 rad per unit."""
    from talksplat.driving.predictor import TargetLayout

    names = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker"]
    rng = np.random.default_rng(0)
    N = 400
    expr = np.zeros((N, 4), np.float32)
    expr[:, 0] = rng.uniform(0, 0.6, N)
    expr[:, 1] = rng.uniform(0, 0.4, N)
    expr[:, 2] = rng.uniform(0.1, 0.5, N)
    jaw = np.zeros((N, 3), np.float32)
    jaw[:, 0] = 0.1 * expr[:, 0]
    layout = TargetLayout([0, 1, 2], 4, np.zeros(4, np.float32), [])
    tr = layout.pack(expr, jaw)
    mean, std = tr.mean(0), np.maximum(tr.std(0), 0.01)
    rest = np.percentile(tr, 10, axis=0).astype(np.float32)
    return names, layout, tr, mean, std, rest


def test_viseme_prior_in_standardised_outputs():
    from talksplat.driving.train import VISEME_PRIOR_MAX_STD, viseme_prior_targets

    names, layout, tr, mean, std, rest = _prior_layout()
    prior = {"sil": {"jawOpen": 0.0}, "PP": {"jawOpen": 0.05, "mouthClose": 0.3},
             "O": {"jawOpen": 0.4, "mouthFunnel": 0.45}, "U": {"mouthPucker": 0.6, "mouthFunnel": 0.3}}
    angle = 0.33
    P = viseme_prior_targets(prior, names, layout, tr, mean, std, rest, 0, angle)
    assert P.shape == (len(VISEMES), layout.dim)
    raw = P * std + mean
    i = VISEME_INDEX
    assert np.allclose(raw[i["sil"]], rest, atol=1e-5)  # silence: the subject's rest
    assert np.allclose(P[i["aa"]], 0.0)  # a viseme the prior does not name: the subject's mean
    # named units take the prior; the opening is split as the subject splits it (unit + rotation / angle)
    assert raw[i["PP"], 1] == pytest.approx(0.3, abs=1e-5)
    assert raw[i["O"], 2] == pytest.approx(0.45, abs=1e-5)
    for v, o in (("PP", 0.05), ("O", 0.4)):
        unit, rot = raw[i[v], 0], raw[i[v], 3]
        assert unit + rot / angle == pytest.approx(o, abs=1e-4)
        assert rot == pytest.approx(0.1 * unit, abs=1e-4)
    # U: mouthPucker is not predicted (skipped); funnel set; no jawOpen named: the mean opening
    assert raw[i["U"], 2] == pytest.approx(0.3, abs=1e-5)
    assert np.allclose(P[i["U"]][[0, 1, 3, 4, 5]], 0.0, atol=1e-5)
    # a value far outside the subject's motion is held within VISEME_PRIOR_MAX_STD of its mean
    far = viseme_prior_targets({"O": {"mouthFunnel": 100.0}}, names, layout, tr, mean, std, rest, 0, angle)
    assert far[i["O"], 2] == pytest.approx(VISEME_PRIOR_MAX_STD)


def test_viseme_table_starts_at_the_prior_where_there_are_no_frames():
    """A viseme never heard keeps exactly the prior (without one: the subject's mean, 0); one heard in every
    frame gets nearly the subject's mean target over its frames."""
    import torch

    from talksplat.driving.features import make_encoder
    from talksplat.driving.predictor import AudioToRig
    from talksplat.driving.train import VISEME_PRIOR_FRAMES, init_viseme_table

    enc = make_encoder("phonetic")
    fps, T, D = 25.0, 250, 4
    wave = np.random.default_rng(1).normal(0, 0.05, int(T / fps * SAMPLE_RATE)).astype(np.float32)
    track = np.zeros((enc.num_frames(len(wave)), enc.num_visemes), np.float32)
    track[:, [VISEME_INDEX["aa"], len(VISEMES) + VISEME_INDEX["aa"]]] = 1.0  # "aa" all along
    Y = np.random.default_rng(2).normal(0.5, 1.0, (T, D)).astype(np.float32)
    ids = np.arange(T)
    prior = np.random.default_rng(3).uniform(-2, 2, (len(VISEMES), D)).astype(np.float32)

    def table(p):
        torch.manual_seed(0)
        model = AudioToRig(enc.dim, D, hidden=8, visemes=(enc.dim - enc.num_visemes, enc.dim))
        t = init_viseme_table(model, enc, wave, track, fps, Y, ids, p)
        assert np.allclose(model.viseme_head.weight.detach().numpy(), t.T)
        return t

    with_prior, without = table(prior), table(None)
    a, o = VISEME_INDEX["aa"], VISEME_INDEX["O"]
    assert np.allclose(with_prior[o], prior[o], atol=1e-6)
    assert np.allclose(without[o], 0.0)
    # aa: (sum of its frames + k * prior) / (frames + k)
    expect = (Y.sum(0) + VISEME_PRIOR_FRAMES * prior[a]) / (T + VISEME_PRIOR_FRAMES)
    assert np.allclose(with_prior[a], expect, atol=0.02)
    assert np.abs(with_prior[a] - Y.mean(0)).max() < 0.1 * np.abs(prior[a] - Y.mean(0)).max()
    assert np.allclose(without[a], Y.sum(0) / (T + VISEME_PRIOR_FRAMES), atol=0.02)


def test_viseme_prior_pulls_the_trained_head_and_flame_has_none(open_rig, sphere_rig, monkeypatch):
    """Training (recognition replaced by a fixed viseme track): the open head's prior is recorded and its
    pull keeps the viseme head nearer to it; a rig without a prior trains as before, recorded as none."""
    from talksplat.driving.arkit_csv import jaw_open_angle
    from talksplat.driving.config import PredictorConfig
    from talksplat.driving.features import PhoneticEncoder
    from talksplat.driving.predictor import choose_layout
    from talksplat.driving.train import train_predictor, viseme_prior_targets

    def fixed_track(self, wave):  # cycles through the visemes, 80 ms each
        import torch

        n = self.num_frames(len(wave))
        v = np.zeros((n, self.num_visemes), np.float32)
        k = (np.arange(n) // 8) % len(VISEMES)
        v[np.arange(n), k] = v[np.arange(n), len(VISEMES) + k] = 1.0
        return torch.from_numpy(v)

    monkeypatch.setattr(PhoneticEncoder, "visemes", fixed_track)
    fps, T = 25.0, 100
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.05, int(T / fps * SAMPLE_RATE)).astype(np.float32)
    E = open_rig.num_expression
    expr = np.zeros((T, E), np.float32)
    for unit in ("jawOpen", "mouthFunnel", "mouthClose"):
        expr[:, open_rig.expression_index(unit)] = rng.uniform(0, 0.5, T)
    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = 0.05 * expr[:, open_rig.expression_index("jawOpen")]
    layout = choose_layout(open_rig, expr)
    targets, ids = layout.pack(expr, jaw), np.arange(T)

    def train(weight, rig):
        cfg = PredictorConfig(steps=30, encoder="phonetic", batch=2, hidden=16, augment=False, lr=0.03,
                              lambda_viseme_prior=weight)
        return train_predictor(wave, fps, targets, ids, layout, cfg, rig=rig)

    free, pulled = train(0.0, open_rig), train(1e3, open_rig)
    assert free.meta["viseme_prior"] is True and pulled.meta["viseme_prior"] is True
    prior = viseme_prior_targets(open_rig.viseme_prior(), open_rig.expression_names, layout, targets[ids],
                                 free.mean, free.std, free.rest, open_rig.expression_group("jaw_open")[0],
                                 jaw_open_angle(open_rig))
    dist = {k: float(((d.model.viseme_head.weight.detach().numpy().T - prior) ** 2).mean())
            for k, d in (("free", free), ("pulled", pulled))}
    assert dist["pulled"] < 0.9 * dist["free"], dist
    flame = train(1e3, sphere_rig)  # numbered units: the head starts at the subject's data only
    assert flame.meta["viseme_prior"] is False
