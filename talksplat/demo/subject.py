"""A synthetic talking subject for `talksplat demo`, generated with no input and no network.

    info = make_demo_subject("demo")   # demo/subject.mp4, demo/subject_params.npz, demo/drive_speech.wav

The subject is the open-head rig (``load_rig("open")``) worn by a Gaussian avatar with its own skin
texture (:func:`demo_avatar`), filmed by a frontal webcam-like camera (:func:`subject_camera`) while it
says a few sentences.  Its speech comes from espeak-ng when installed, else from a procedural
vowel-and-pause signal (:func:`demo_speech`); its face follows that speech (:func:`subject_motion`:
jaw and lips from the loudness and spectrum, head sway and nods, blinks, gaze).  The video then goes
through the real pipeline (`talksplat prep` -> `fit` -> `drive`) like any recording; the ground-truth
rig parameters are written beside it for comparison.

Units: audio is 16 kHz mono float32 in [-1, 1]; rotations are axis-angle radians; lengths metres;
image coordinates pixels (OpenCV camera: x right, y down, z forward).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from talksplat.driving.audio import SAMPLE_RATE, AudioError, espeak_exe, frame_rms, load_audio, write_wav

#: What the subject says in the training clip (about 9 s with espeak-ng at 155 words per minute):
#: open and closed vowels, bilabials (p, m: the lips close), rounded (oh, w, oo) and spread (ee) shapes.
TRAIN_TEXT = ("Hello there! I am a synthetic speaker. "
              "Watch my lips as I talk: papa, mama, oh wow, we will see you soon.")
#: A different sentence (about 4 s) for driving the fitted avatar.
DRIVE_TEXT = "Thank you for watching. Now I can say anything you type."
#: espeak-ng voice, words per minute, pitch (0-99) for each clip.
VOICES = {"train": ("en-us", 155, 50), "drive": ("en-us", 160, 58)}
#: Procedural fallback: seconds, seed and fundamental frequency (Hz) for each clip.
PROCEDURAL = {"train": (9.0, 0, 118.0), "drive": (4.0, 7, 135.0)}
#: Silence before and after the speech, seconds (the mouth starts and ends closed).
LEAD_S, TAIL_S = 0.4, 0.4

#: Approximate formants (Hz) of a few vowels (adult male), for the procedural voice.
_VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480),
           "o": (570, 840, 2410), "ae": (660, 1720, 2410)}

#: Camera: focal length in units of the frame side (1.0: a 53° field of view, like a laptop webcam, and
#: what `talksplat prep` assumes before fitting the focal length), and the fraction of the frame height
#: the head (chin to crown) fills.
FOCAL = 1.0
HEAD_FRACTION = 0.5
#: Where the head's centre sits, as a fraction of the frame height from the top (room for a neck below).
HEAD_CENTRE_Y = 0.45


# ---------------------------------------------------------------------------------------------- speech
def procedural_speech(seconds: float, seed: int = 0, f0: float = 118.0,
                      sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A speech-like voice without a TTS engine: [N] float32, N = round(seconds * sample_rate).

    Phrases of 3-8 syllables separated by pauses of 0.3-0.7 s; each syllable a voiced vowel
    (harmonics of a gliding ``f0`` shaped by the vowel's formants), some with a fricative onset
    (high-passed noise), loudness varying with stress; a faint noise floor throughout.  Deterministic
    for a seed."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    out = np.zeros(n, np.float64)
    names = list(_VOWELS)
    t = LEAD_S
    while t < seconds - TAIL_S - 0.15:
        for _ in range(int(rng.integers(3, 9))):
            dur = float(rng.uniform(0.13, 0.30))
            if t + dur > seconds - TAIL_S:
                break
            formants = np.array(_VOWELS[names[int(rng.integers(len(names)))]], np.float64)
            stress = 1.0 if rng.random() < 0.3 else float(rng.uniform(0.4, 0.75))
            i0, m = int(t * sample_rate), int(dur * sample_rate)
            tt = np.arange(m) / sample_rate
            glide = 1 + 0.10 * stress * np.sin(np.pi * tt / dur) - 0.06 * tt / dur  # intonation
            f = f0 * glide * (1 + 0.03 * rng.standard_normal())
            phase = 2 * np.pi * np.cumsum(f) / sample_rate + rng.uniform(0, 2 * np.pi)
            K = int(3800 // (f0 * 1.15))
            k = np.arange(1, K + 1)[:, None]  # harmonic numbers
            fk = k * f0  # [K, 1] nominal harmonic frequencies
            gain = sum(g / (1 + ((fk - F) / bw) ** 2) for F, g, bw in zip(formants, (1.0, 0.5, 0.25), (90, 110, 160)))
            voiced = (gain / k ** 0.5 * np.sin(k * phase[None])).sum(0)
            env = np.sin(np.pi * np.clip(tt / dur, 0, 1)) ** 0.7 * stress
            out[i0:i0 + m] += voiced / max(np.abs(voiced).max(), 1e-9) * env
            if rng.random() < 0.4:  # a fricative onset just before the vowel
                fm = int(0.06 * sample_rate)
                s0 = max(0, i0 - fm // 2)
                noise = np.diff(rng.standard_normal(fm + 1))
                out[s0:s0 + fm] += 0.12 * noise * np.hanning(fm)[:len(out[s0:s0 + fm])]
            t += dur + float(rng.uniform(0.0, 0.05))
        t += float(rng.uniform(0.3, 0.7))
    out = 0.5 * out / max(np.abs(out).max(), 1e-9)
    out += 0.001 * rng.standard_normal(n)
    return out.astype(np.float32)


def demo_speech(kind: Literal["train", "drive"], out_wav: str | os.PathLike,
                use_tts: bool = True) -> tuple[np.ndarray, str]:
    """The subject's speech, written to ``out_wav`` (16-bit WAV, 16 kHz mono).

    ``train``: about 9 s (:data:`TRAIN_TEXT`); ``drive``: a different sentence of about 4 s
    (:data:`DRIVE_TEXT`, a slightly different voice).  With espeak-ng installed (and ``use_tts``) the
    text is spoken, else :func:`procedural_speech` stands in.  Both start and end with
    :data:`LEAD_S` / :data:`TAIL_S` s of near silence and are loudness-normalised like any input.

    Returns (wave [N] float32 in [-1, 1] at 16 kHz, source: ``"espeak-ng"`` or ``"procedural"``).
    """
    if kind not in VOICES:
        raise ValueError(f"demo_speech: kind must be 'train' or 'drive', got {kind!r}")
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    wave, source = None, "procedural"
    if use_tts and espeak_exe() is not None:
        from talksplat.driving.audio import synthesize_speech

        voice, rate, pitch = VOICES[kind]
        with tempfile.TemporaryDirectory(prefix="talksplat-demo-") as d:
            try:
                path = synthesize_speech(TRAIN_TEXT if kind == "train" else DRIVE_TEXT, Path(d) / "tts.wav",
                                         voice=voice, rate_wpm=rate, pitch=pitch)
                wave = load_audio(path)
                source = "espeak-ng"
            except AudioError:
                wave = None  # a broken espeak install: fall back to the procedural voice
    if wave is None:
        seconds, seed, f0 = PROCEDURAL[kind]
        wave = _normalise(procedural_speech(seconds, seed, f0))
    else:
        # Trim espeak's own leading/trailing silence, then pad with ours (plus a faint noise floor).
        rms = frame_rms(wave)
        active = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-7)) > 20 * np.log10(rms.max() + 1e-9) - 40)
        s0, s1 = active[0] * SAMPLE_RATE // 100, min(len(wave), (active[-1] + 1) * SAMPLE_RATE // 100)
        rng = np.random.default_rng(1 if kind == "train" else 2)
        lead, tail = (np.zeros(int(s * SAMPLE_RATE), np.float32) for s in (LEAD_S, TAIL_S))
        wave = np.concatenate([lead, wave[s0:s1], tail])
        wave = (wave + 3e-4 * rng.standard_normal(len(wave))).astype(np.float32)
    write_wav(out_wav, wave)
    return wave, source


def _normalise(wave: np.ndarray) -> np.ndarray:
    """Loudness-normalise a generated [N] float wave like :func:`load_audio` does a file."""
    from talksplat.driving.audio import normalize_loudness

    return normalize_loudness(np.asarray(wave, np.float32))


# ---------------------------------------------------------------------------------------------- motion
def _frame_spectra(wave: np.ndarray, num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE,
                   win: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per video frame (centred at i / fps): magnitude spectrum [T, win // 2 + 1] and bin frequencies (Hz)."""
    centres = np.round(np.arange(num_frames) / fps * sample_rate).astype(np.int64)
    padded = np.pad(np.asarray(wave, np.float64), (win // 2, win // 2 + 1))
    idx = centres[:, None] + np.arange(win)[None]
    segs = padded[np.clip(idx, 0, len(padded) - 1)] * np.hanning(win)[None]
    return np.abs(np.fft.rfft(segs, axis=1)), np.fft.rfftfreq(win, 1.0 / sample_rate)


def speech_envelope(wave: np.ndarray, num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[T] speech loudness per video frame in [0, 1]: frame RMS in dB mapped from 30 dB below the
    loud speech (95th percentile, 0) up to it (1), smoothed over about 25 ms, sampled at i / fps."""
    from scipy.ndimage import gaussian_filter1d

    rms = frame_rms(wave, sample_rate, hop_s=0.01, win_s=0.03)  # 100 Hz
    db = 20 * np.log10(np.maximum(rms, 1e-7))
    ref = float(np.percentile(db, 95))
    level = np.clip((db - (ref - 30.0)) / 30.0, 0.0, 1.0)
    level = gaussian_filter1d(level, 2.5, mode="nearest")
    t = np.arange(num_frames) / fps
    return np.interp(t * 100.0, np.arange(len(level)), level).astype(np.float32)


def _slow_noise(T: int, fps: float, rng: np.random.Generator, periods=(1.5, 6.0), n: int = 3) -> np.ndarray:
    """[T] a smooth random signal in about [-1, 1]: a sum of ``n`` sinusoids with random periods and phases."""
    t = np.arange(T) / fps
    x = sum(np.sin(2 * np.pi * t / rng.uniform(*periods) + rng.uniform(0, 2 * np.pi)) for _ in range(n))
    return x / n


def _bump(T: int, fps: float, centre_s: float, width_s: float) -> np.ndarray:
    """[T] a raised-cosine bump of peak 1 and total width ``width_s`` centred at ``centre_s``."""
    d = (np.arange(T) / fps - centre_s) / width_s
    return np.where(np.abs(d) < 0.5, 0.5 + 0.5 * np.cos(2 * np.pi * d), 0.0)


def stressed_syllables(envelope: np.ndarray, fps: float, min_gap_s: float = 0.6,
                       threshold: float = 0.6) -> np.ndarray:
    """Frame indices of stressed syllables: envelope peaks above ``threshold`` that rise clearly from the
    preceding valley, at least ``min_gap_s`` apart (the loudest kept first)."""
    e = envelope
    peaks = [i for i in range(1, len(e) - 1) if e[i] >= e[i - 1] and e[i] > e[i + 1] and e[i] > threshold]
    rise = [e[i] - e[max(0, i - int(0.2 * fps)):i + 1].min() for i in peaks]
    cand = [p for p, r in zip(peaks, rise) if r > 0.2]
    keep: list[int] = []
    for p in sorted(cand, key=lambda i: -e[i]):
        if all(abs(p - q) >= min_gap_s * fps for q in keep):
            keep.append(p)
    return np.array(sorted(keep), np.int64)


def subject_motion(wave: np.ndarray, fps: float, rig, seed: int = 0, sample_rate: int = SAMPLE_RATE):
    """Rig parameters of the subject saying ``wave``: :class:`talksplat.rigs.base.RigParams` [T],
    T = round(duration * fps), frame i at time i / fps.

    * Jaw: ``jawOpen`` = 0.5 x the speech loudness (:func:`speech_envelope`, 0 in pauses) with a jaw
      rotation of 0.1 x jawOpen radians about +x (the open head opens the mouth with both; tracking
      writes both, mostly the unit).  ``mouthLowerDown`` follows the loudness too.
    * Lips: spread (``mouthSmile``, ``mouthStretch``) when the spectrum is bright (``ee``, ``s``),
      rounded (``mouthFunnel``, ``mouthPucker``) when it is dark (``oo``, ``oh``), both only while
      talking; a slowly varying friendly smile underneath; lips pressed briefly as a pause starts.
    * Head: ``global_rot`` a slow sway (yaw about 4°, pitch 2.5°, roll 1.5°, more while talking) plus a
      small nod (2.5° chin down, ``neck`` about +x) and a brow raise on stressed syllables;
      ``translation`` a few millimetres of drift.
    * Eyes: blinks at a natural rate (:func:`talksplat.driving.motion.add_blinks`), gaze held on the
      camera with small saccades (``eyes`` [T, 2, 3], up to about 3°).
    """
    from scipy.ndimage import gaussian_filter1d

    from talksplat.driving.motion import add_blinks

    rng = np.random.default_rng(seed)
    T = max(1, int(round(len(wave) / sample_rate * fps)))
    ei = rig.expression_index
    env = speech_envelope(wave, T, fps, sample_rate)  # [T] 0..1
    talking = gaussian_filter1d((env > 0.15).astype(np.float64), 0.12 * fps, mode="nearest")  # [T] ~0..1

    # Spectral brightness of the voice: log centroid over 150-5000 Hz, standardised over the talking frames.
    spec, freqs = _frame_spectra(wave, T, fps, sample_rate)
    band = (freqs > 150) & (freqs < 5000)
    power = spec[:, band] ** 2
    centroid = (power * freqs[band]).sum(1) / np.maximum(power.sum(1), 1e-12)
    logc = np.log(np.maximum(centroid, 1.0))
    act = env > 0.3
    if act.sum() >= 3:
        z = (logc - np.median(logc[act])) / (logc[act].std() + 1e-6)
    else:
        z = np.zeros(T)
    z = gaussian_filter1d(np.clip(z, -2.5, 2.5), 1.0, mode="nearest")
    bright = np.clip(z / 2, 0, 1) * talking
    dark = np.clip(-z / 2, 0, 1) * talking

    expr = np.zeros((T, rig.num_expression), np.float32)
    jaw_open = 0.5 * env ** 0.9
    expr[:, ei("jawOpen")] = jaw_open
    for side in ("Left", "Right"):
        expr[:, ei(f"mouthLowerDown{side}")] = 0.25 * env
        smile = 0.12 + 0.06 * _slow_noise(T, fps, rng, (3.0, 9.0))
        expr[:, ei(f"mouthSmile{side}")] = np.clip(smile + 0.30 * bright, 0, 1)
        expr[:, ei(f"mouthStretch{side}")] = 0.20 * bright
    expr[:, ei("mouthFunnel")] = 0.45 * dark
    expr[:, ei("mouthPucker")] = 0.35 * dark
    # Lips press together briefly where speech stops (the end of a phrase).
    ending = np.clip(-np.gradient(talking) * fps * 0.25, 0, 1)
    for side in ("Left", "Right"):
        expr[:, ei(f"mouthPress{side}")] = 0.3 * gaussian_filter1d(ending, 0.05 * fps)

    # Head: slow sway, stronger while talking, plus nods and brow raises on stressed syllables.
    gain = 0.6 + 0.4 * talking
    rot = np.zeros((T, 3), np.float32)
    for axis, deg in ((0, 2.5), (1, 4.0), (2, 1.5)):
        rot[:, axis] = np.deg2rad(deg) * _slow_noise(T, fps, rng, (2.5, 8.0)) * gain
    neck = np.zeros((T, 3), np.float32)
    brows = np.zeros(T)
    for i in stressed_syllables(env, fps):
        c = i / fps
        neck[:, 0] += np.deg2rad(2.5) * _bump(T, fps, c + 0.05, 0.45)  # +x: chin down
        brows += _bump(T, fps, c, 0.5)
    brows = np.clip(brows, 0, 1)
    expr[:, ei("browInnerUp")] = 0.35 * brows
    for side in ("Left", "Right"):
        expr[:, ei(f"browOuterUp{side}")] = 0.25 * brows
    trans = np.zeros((T, 3), np.float32)
    for axis, mm in ((0, 4.0), (1, 2.0), (2, 3.0)):
        trans[:, axis] = 1e-3 * mm * _slow_noise(T, fps, rng, (3.0, 9.0))

    # Gaze: fixations on the camera with small jumps every 0.8-2.5 s (both eyes together).
    eyes = np.zeros((T, 2, 3), np.float32)
    t_next, target = 0.0, np.zeros(2)
    gaze = np.zeros((T, 2))
    for i in range(T):
        if i / fps >= t_next:
            target = np.deg2rad([rng.uniform(-1.5, 1.5), rng.uniform(-3.0, 3.0)])  # pitch, yaw
            t_next = i / fps + rng.uniform(0.8, 2.5)
        gaze[i] = target
    gaze = gaussian_filter1d(gaze, 0.02 * fps + 0.5, axis=0, mode="nearest")
    eyes[:, :, 0] = gaze[:, None, 0]
    eyes[:, :, 1] = gaze[:, None, 1]

    expr = add_blinks(expr, [ei("eyeBlinkLeft"), ei("eyeBlinkRight")], fps, amplitude=0.95, seed=seed)
    expr = np.clip(expr, 0.0, 1.0)

    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = 0.1 * expr[:, ei("jawOpen")]
    p = rig.zero_params(T, device="cpu")
    p.expression = torch.from_numpy(expr).float()
    p.jaw = torch.from_numpy(jaw).float()
    p.global_rot = torch.from_numpy(rot).float()
    p.neck = torch.from_numpy(neck).float()
    p.eyes = torch.from_numpy(eyes).float()
    p.translation = torch.from_numpy(trans).float()
    return p


# ---------------------------------------------------------------------------------------------- looks
def demo_avatar(rig, per_face: int = 2, seed: int = 0):
    """The subject's Gaussian avatar [N = per_face x faces]: the untrained open-head avatar
    (:func:`talksplat.avatar.init_avatar`: skin, lips, brows, eyes, hair, a baked key light) with its
    own look: a warmer skin with mild low-frequency blotches, rosy cheeks, redder lips, darker hair
    and a few moles.  No stripes or high-contrast patterns (they confuse FaceMesh)."""
    from talksplat.avatar import init_avatar
    from talksplat.render.sh import rgb_to_sh

    rng = np.random.default_rng(seed + 100)
    av = init_avatar(rig, per_face=per_face, sh_degree=0)
    with torch.no_grad():
        means, _, _ = av.posed_geometry(rig.template[None], rig.faces)
        p = means[0].double()  # [N, 3] metres, rest pose
        rgb = (av.sh_dc[:, 0] * 0.28209479 + 0.5).double()  # SH DC -> RGB (light baked in)
        face_of = av.binding
        skin = torch.zeros(rig.num_faces, dtype=torch.bool)
        skin[rig.face_region("skin")] = True
        is_skin = skin[face_of]

        def in_region(name: str) -> torch.Tensor:  # [N] the Gaussian's triangle lies in the vertex region
            v = torch.zeros(rig.num_vertices, dtype=torch.bool).index_fill_(0, rig.region(name), True)
            return v[rig.faces].all(1)[face_of]

        hair = in_region("scalp") & ~in_region("face")
        lips = in_region("lips")
        # Low-frequency blotches: a few random plane waves (wavelengths 3-8 cm), +-6 % brightness.
        blot = torch.zeros(len(p), dtype=torch.float64)
        for _ in range(6):
            d = torch.from_numpy(rng.normal(size=3))
            d = d / d.norm()
            k = 2 * math.pi / rng.uniform(0.03, 0.08)
            blot += torch.sin(k * (p @ d) + rng.uniform(0, 2 * math.pi))
        blot = blot / 6 ** 0.5
        tone = torch.tensor([1.02, 0.95, 0.90], dtype=torch.float64)  # warmer skin
        skin_rgb = rgb * tone * (1 + 0.06 * blot)[:, None]
        # Rosy cheeks: Gaussian patches under the eyes, to the sides of the nose.
        for sx in (-1, 1):
            c = torch.tensor([sx * 0.045, 0.005, 0.11], dtype=torch.float64)
            w = torch.exp(-((p - c) ** 2).sum(1) / (2 * 0.018 ** 2))
            blush = torch.tensor([0.85, 0.42, 0.40], dtype=torch.float64)
            skin_rgb = skin_rgb * (1 - 0.12 * w[:, None]) + 0.12 * w[:, None] * blush
        # A few small moles on the cheeks, forehead and neck.
        for c in ((0.05, -0.02, 0.10), (-0.03, 0.05, 0.13), (0.02, -0.09, 0.07)):
            w = torch.exp(-((p - torch.tensor(c, dtype=torch.float64)) ** 2).sum(1) / (2 * 0.002 ** 2))
            skin_rgb = skin_rgb * (1 - 0.4 * w[:, None])
        rgb = torch.where(is_skin[:, None], skin_rgb, rgb)
        rgb = torch.where(lips[:, None], rgb * torch.tensor([1.03, 0.9, 0.9], dtype=torch.float64), rgb)
        rgb = torch.where(hair[:, None] & is_skin[:, None], rgb * 0.75, rgb)
        av.sh_dc[:, 0] = rgb_to_sh(rgb.clamp(0.02, 0.98).float())
    return av


def subject_camera(rig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frontal webcam: world-to-camera [4, 4] (OpenCV) and K [3, 3] pixels for a ``size`` x ``size``
    frame.  Focal length :data:`FOCAL` x size; the camera looks straight at the neutral head from the
    front, at the distance where the head (chin to crown) fills :data:`HEAD_FRACTION` of the frame height,
    its centre :data:`HEAD_CENTRE_Y` of the way down."""
    from talksplat.render.camera import intrinsics, look_at

    v = rig.template.cpu().double()
    face = v[rig.region("face").cpu()]
    crown = v[v[:, 1].argmax()]  # [3] top of the head
    chin = face[face[:, 1].argmin()]  # [3] lowest point of the face
    f = FOCAL * size

    def image_y(p: torch.Tensor, ey: float, ez: float) -> float:  # frontal camera, pixels from the top
        return size / 2 - f * float(p[1] - ey) / (ez - float(p[2]))

    # Solve for the camera height ey and distance ez: crown-to-chin spans HEAD_FRACTION of the frame,
    # their midpoint sits at HEAD_CENTRE_Y (a fixed-point iteration; converges in a few steps).
    ey = float(crown[1] + chin[1]) / 2
    ez = float(chin[2]) + f * float(crown[1] - chin[1]) / (HEAD_FRACTION * size)
    for _ in range(30):
        top, bottom = image_y(crown, ey, ez), image_y(chin, ey, ez)
        ez = float(chin[2]) + (ez - float(chin[2])) * (bottom - top) / (HEAD_FRACTION * size)
        ey -= (0.5 * (top + bottom) - HEAD_CENTRE_Y * size) * (ez - float(chin[2])) / f
    eye = torch.tensor([0.0, ey, ez], dtype=torch.float64)
    target = torch.tensor([0.0, ey, 0.0], dtype=torch.float64)
    viewmat = look_at(eye, target, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).float()
    return viewmat, intrinsics(focal=f, width=size, height=size)


def subject_background(size: int, seed: int = 0) -> torch.Tensor:
    """[size, size, 3] float in [0, 1]: a softly lit light grey-blue wall (a vertical gradient, a
    vignette, very faint low-frequency variation; about 190-220 in 8 bits)."""
    rng = np.random.default_rng(seed + 200)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    base = np.array([0.74, 0.77, 0.80])
    top = np.array([0.84, 0.85, 0.87])
    img = base[None, None] + (top - base)[None, None] * (1 - y)[..., None]
    light = 1.0 + 0.06 * np.exp(-((x - 0.3) ** 2 + (y - 0.25) ** 2) / 0.08)
    vignette = 1.0 - 0.18 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    wobble = 1.0 + 0.015 * np.sin(2 * np.pi * (x * rng.uniform(0.5, 1.5) + y * rng.uniform(0.5, 1.5)))
    img = img * (light * vignette * wobble)[..., None]
    return torch.from_numpy(np.clip(img, 0, 1)).float()


def neck_anchor(rig, params, viewmat: torch.Tensor, K: torch.Tensor) -> tuple[np.ndarray, float]:
    """Where the shoulders meet the neck, per frame: ([T, 2] pixels: the neck's centre at the bottom of its
    silhouette, following the head's translation), and the neck's half width in pixels (rest pose)."""
    from talksplat.data_prep.tracking import project

    with torch.no_grad():
        v = rig.template[None].cpu()
        uv = project(v, viewmat[None], K[None])[0, 0].numpy()  # [V, 2]
        neck = uv[rig.region("neck").cpu().numpy()]
        bottom = float(neck[:, 1].max())
        low = neck[neck[:, 1] > bottom - 0.25 * (neck[:, 1].max() - neck[:, 1].min())]
        half_width = float(low[:, 0].max() - low[:, 0].min()) / 2
        anchor = np.array([float(low[:, 0].mean()), bottom])
        root = rig.semantic_joints["global"]
        zero = rig.zero_params(1, device="cpu")
        j0 = rig(zero).joints[:, root]  # [1, 3] the neck base at rest
        jt = rig(params).joints[:, root]  # [T, 3]
        d = (project(jt[None], viewmat[None], K[None]) - project(j0[None], viewmat[None], K[None]))[0, 0].numpy()
    return anchor[None] + d, half_width


def shirt_layer(size: int, anchor: np.ndarray, half_width: float,
                colour=(0.95, 0.95, 0.93)) -> tuple[np.ndarray, np.ndarray]:
    """Shoulders in a light T-shirt below the neck (the rig stops at the base of the neck), drawn in 2D.

    ``anchor`` [2] pixels: the bottom centre of the neck; ``half_width``: the neck's half width, pixels.
    Returns (alpha [size, size] in [0, 1], colour [size, size, 3] in [0, 1]).  The top edge rises behind
    the neck (hidden by it), slopes down to the shoulders, then rounds off at the arms; shaded darker
    towards the neck, the edges and the bottom.  A plain light shirt gives selfie segmentation its
    shoulders (without them it hallucinates soft ones over the wall) and costs little when training
    against a white background."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx, yb = float(anchor[0]), float(anchor[1])
    hw = max(half_width, 1.0)
    d = np.abs(x - cx)
    top = yb - 0.6 * hw + 0.36 * np.clip(d - 1.1 * hw, 0, None)  # trapezius slope
    shoulder = 4.0 * hw
    r = 1.6 * hw  # round the shoulder tip into the arm
    over = np.clip(d - (shoulder - r), 0, None)
    top = top + np.where(over > 0, r - np.sqrt(np.clip(r ** 2 - np.minimum(over, r) ** 2, 0, None)), 0)
    top = np.where(d > shoulder, np.inf, top)
    alpha = np.clip((y - top) / 1.5, 0, 1)
    shade = (1.0 - 0.10 * np.exp(-((x - cx) ** 2 / (2 * (1.4 * hw) ** 2) + (y - yb) ** 2 / (2 * (0.6 * hw) ** 2)))
             - 0.08 * np.clip((d - 1.5 * hw) / (shoulder - 1.5 * hw), 0, 1) ** 2
             - 0.05 * np.clip((y - yb) / max(size - yb, 1), 0, 1))
    rgb = np.asarray(colour, np.float64)[None, None] * shade[..., None]
    return alpha.astype(np.float32), np.clip(rgb, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- video
def render_subject_video(out_mp4: str | os.PathLike, wave: np.ndarray, params, rig, avatar, size: int = 320,
                         fps: float = 25.0, background: torch.Tensor | None = None, shoulders: bool = True,
                         batch: int = 8, sample_rate: int = SAMPLE_RATE) -> Path:
    """Render ``params`` (RigParams [T]) with the CPU rasterizer from :func:`subject_camera` over
    ``background`` ([size, size, 3] in [0, 1]; default :func:`subject_background`), with shoulders in a
    light shirt below the neck (:func:`shirt_layer`, following the head's translation) unless
    ``shoulders`` is False, into an H.264 MP4 of
    ``size`` x ``size`` at ``fps`` with ``wave`` ([N] float32 at ``sample_rate``) muxed in as AAC, cut or
    padded to T / fps seconds.  Written to a temporary file beside ``out_mp4`` and renamed when complete."""
    from talksplat.avatar.render import render_avatar
    from talksplat.render.video import VideoWriter
    from talksplat.rigs.sequence import RigSequence

    if size % 2:
        raise ValueError(f"size {size}: must be even (H.264)")
    out_mp4 = Path(out_mp4)
    out_mp4.parent.mkdir(parents=True, exist_ok=True)
    rig, avatar = rig.cpu(), avatar.to("cpu")
    T = params.expression.shape[0]
    viewmat, K = subject_camera(rig, size)
    bg = subject_background(size) if background is None else background.float()
    if shoulders:
        import cv2

        anchors, neck_hw = neck_anchor(rig, params, viewmat, K)
        rest_anchor = anchors.mean(0)
        rest_alpha, rest_rgb = shirt_layer(size, rest_anchor, neck_hw)
        layer = np.concatenate([rest_rgb * rest_alpha[..., None], rest_alpha[..., None]], -1)  # premultiplied
    n = int(round(T / fps * sample_rate))
    audio = np.zeros(n, np.float32)
    audio[:min(n, len(wave))] = wave[:n]
    with tempfile.TemporaryDirectory(prefix="talksplat-demo-") as d:
        wav = write_wav(Path(d) / "audio.wav", audio, sample_rate)
        seq = RigSequence.from_params(params)
        with VideoWriter(out_mp4, size, size, fps=fps, audio_path=wav, shortest=False) as w, torch.no_grad():
            for s in range(0, T, batch):
                e = min(T, s + batch)
                p = seq[s:e].to_params()
                colors, alphas, _ = render_avatar(avatar, rig, p, viewmat[None], K[None], size, size,
                                                  backend="cpu")
                for b in range(e - s):
                    back = bg
                    if shoulders:  # the shirt moves with the neck base (sub-pixel shift of one drawing)
                        dx, dy = anchors[s + b] - rest_anchor
                        m = cv2.warpAffine(layer, np.float32([[1, 0, dx], [0, 1, dy]]), (size, size),
                                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                        m = torch.from_numpy(m)
                        back = m[..., :3] + (1 - m[..., 3:]) * bg
                    w.write(colors[b, 0] + (1 - alphas[b, 0]) * back)
    return out_mp4


def make_demo_subject(out_dir: str | os.PathLike, seconds: float | None = None, size: int = 320,
                      fps: float = 25.0, seed: int = 0, use_tts: bool = True) -> dict:
    """Generate the demo subject into ``out_dir``:

    * ``subject.mp4``: ``size`` x ``size`` H.264 at ``fps`` with the speech as AAC (about 9 s; ``seconds``
      cuts or pads the speech to that length);
    * ``subject_params.npz``: the ground-truth rig parameters, a rig parameter sequence file
      (:class:`talksplat.rigs.RigSequence`, docs/formats.md; expression [T, 52]) with the extras ``fps``,
      ``rig`` ("open") and ``expression_names``;
    * ``subject_speech.wav`` (the speech of the video) and ``drive_speech.wav`` (a different sentence,
      about 4 s, to drive the fitted avatar with).

    Returns {"video", "params", "speech", "drive_speech" (paths), "speech_source", "drive_source"
    ("espeak-ng" or "procedural"), "frames", "seconds", "size", "fps", "timings" (s per stage)}.
    """
    from talksplat.rigs import RigSequence, load_rig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    wave, source = demo_speech("train", out_dir / "subject_speech.wav", use_tts=use_tts)
    if seconds is not None:
        n = int(round(seconds * SAMPLE_RATE))
        wave = np.pad(wave, (0, max(0, n - len(wave))))[:n]
        fade = min(n, int(0.05 * SAMPLE_RATE))
        wave[n - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        write_wav(out_dir / "subject_speech.wav", wave)
    _, drive_source = demo_speech("drive", out_dir / "drive_speech.wav", use_tts=use_tts)
    timings["speech"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rig = load_rig("open").cpu()
    params = subject_motion(wave, fps, rig, seed=seed)
    avatar = demo_avatar(rig, seed=seed)
    timings["motion"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    video = render_subject_video(out_dir / "subject.mp4", wave, params, rig, avatar, size=size, fps=fps)
    timings["render"] = time.perf_counter() - t0

    truth = RigSequence.from_params(params, fps=np.float32(fps), rig="open", expression_names=rig.expression_names)
    truth.save(out_dir / "subject_params.npz")
    T = len(truth)
    return {"video": video, "params": out_dir / "subject_params.npz", "speech": out_dir / "subject_speech.wav",
            "drive_speech": out_dir / "drive_speech.wav", "speech_source": source, "drive_source": drive_source,
            "frames": T, "seconds": T / fps, "size": size, "fps": fps,
            "timings": {k: round(v, 2) for k, v in timings.items()}}


if __name__ == "__main__":  # python -m talksplat.demo.subject OUT_DIR
    import json
    import sys

    info = make_demo_subject(sys.argv[1] if len(sys.argv) > 1 else "demo_subject")
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in info.items()}, indent=1))
