"""Driving parts: audio input, features, encoders, motion, lip metrics, and that the predictor learns."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from talksplat.core.ffmpeg import ffmpeg_exe
from talksplat.driving.audio import (SAMPLE_RATE, AudioError, decode_audio, espeak_exe, load_audio,
                                     speech_level_db, synthesize_speech, write_wav)
from talksplat.driving.features import EncoderError, LogMelEncoder, make_encoder
from talksplat.driving.motion import add_blinks, blink_times, head_motion
from talksplat.driving.predictor import silence_gate


def _tone_speech(seconds: float = 2.0, sr: int = 44_100, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: a 120 Hz buzz with formant-ish harmonics, syllable-rate on/off."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 20))
    env = (np.sin(2 * np.pi * 3.0 * t) > 0).astype(float)
    return (0.3 * x * env / 3 + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    write_wav(path, _tone_speech(), 44_100)
    return path


@pytest.mark.parametrize("codec,ext", [("libmp3lame", "mp3"), ("aac", "m4a"), ("flac", "flac")])
def test_any_format_is_resampled_to_16k_mono(speech_wav, tmp_path, codec, ext):
    out = tmp_path / f"speech.{ext}"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(speech_wav), "-ac", "2", "-c:a", codec, str(out)],
                   check=True)
    wave = load_audio(out)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / SAMPLE_RATE - 2.0) < 0.06  # encoder padding at most a few frames
    assert abs(speech_level_db(wave) - (-23.0)) < 1.0


def test_loudness_normalisation_removes_gain(speech_wav, tmp_path):
    quiet = tmp_path / "quiet.wav"
    write_wav(quiet, decode_audio(speech_wav) * 0.05)
    a, b = load_audio(speech_wav), load_audio(quiet)
    assert abs(speech_level_db(a) - speech_level_db(b)) < 0.2
    assert np.abs(a).max() < 1.0


def test_video_audio_track_and_silence(shared_data, tmp_path):
    wave = load_audio(shared_data / "grid" / "pwij3p.mpg")
    assert abs(len(wave) / SAMPLE_RATE - 2.98) < 0.1
    silent = tmp_path / "silence.wav"
    write_wav(silent, np.zeros(SAMPLE_RATE, np.float32))
    s = load_audio(silent)  # silence is valid input
    assert len(s) == SAMPLE_RATE and np.abs(s).max() == 0.0
    assert silence_gate(s, 25.0, 25).min() == 1.0


def test_bad_audio_files_are_clear_errors(tmp_path):
    from talksplat.render.video import VideoWriter

    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.mp3"
    junk.write_text("this is not audio")
    with pytest.raises(AudioError, match="junk.mp3: cannot read audio"):
        load_audio(junk)
    mute = tmp_path / "mute.mp4"
    with VideoWriter(mute, 32, 32, fps=25) as w:
        for _ in range(5):
            w.write(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(AudioError, match="mute.mp4: cannot read audio \\(no audio track\\)"):
        load_audio(mute)
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="empty.wav"):
        load_audio(empty)


def test_logmel_features_ignore_gain_and_follow_time(speech_wav):
    enc = LogMelEncoder()
    wave = torch.from_numpy(decode_audio(speech_wav))
    f = enc.encode(wave)
    assert f.shape == (enc.num_frames(len(wave)), 81) and enc.rate == 100.0
    g = enc.encode(wave * 0.1)
    # the spectral channels are per-utterance normalised: a 20 dB gain change barely moves them
    assert (f[:, :80] - g[:, :80]).abs().mean() < 0.05
    # ... and the loudness channel moves by exactly the gain (in units of 20 dB) where there is sound
    loud = f[:, 80] > -1
    assert torch.allclose(f[loud, 80] - g[loud, 80], torch.tensor(1.0), atol=0.05)
    # syllable-rate on/off is visible in the loudness channel at 100 Hz
    on = f[:, 80] > -1.0
    assert 0.3 < on.float().mean() < 0.7
    # a formant warp moves spectral energy up
    w = enc.encode(wave, warp=1.15)
    centroid = lambda x: (x[:, :80].softmax(1) * torch.arange(80)).sum(1)[loud].mean()  # noqa: E731
    assert centroid(w) > centroid(f)


def test_hf_encoder_from_a_local_directory(tmp_path, speech_wav):
    transformers = pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=4)
    transformers.Wav2Vec2Model(cfg).save_pretrained(tmp_path / "tiny")
    enc = make_encoder(f"hf:{tmp_path / 'tiny'}")
    wave = torch.from_numpy(load_audio(speech_wav))
    f = enc.encode(wave)
    assert enc.rate == 50.0 and f.shape == (enc.num_frames(len(wave)), 33)
    assert torch.isfinite(f).all() and f[:, :32].std() > 0
    with pytest.raises(EncoderError, match="not a local Hugging Face model directory"):
        make_encoder(f"hf:{tmp_path / 'nothing'}")
    with pytest.raises(EncoderError, match="unknown audio encoder"):
        make_encoder("mfcc")


def test_head_motion_modes():
    rng = np.random.default_rng(0)
    T0 = 40
    tracked = {"global_rot": np.cumsum(rng.normal(0, 0.01, (T0, 3)), 0), "neck": rng.normal(0, 0.01, (T0, 3)),
               "translation": rng.normal(0, 0.003, (T0, 3)) + [0, 0, -0.6], "eyes": rng.normal(0, 0.05, (T0, 2, 3))}
    still = head_motion("still", tracked, 100)
    assert np.ptp(still["global_rot"], 0).max() == 0
    replay = head_motion("replay", tracked, 200)
    assert np.allclose(replay["global_rot"][:T0], tracked["global_rot"])
    # ping-pong loop: no frame-to-frame step larger than the clip's own largest step
    clip_step = np.abs(np.diff(tracked["global_rot"], axis=0)).max()
    assert np.abs(np.diff(replay["global_rot"], axis=0)).max() <= clip_step + 1e-9
    idle = head_motion("idle", tracked, 25 * 60, fps=25)
    step = np.abs(np.diff(idle["global_rot"], axis=0)).max()
    assert step < np.deg2rad(0.2)  # smooth at 25 fps
    dev = np.abs(idle["global_rot"] - np.median(tracked["global_rot"], 0)).max()
    assert np.deg2rad(0.2) < dev <= np.deg2rad(3.0) + 1e-6  # alive but bounded
    with pytest.raises(ValueError, match="--pose"):
        head_motion("dance", tracked, 10)


def test_blinks_at_a_natural_rate():
    starts = blink_times(600.0)
    rate = len(starts) / 10.0
    assert 10 <= rate <= 24  # blinks per minute (people: ~15-20 while talking)
    assert np.diff(starts).min() >= 1.5
    expr = np.zeros((25 * 60, 4), np.float32)
    out = add_blinks(expr, [1, 2], fps=25, amplitude=0.9)
    assert out[:, [0, 3]].max() == 0
    closed = out[:, 1] > 0.8
    assert closed.any() and closed.mean() < 0.1


def _envelope_targets(wave: np.ndarray, fps: float, T: int) -> np.ndarray:
    """The known function: mouth opening from the speech envelope (dB), in [0, 1] per frame."""
    from talksplat.driving.audio import frame_rms

    rms = frame_rms(wave, hop_s=1 / fps, win_s=2 / fps)[:T]
    db = 20 * np.log10(np.maximum(rms, 1e-6))
    x = np.clip((db + 50.0) / 30.0, 0, 1)
    return np.convolve(np.pad(x, 1, mode="edge"), np.ones(3) / 3, "valid")


def _speech_corpus(shared: Path | None, tmp: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """(training utterances, held-out utterance): espeak-ng sentences in several voices, or GRID audio;
    held out: the CMU ARCTIC clip (a real voice the model never heard)."""
    if shared is None or not (shared / "audio" / "cmu_arctic_awb_a0007.wav").is_file():
        pytest.skip("the CMU ARCTIC clip in ../shared/data/audio is needed as held-out speech")
    held = load_audio(shared / "audio" / "cmu_arctic_awb_a0007.wav")
    train = []
    if espeak_exe():
        sentences = ["Place the blue book on the table by the window.", "Seven green frogs jumped over a log.",
                     "Please call me back when you get home tonight.", "The quick brown fox jumps over the lazy dog.",
                     "We should meet at noon near the old station.", "Bright lights shone across the quiet harbour.",
                     "Bin blue at F two now.", "Set red with G nine soon."]
        for i, s in enumerate(sentences):
            for voice, pitch in (("en-us", 40), ("en-gb", 70), ("en-us+f2", 55)):
                train.append(load_audio(synthesize_speech(s, tmp / f"s{i}_{pitch}.wav", voice=voice, pitch=pitch)))
    else:
        train = [load_audio(p) for p in sorted((shared / "grid").glob("*.mpg"))]
    return train, held


def test_predictor_learns_mouth_opening_from_speech(shared_data, tmp_path, open_rig):
    """Synthetic subject whose mouth opening is a known function of the speech envelope: the trained
    predictor's mouth opening on unseen speech (another voice) correlates with the truth at >= 0.9."""
    from talksplat.driving.evaluate import LipGeometry
    from talksplat.driving.predictor import choose_layout
    from talksplat.driving.train import train_predictor
    from talksplat.driving.config import PredictorConfig

    fps = 25.0
    train, held = _speech_corpus(shared_data, tmp_path)
    gap = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    wave = np.concatenate([np.concatenate([u, gap]) for u in train])
    T = int(len(wave) / SAMPLE_RATE * fps)
    rig = open_rig
    E = rig.num_expression
    jaw_open = rig.expression_index("jawOpen")

    def params(w, n):
        o = _envelope_targets(w, fps, n)
        expr = np.zeros((n, E), np.float32)
        expr[:, jaw_open] = 0.6 * o
        jaw = np.zeros((n, 3), np.float32)
        jaw[:, 0] = 0.2 * o
        return expr, jaw

    expr, jaw = params(wave, T)
    layout = choose_layout(rig, expr)
    geo = LipGeometry(rig, np.zeros(rig.num_shape, np.float32))
    cfg = PredictorConfig(steps=600, seed=0)
    drv = train_predictor(wave, fps, layout.pack(expr, jaw), np.arange(T), layout, cfg, geo=geo,
                          rig_checksum=rig.checksum)
    Th = int(len(held) / SAMPLE_RATE * fps)
    true_expr, true_jaw = params(held, Th)
    pred = drv.predict(held, fps, Th)
    o_true = geo.opening(true_expr, true_jaw)
    o_pred = geo.opening(pred["expression"], pred["jaw"])
    r = float(np.corrcoef(o_true, o_pred)[0, 1])
    print(f"held-out mouth-opening correlation {r:.3f} ({len(train)} training utterances, {T / fps:.1f} s)")
    assert r >= 0.9
    # other languages (espeak-ng voices the model never heard): phonetic content, not English words
    if espeak_exe():
        for lang, text in (("de", "Guten Morgen, wie geht es Ihnen heute Abend?"),
                           ("fr", "Je voudrais un café et un croissant, s'il vous plaît."),
                           ("es", "Mañana vamos a la playa con mis amigos.")):
            w = load_audio(synthesize_speech(text, tmp_path / f"{lang}.wav", voice=lang))
            n = int(len(w) / SAMPLE_RATE * fps)
            te, tj = params(w, n)
            pr = drv.predict(w, fps, n)
            r_lang = float(np.corrcoef(geo.opening(te, tj), geo.opening(pr["expression"], pr["jaw"]))[0, 1])
            print(f"{lang}: mouth-opening correlation {r_lang:.3f}")
            assert r_lang >= 0.85, lang
    # the saved driver predicts the same
    drv.save(tmp_path / "driver.safetensors")
    from talksplat.driving.predictor import load_predictor

    again = load_predictor(tmp_path / "driver.safetensors", rig_checksum=rig.checksum).predict(held, fps, Th)
    assert np.allclose(again["jaw"], pred["jaw"], atol=1e-5)
    # silence closes the mouth
    quiet = drv.predict(np.zeros(SAMPLE_RATE * 2, np.float32), fps)
    assert geo.opening(quiet["expression"], quiet["jaw"]).max() <= np.percentile(o_true, 20) + 1e-4


