"""`talksplat bench text-sync`: does the avatar articulate?  Lips closed at p/b/m, open at open vowels, on
espeak-ng speech in several languages, where espeak-ng itself is the truth (it knows when it says each
phoneme).

For each voice, each of its fixed sentences (:data:`SENTENCES`, rich in p/b/m and open vowels) is spoken by
espeak-ng with :data:`PAD_S` of silence before and after (:func:`talksplat.driving.drive.spoken_visemes`, as
`talksplat drive --text` speaks) and drives the avatar as `talksplat drive --text` does
(:func:`talksplat.driving.animate.predict_sequence` at :data:`FPS`, still pose, no blinks; a ``phonetic``
predictor gets espeak-ng's visemes, a ``logmel`` one only the audio).  The frames are rendered as `talksplat
eval sync` renders them (the training camera, square ``--resolution`` px) and FaceMesh measures the mouth
opening of every frame (:func:`talksplat.driving.sync_metrics.mouth_opening`: inner-lip gap / inter-ocular
distance, IOD); nothing is read from the predicted parameters.  With ``--envelope`` the loudness-envelope
baseline of `talksplat eval sync` (:func:`talksplat.driving.sync_eval.baseline_sequences`) is measured too.

Truth, from espeak-ng's phoneme segments (frame ``f`` shows the instant ``f / FPS``, the time the predictor
reads for it):

* a phoneme's frames: those whose instant lies in [start, end); a phoneme shorter than a frame gets the frame
  nearest its middle;
* **bilabials**: phonemes of viseme ``PP`` (p, b, m in every language).  espeak-ng marks a stop at its release
  (the silent closure belongs to the segment before), hence the tolerance below;
* **open vowels**: phonemes of viseme ``aa``, ``E`` or ``O`` (a, e, o and their diphthongs: /a aI aU E e O o
  A~/...) except espeak-ng's reduced vowels (``@``, ``@2``, ``3``: schwa is barely open);
* **rest**: frames of the silent padding at least :data:`REST_GAP_S` from the first and last phoneme.

Figures, per voice (pooled over its sentences) and over all voices:

* ``bilabial`` / ``vowel``: the mean opening over the bilabial frames / the open-vowel frames (IOD units), and
  ``ratio`` = bilabial / vowel (< 1: the lips close for p/b/m relative to vowels; about 1: no articulation);
* thresholds from the avatar's own openings (per method, over all the voices measured): ``rest`` = the median
  opening of the rest frames, ``wide`` = the 95th percentile over the speech frames (first to last phoneme);
  closed below ``rest + CLOSED_FRACTION x (wide - rest)`` (the 25 % of `talksplat eval sync`), open above
  ``rest + OPEN_FRACTION x (wide - rest)`` (50 %);
* ``closure_recall``: the share of bilabial phonemes whose minimum opening over their frames +-
  :data:`TOLERANCE` frame (40 ms: co-articulation and the stop's closure before its release) is below the
  closed threshold;
* ``vowel_recall``: the share of open-vowel phonemes whose maximum opening over their frames +- the tolerance
  is above the open threshold.

The truth and figures are plain numpy (:func:`truth_frames`, :func:`thresholds`, :func:`articulation`), tested
on hand-made curves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talksplat.core.errors import OptionError
from talksplat.driving import sync_metrics as sm

from .config import BenchTextSyncConfig

#: Fixed sentences per espeak-ng voice: short, rich in p/b/m and open vowels.
SENTENCES: dict[str, tuple[str, ...]] = {
    "en-us": ("Bob met my mother by the boat.", "Pam bought a map of Bombay.", "My pop made a big apple pie."),
    "de": ("Mama bringt Papa eine Banane mit.", "Paul baut ein Boot am Meer.", "Oma malt mit Papa ein Bild."),
    "fr": ("Papa mange une pomme.", "Maman a bu du café au lait.", "Le bébé boit un peu de lait."),
    "es": ("Mi mamá bebe un poco de agua.", "Papá compra mapas en Bolivia.", "Pablo baila bajo la palma."),
    "it": ("Mamma porta la pappa al bambino.", "Il babbo mangia una mela.", "Paolo beve molta acqua."),
}
FPS = 25.0
#: Silence before and after each sentence (the avatar's rest).
PAD_S = 0.6
#: Rest frames: in the padding, at least this far from the first / last phoneme.
REST_GAP_S = 0.2
#: Frames either side of a phoneme's own frames that count for its closure / opening.
TOLERANCE = 1
CLOSED_FRACTION = sm.CLOSED_FRACTION
OPEN_FRACTION = 0.5
OPEN_VISEMES = ("aa", "E", "O")
METHODS = ("predictor", "envelope")


def voice_list(voices) -> list[str]:
    """``--voices`` (items may be comma-separated) -> voices, each one with :data:`SENTENCES`; OptionError
    listing those otherwise."""
    out = [v.strip() for item in voices for v in str(item).split(",") if v.strip()]
    if not out:
        raise OptionError(f"--voices: give at least one of {', '.join(SENTENCES)}")
    for v in out:
        if v not in SENTENCES:
            raise OptionError(f"--voices: no sentences for '{v}'; voices with sentences: {', '.join(SENTENCES)}")
    return list(dict.fromkeys(out))


def is_open_vowel(seg) -> bool:
    """A :class:`~talksplat.driving.phonetic.PhoneSegment` of an open vowel (see the module doc)."""
    name = seg.phone.strip().lstrip("',%=")
    return seg.viseme in OPEN_VISEMES and not name.startswith(("@", "3"))


@dataclass
class Truth:
    """One sentence's truth at :data:`FPS`: per phoneme its frame indices, and the rest / speech frames."""

    bilabial: list[np.ndarray]
    vowel: list[np.ndarray]
    rest: np.ndarray  # [T] bool
    speech: np.ndarray  # [T] bool