def test_lip_metrics(open_rig):
    from talksplat.driving.evaluate import LipGeometry, lip_sync_metrics

    rig = open_rig
    geo = LipGeometry(rig, np.zeros(rig.num_shape, np.float32))
    T = 20
    expr = np.zeros((T, rig.num_expression), np.float32)
    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = np.linspace(0, 0.3, T)
    o = geo.opening(expr, jaw)
    assert np.all(np.diff(o) > 0) and o[-1] - o[0] > 0.005  # opening the jaw opens the mouth (metres)
    tracked = {"expression": expr, "jaw": jaw}
    same = lip_sync_metrics(geo, tracked, tracked, {"expression": expr, "jaw": np.zeros_like(jaw)})
    assert same["lve_mm2"] == 0 and same["mouth_open_corr"] > 0.999 and same["lve_mean_baseline_mm2"] > 10


def test_predictor_on_a_flame_layout_rig(sphere_rig, tmp_path):
    """A FLAME-like rig (numbered expression components, no eyelid units): the predictor trains, saves,
    reloads and predicts all moving components and the jaw; there are no blink coefficients to drive."""
    from talksplat.driving.evaluate import LipGeometry
    from talksplat.driving.predictor import choose_layout, load_predictor
    from talksplat.driving.train import train_predictor
    from talksplat.driving.config import PredictorConfig

    rig = sphere_rig
    fps = 25.0
    wave = np.concatenate([_tone_speech(3.0, 16_000, seed=s) for s in range(3)])
    T = int(len(wave) / SAMPLE_RATE * fps)
    o = _envelope_targets(wave, fps, T)
    expr = np.zeros((T, rig.num_expression), np.float32)
    expr[:, 0] = o
    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = 0.2 * o
    layout = choose_layout(rig, expr)
    assert layout.expr_ids == [0] and layout.blink_ids == []
    geo = LipGeometry(rig, np.zeros(rig.num_shape, np.float32))
    drv = train_predictor(wave, fps, layout.pack(expr, jaw), np.arange(T), layout,
                          PredictorConfig(steps=150), geo=geo, rig_checksum=rig.checksum)
    drv.save(tmp_path / "driver.safetensors")
    again = load_predictor(tmp_path / "driver.safetensors", rig_checksum=rig.checksum)
    pred = again.predict(wave, fps, T)
    assert pred["expression"].shape == (T, rig.num_expression) and pred["jaw"].shape == (T, 3)
    assert np.corrcoef(pred["jaw"][:, 0], jaw[:, 0])[0, 1] > 0.8  # seen audio: fits it
    with pytest.raises(ValueError, match="made for another rig"):
        load_predictor(tmp_path / "driver.safetensors", rig_checksum="0" * 64)


def test_amplitude_matching_gives_back_the_subjects_own_mouth_motion(tmp_path):
    """A prediction whose dominant mouth motion has half the subject's training amplitude is scaled about
    the subject's mean pose to the subject's amplitude; a livelier one is left alone; the gain is capped; too few
    speech frames change nothing; the axis survives the driver file."""
    from talksplat.driving.predictor import (MAX_AMPLITUDE_GAIN, AudioPredictor, AudioToRig, TargetLayout,
                                             load_predictor)
    from talksplat.driving.train import mouth_motion_axis

    rng = np.random.default_rng(0)
    D = 4
    train = rng.normal(0, 1, (200, 1)) * np.array([[1.0, 0.8, 0.1, 0.0]]) + rng.normal(0, 0.05, (200, D))
    axis, amp = mouth_motion_axis(train)
    assert abs(abs(axis[0]) - 1 / np.sqrt(1.64)) < 0.05 and amp > 1.0  # the correlated pair is the mode
    mean, std = np.zeros(D, np.float32), np.ones(D, np.float32)
    rest = np.full(D, -1.0, np.float32)
    drv = AudioPredictor(AudioToRig(81, D, hidden=8), TargetLayout([0], 1, np.zeros(1, np.float32), []),
                         mean, std, rest, "logmel", 25.0, "x")
    drv.amp_axis, drv.amp_std = axis, amp
    speech = np.ones(100, bool)
    t = np.linspace(0, 6 * np.pi, 100)
    flat = (0.5 * amp * np.sqrt(2) * np.sin(t)[:, None] * axis[None]).astype(np.float32)
    out = drv.match_amplitude(flat, speech)
    along = (out - out.mean(0)) @ axis
    assert abs(along.std() / amp - 1) < 0.02  # the subject's own amplitude
    assert np.allclose(out, 2.0 * flat, rtol=0.02, atol=1e-6)  # one gain (2), about the mean pose
    lively = (2 * amp * np.sqrt(2) * np.sin(t)[:, None] * axis[None]).astype(np.float32)
    assert np.allclose(drv.match_amplitude(lively, speech), lively)  # never damped
    tiny = (0.01 * np.sin(t)[:, None] * axis[None]).astype(np.float32)
    assert np.allclose(drv.match_amplitude(tiny, speech), MAX_AMPLITUDE_GAIN * tiny, atol=1e-6)
    short = speech.copy()
    short[9:] = False
    assert np.array_equal(drv.match_amplitude(flat, short), flat)
    drv.save(tmp_path / "driver.safetensors")
    again = load_predictor(tmp_path / "driver.safetensors")
    assert np.allclose(again.amp_axis, axis) and again.amp_std == pytest.approx(amp)