def _own_frames(seg, fps: float, num_frames: int) -> np.ndarray:
    f0 = int(math.ceil(seg.start * fps - 1e-9))
    f1 = int(math.ceil(seg.end * fps - 1e-9))
    own = np.arange(max(f0, 0), min(f1, num_frames))
    if own.size == 0:
        own = np.array([min(max(int(round((seg.start + seg.end) / 2 * fps)), 0), num_frames - 1)])
    return own


def truth_frames(segments: list, num_frames: int, fps: float = FPS, rest_gap_s: float = REST_GAP_S) -> Truth:
    """espeak-ng's segments of one sentence -> its :class:`Truth` over ``num_frames`` frames at ``fps``."""
    spoken = [s for s in segments if s.viseme != "sil"]
    t = np.arange(num_frames) / fps
    if spoken:
        first, last = spoken[0].start, spoken[-1].end
        rest = (t < first - rest_gap_s) | (t >= last + rest_gap_s)
        speech = (t >= first) & (t < last)
    else:
        rest, speech = np.ones(num_frames, bool), np.zeros(num_frames, bool)
    return Truth([_own_frames(s, fps, num_frames) for s in spoken if s.viseme == "PP"],
                 [_own_frames(s, fps, num_frames) for s in spoken if is_open_vowel(s)], rest, speech)


def thresholds(openings: list[np.ndarray], truths: list[Truth]) -> dict:
    """The avatar's own rest and wide openings over these sentences and the closed / open thresholds (IOD
    units; see the module doc)."""
    rest = np.concatenate([o[t.rest] for o, t in zip(openings, truths)])
    speech = np.concatenate([o[t.speech] for o, t in zip(openings, truths)])
    rest, speech = rest[np.isfinite(rest)], speech[np.isfinite(speech)]
    r = float(np.median(rest)) if rest.size else math.nan
    w = float(np.percentile(speech, 95)) if speech.size else math.nan
    span = max(w - r, 0.0)
    return {"rest": r, "wide": w, "closed": r + CLOSED_FRACTION * span, "opened": r + OPEN_FRACTION * span}


def _window(frames: np.ndarray, tolerance: int, num_frames: int) -> np.ndarray:
    return np.arange(max(int(frames.min()) - tolerance, 0), min(int(frames.max()) + tolerance + 1, num_frames))


def articulation(openings: list[np.ndarray], truths: list[Truth], closed: float, open_: float,
                 tolerance: int = TOLERANCE) -> dict:
    """Figures of the module doc over these sentences: openings [T] IOD units (NaN: no face) with their
    truths; ``closed`` / ``open_`` thresholds from :func:`thresholds`."""
    bil, vow, closures, openings_hit = [], [], [], []
    for o, t in zip(openings, truths):
        T = len(o)
        if t.bilabial:
            bil.append(o[np.unique(np.concatenate(t.bilabial))])
        if t.vowel:
            vow.append(o[np.unique(np.concatenate(t.vowel))])
        for f in t.bilabial:
            w = o[_window(f, tolerance, T)]
            if np.isfinite(w).any():
                closures.append(bool(np.nanmin(w) < closed))
        for f in t.vowel:
            w = o[_window(f, tolerance, T)]
            if np.isfinite(w).any():
                openings_hit.append(bool(np.nanmax(w) > open_))

    def mean(parts):
        v = np.concatenate(parts) if parts else np.zeros(0)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan

    b, v = mean(bil), mean(vow)
    return {"bilabial": b, "vowel": v, "ratio": b / v if v > 0 else math.nan,
            "closure_recall": float(np.mean(closures)) if closures else math.nan, "bilabials": len(closures),
            "vowel_recall": float(np.mean(openings_hit)) if openings_hit else math.nan, "vowels": len(openings_hit)}