@pytest.mark.parametrize("encoder", ["logmel", "phonetic"])
def test_predictor_looks_ahead_at_most_200_ms(encoder):
    """Streaming-ready: replacing the audio after t + 0.2 s changes no prediction at or before t (features,
    network, viseme head); the centred network of older predictor files does look further (the check can
    fail)."""
    from talksplat.driving.features import make_encoder
    from talksplat.driving.predictor import AudioPredictor, AudioToRig, TargetLayout

    torch.manual_seed(0)
    fps, T = 25.0, 100
    wave = _tone_speech(4.0, SAMPLE_RATE, seed=1)
    other = wave.copy()
    t_cut = 2.0
    other[int((t_cut + 0.2) * SAMPLE_RATE):] = _tone_speech(4.0, SAMPLE_RATE, seed=2)[int((t_cut + 0.2) * SAMPLE_RATE):] * 0.5
    layout = TargetLayout([0, 1], 2, np.zeros(2, np.float32), [])

    def outputs(streaming: bool, w: np.ndarray) -> np.ndarray:
        torch.manual_seed(0)
        enc = make_encoder(encoder, norm="trailing" if streaming else "centred")
        vis = (enc.dim - enc.num_visemes, enc.dim) if encoder == "phonetic" else None
        model = AudioToRig(enc.dim, layout.dim, hidden=16, visemes=vis, streaming=streaming)
        if vis is not None:
            torch.nn.init.normal_(model.viseme_head.weight)
        drv = AudioPredictor(model, layout, np.zeros(layout.dim, np.float32), np.ones(layout.dim, np.float32),
                             np.zeros(layout.dim, np.float32), encoder, fps, "x")
        track = None
        if encoder == "phonetic":  # a known viseme track (as from text) that changes where the audio does
            from talksplat.driving.phonetic import silent_visemes

            track = silent_visemes(enc.num_frames(len(w)), enc.num_visemes)
            n = int((t_cut + 0.2) * enc.rate)
            track[n:, 0], track[n:, 10] = (0.0, 1.0) if w is other else (1.0, 0.0)
        return drv.predict_normalised(w, fps, T, visemes=track)

    ahead = AudioToRig(81, 5, streaming=True).lookahead_frames() / 100.0 + 0.0125  # seconds
    assert ahead <= 0.2
    keep = int(t_cut * fps) + 1  # frames at or before t_cut
    a, b = outputs(True, wave), outputs(True, other)
    assert np.allclose(a[:keep], b[:keep], atol=1e-5), np.abs(a[:keep] - b[:keep]).max()
    assert not np.allclose(a[keep + 10:], b[keep + 10:], atol=1e-3)  # it does hear the change later
    a, b = outputs(False, wave), outputs(False, other)
    assert not np.allclose(a[:keep], b[:keep], atol=1e-5)


def test_extra_data_joins_the_predictor_training(small_inputs, tmp_path):
    """--driver.extra-data: each extra dataset's audio and tracked parameters are appended frame-aligned after
    a gap of silence, its time steps join training, the subject's own stay first; another rig's or a silent
    dataset is a one-line error naming it; `fit --driver-only` records what it used."""
    import json
    import shutil

    from talksplat.cli import main
    from talksplat.data_prep.dataset import load_dataset
    from talksplat.driving.predictor import choose_layout
    from talksplat.driving.train import EXTRA_GAP_S, PredictorTrainingError, join_extra_data
    from talksplat.rigs import load_rig

    rig = load_rig("open")
    ds = load_dataset(small_inputs.dataset)
    fps, T = float(ds.meta["fps"]), ds.num_timesteps
    wave = load_audio(ds.audio_path)
    p = ds.params
    layout = choose_layout(rig, p["expression"])
    targets = layout.pack(p["expression"], p["jaw"])
    own = np.arange(T - 2)
    w, y, ids = join_extra_data(wave, fps, targets, own, layout, (), rig)
    assert w is wave and y is targets and ids is own
    w, y, ids = join_extra_data(wave, fps, targets, own, layout, (small_inputs.dataset,) * 2, rig)
    gap = int(round(EXTRA_GAP_S * fps))
    assert len(y) == 3 * T + 2 * gap and np.array_equal(ids[:len(own)], own)
    second = 2 * (T + gap)
    assert np.array_equal(ids[len(own):], np.concatenate([np.arange(T) + T + gap, np.arange(T) + second]))
    # the same recording as extra data: its motion joins unchanged (moved by one constant: the subject's
    # quiet pose is over its training steps, the extra's over all of them)
    shift = y[second:second + T] - targets
    assert np.allclose(shift, shift[:1], atol=1e-6) and np.allclose(y[T:T + gap], targets.mean(0))
    # another speaker whose resting face differs (every parameter offset): only the motion joins
    from talksplat.rigs.sequence import RigSequence

    moved = tmp_path / "moved"
    shutil.copytree(small_inputs.dataset, moved)
    seq = RigSequence.load(moved / "rig_params.npz")
    seq.with_frames(expression=seq.frames["expression"] + 0.2, jaw=seq.frames["jaw"] + 0.05).save(moved / "rig_params.npz")
    _, y2, _ = join_extra_data(wave, fps, targets, np.arange(T), layout, (moved,), rig)
    assert np.allclose(y2[T + gap:], targets, atol=1e-5)
    s0 = int(round(second / fps * SAMPLE_RATE))
    n = int(round(T / fps * SAMPLE_RATE))
    assert np.array_equal(w[s0:s0 + n], wave[:n]) and not w[int(round(T / fps * SAMPLE_RATE)) + 10:
                                                             int(round((T + gap) / fps * SAMPLE_RATE))].any()
    other = tmp_path / "other"
    shutil.copytree(small_inputs.dataset, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "rig": {**meta["rig"], "checksum": "0" * 64}}))
    with pytest.raises(PredictorTrainingError, match=f"{other}: tracked with another rig"):
        join_extra_data(wave, fps, targets, own, layout, (other,), rig)
    (other / "meta.json").write_text(json.dumps({**meta, "audio": None}))
    with pytest.raises(PredictorTrainingError, match=f"{other}: the dataset has no audio.wav"):
        join_extra_data(wave, fps, targets, own, layout, (other,), rig)
    fit = tmp_path / "fit"
    shutil.copytree(small_inputs.fit, fit)
    assert main(["fit", str(small_inputs.dataset), "--out", str(fit), "--driver-only", "--quiet",
                 "--driver.steps", "2", "--driver.extra-data", str(small_inputs.dataset)]) == 0
    m = json.loads((fit / "metrics.json").read_text())["driver"]
    assert m["extra_data"] == [str(small_inputs.dataset)] and m["train_frames"] == m["own_frames"] + T
    assert main(["fit", str(small_inputs.dataset), "--out", str(fit), "--driver-only", "--quiet",
                 "--driver.steps", "2", "--driver.extra-data", str(other)]) != 0