def bench_text_sync(cfg: BenchTextSyncConfig) -> dict:
    """Run the benchmark (see the module doc); returns the report that :func:`rows_text` shows."""
    voices = voice_list(cfg.voices)
    from talksplat.core.files import scratch_dir
    from talksplat.core.progress import Bars
    from talksplat.driving.animate import predict_sequence
    from talksplat.driving.audio import frame_rms, load_audio
    from talksplat.driving.drive import drive_camera, spoken_visemes
    from talksplat.driving.sync_eval import avatar_landmarks, baseline_sequences, open_avatar
    from talksplat.render.device import pick_device

    t_start = time.perf_counter()
    fit, rig, avatar_file = open_avatar(cfg.avatar, cfg.rig)
    phonetic = fit.predictor.encoder_spec == "phonetic"
    device = pick_device(cfg.device)
    render_rig, avatar = rig.to(device), fit.avatar.to(device)
    methods = METHODS if cfg.envelope else METHODS[:1]
    curves: dict[str, dict[str, list]] = {m: {v: [] for v in voices} for m in methods}
    truths: dict[str, list[Truth]] = {v: [] for v in voices}
    spoken: dict[str, list[dict]] = {v: [] for v in voices}
    with scratch_dir("text-sync") as tmp, Bars(cfg.quiet, transient=True) as bars:
        advance, _ = bars.task("bench text-sync", len(voices) * cfg.sentences * len(methods))
        for voice in voices:
            for k, text in enumerate(SENTENCES[voice][:cfg.sentences]):
                wav, visemes, segs = spoken_visemes(text, Path(tmp) / f"{voice}{k}.wav", voice, pad_s=PAD_S)
                wave = load_audio(wav)
                seq = predict_sequence(fit, wave, fps=FPS, pose="still", blinks=False,
                                       visemes=visemes if phonetic else None, mouth_amplitude=cfg.mouth_amplitude)
                T = len(seq)
                seqs = {"predictor": seq}
                if cfg.envelope:
                    seqs.update(baseline_sequences(fit, rig, seq, sm.loudness_envelope(frame_rms(wave), 0.01, FPS, T)))
                viewmat, K = drive_camera(rig, seq, fit.camera, cfg.resolution, 0.0, 0.0)
                viewmat, K = viewmat.to(device), K.to(device)
                truth = truth_frames(segs, T)
                truths[voice].append(truth)
                spoken[voice].append({"text": text, "frames": T, "bilabials": len(truth.bilabial),
                                      "open_vowels": len(truth.vowel),
                                      "phonemes": " ".join(s.phone for s in segs if s.viseme != "sil")})
                for m in methods:
                    lm = avatar_landmarks(avatar, render_rig, seqs[m], viewmat, K, cfg.resolution, cfg.batch,
                                          f"{avatar_file} ({m}, {voice}: {text})")
                    curves[m][voice].append(sm.mouth_opening(lm))
                    advance()
    report = {"avatar": str(avatar_file), "predictor": fit.predictor.encoder_spec,
              "settings": {"fps": FPS, "resolution": cfg.resolution, "pose": "still", "blinks": False,
                           "pad_s": PAD_S, "tolerance_frames": TOLERANCE, "closed_fraction": CLOSED_FRACTION,
                           "open_fraction": OPEN_FRACTION, "mouth_amplitude": cfg.mouth_amplitude,
                           "device": str(device)},
              "sentences": spoken, "thresholds": {}, "voices": {v: {} for v in voices}, "all": {}}
    for m in methods:
        all_o = [o for v in voices for o in curves[m][v]]
        all_t = [t for v in voices for t in truths[v]]
        th = thresholds(all_o, all_t)
        report["thresholds"][m] = th
        for v in voices:
            report["voices"][v][m] = articulation(curves[m][v], truths[v], th["closed"], th["opened"])
        report["all"][m] = articulation(all_o, all_t, th["closed"], th["opened"])
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report


def _f(v, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def rows_text(report: dict) -> str:
    from rich.table import Table

    from .text import table_text

    table = Table(title=f"talksplat bench text-sync ({report['predictor']} predictor)")
    for col in ("voice", "method", "p/b/m", "open vowels", "ratio", "closure recall", "vowel recall"):
        table.add_column(col, justify="right")
    rows = [(v, r) for v, r in report["voices"].items()] + [("all", report["all"])]
    for voice, methods in rows:
        for m, f in methods.items():
            table.add_row(voice, m, _f(f["bilabial"]), _f(f["vowel"]), _f(f["ratio"], 2),
                          f"{_f(f['closure_recall'], 2)} ({f['bilabials']})",
                          f"{_f(f['vowel_recall'], 2)} ({f['vowels']})")
    th = "; ".join(f"{m}: rest {_f(t['rest'])}, wide {_f(t['wide'])}, closed < {_f(t['closed'])}, "
                   f"open > {_f(t['opened'])}" for m, t in report["thresholds"].items())
    return (table_text(table) + f"\n{report['avatar']}: mean mouth opening (FaceMesh on "
            f"{report['settings']['resolution']} px renders, inter-ocular distances) at p/b/m and at open vowels, "
            f"ratio = p/b/m / open vowels; recall (of how many phonemes); thresholds {th}; "
            f"{report['seconds']:.0f} s")


if __name__ == "__main__":
    import tyro

    print(rows_text(bench_text_sync(tyro.cli(BenchTextSyncConfig))))