def test_predictor_files_from_before_the_lookahead_keep_their_centred_network(tmp_path):
    """A driver file without the ``streaming`` key (written before the bounded lookahead) loads as the centred
    network with the centred feature normalisation, and predicts as it did; a new file round-trips as
    streaming."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from talksplat.driving.predictor import AudioPredictor, AudioToRig, TargetLayout, load_predictor

    layout = TargetLayout([0, 1], 2, np.zeros(2, np.float32), [])
    wave = _tone_speech(2.0, SAMPLE_RATE)
    for streaming in (True, False):
        torch.manual_seed(0)
        drv = AudioPredictor(AudioToRig(81, layout.dim, hidden=8, streaming=streaming), layout,
                             np.zeros(layout.dim, np.float32), np.ones(layout.dim, np.float32),
                             np.zeros(layout.dim, np.float32), "logmel", 25.0, "x")
        path = drv.save(tmp_path / f"driver_{streaming}.safetensors")
        if not streaming:  # as an old file: no "streaming" key
            with safe_open(str(path), "pt") as f:
                header = json.loads(f.metadata()["talksplat"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            del header["streaming"]
            save_file(tensors, str(path), metadata={"talksplat": json.dumps(header)})
        again = load_predictor(path)
        assert again.model.streaming is streaming and again.encoder.norm == ("trailing" if streaming else "centred")
        assert np.allclose(again.predict_normalised(wave, 25.0, 50), drv.predict_normalised(wave, 25.0, 50), atol=1e-5)
