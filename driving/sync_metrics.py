"""Lip-sync figures from FaceMesh landmarks of a driven avatar's renders and of a real speaker's video.

Pure numpy (no torch): the measurement of `talksplat eval sync` (:mod:`talksplat.driving.sync_eval`), kept
apart so it is tested on synthetic landmark arrays with known answers.

Inputs are per-frame FaceMesh landmarks ``[T, 478, 2+]`` in pixels of their own image (x right, y down; only x
and y are used), NaN in frames without a face, and the audio's level per video frame in dB.  Every figure is
taken over the frames where both landmark sequences are finite.  All lengths are in units of the frame's own
inter-ocular distance (IOD: outer eye corners 33 and 263), so the two faces may be of any size and position.

* **Mouth opening** ``[T]``: the mean of the inner-lip gaps of :data:`INNER_LIP_PAIRS` (upper inner lip point
  to lower inner lip point: 13/14 at the middle, 82/87 and 312/317, 81/178 and 311/402 towards the corners),
  divided by the IOD.  About 0 when the lips touch; 0.2-0.4 for a wide-open mouth.
* **Correlation** (Pearson) of the two mouth-opening curves at lag 0 and at every lag within ``±max_lag``
  frames; lag k compares real frame t with avatar frame t + k (k > 0: the avatar is late).
* **LMD** (lip landmark distance, as ER-NeRF / TalkingGaussian report it, here on FaceMesh's 40 lip points
  :data:`LIP_POINTS`): per frame, each face's lip points minus their centroid (position), rotated so the eye
  line (33 -> 263) is horizontal (in-plane head roll), divided by the IOD (scale); then the mean over frames
  and points of the Euclidean distance between avatar and real point.  ``lmd`` removes just that;
  ``lmd_centered`` also subtracts each sequence's own mean normalised mouth shape (over its frames), removing
  the identity's lip shape, so two different people compare by their mouth *motion* alone.  Both in IOD
  units.
* **Amplitude ratio**: std of the avatar's mouth opening / std of the real one.
* **Closed lips**: opening below ``closed_threshold(real)`` = the real speaker's 5th percentile + 25 % of
  its 5th-95th percentile range (IOD units), one threshold for both faces, so a mouth held a little open is
  not called closed.
* **Inside speech / silence** from the audio alone (:func:`speech_masks`): a frame is voiced when its level
  is above both the clip's 95th-percentile frame level - ``voiced_db`` (30 dB) and its 5th percentile (the
  noise floor when the clip has pauses) + ``floor_fraction`` (40 %) of the 5th-95th percentile range (GRID's
  recordings have a noise floor only 25-30 dB under the speech); inside speech = voiced, or in an
  unvoiced run of at most ``max_pause_s`` (0.25 s) between voiced frames (where the lips close for p, b, m:
  a stop closure is quiet); silence = unvoiced runs of at least ``min_silence_s`` (0.2 s), clip ends included.
* **Closure recall**: of the frames inside speech where the real speaker's lips are closed, the share where
  the avatar's are closed too (NaN when the real speaker never closes them inside speech).
* **Closed when open**: of the frames inside speech where the real speaker's lips are open, the share where
  the avatar's are closed (a mouth that never opens has closure recall 1 and this 1 too).
* **Open in silence**: of the silence frames, the share where the avatar's lips are open.
"""

from __future__ import annotations

import math

import numpy as np

from talksplat.fitting.regions import INNER_LIP_PAIRS  # (upper, lower) inner-lip points: one definition

#: Outer eye corners (the subject's right, left): the inter-ocular distance.
EYE_CORNERS: tuple[int, int] = (33, 263)
#: FaceMesh's 40 lip points (``FACEMESH_LIPS``): the outer contour then the inner one.
LIP_POINTS: tuple[int, ...] = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40,
                               185, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82,
                               81, 80, 191)

#: Defaults of the audio masks (see the module doc).
VOICED_DB = 30.0
FLOOR_FRACTION = 0.4
MAX_PAUSE_S = 0.25
MIN_SILENCE_S = 0.2
#: Closed lips: below the real speaker's 5th percentile + this share of its 5th-95th percentile range.
CLOSED_FRACTION = 0.25


def _xy(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1] < 478 or lm.shape[2] < 2:
        raise ValueError(f"expected FaceMesh landmarks [T, 478, 2+], got {lm.shape}")
    return lm[..., :2]


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """[T, 478, 2+] px -> [T] px: distance between the outer eye corners (NaN where landmarks are NaN)."""
    lm = _xy(landmarks)
    return np.linalg.norm(lm[:, EYE_CORNERS[1]] - lm[:, EYE_CORNERS[0]], axis=-1)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """[T, 478, 2+] px -> [T] mean inner-lip gap of :data:`INNER_LIP_PAIRS` / inter-ocular distance."""
    lm = _xy(landmarks)
    up, lo = (np.array(i) for i in zip(*INNER_LIP_PAIRS))
    gap = np.linalg.norm(lm[:, up] - lm[:, lo], axis=-1).mean(-1)
    return gap / interocular(lm)


def normalised_mouth(landmarks: np.ndarray) -> np.ndarray:
    """[T, 478, 2+] px -> [T, 40, 2] lip points (:data:`LIP_POINTS`) minus their centroid, rotated so the eye
    line is horizontal, divided by the inter-ocular distance (IOD units; x towards the subject's left eye)."""
    lm = _xy(landmarks)
    eye = lm[:, EYE_CORNERS[1]] - lm[:, EYE_CORNERS[0]]  # [T, 2]
    iod = np.linalg.norm(eye, axis=-1)
    c, s = eye[:, 0] / iod, eye[:, 1] / iod  # rotation taking the eye line to +x: [[c, s], [-s, c]]
    lips = lm[:, list(LIP_POINTS)]
    lips = lips - lips.mean(1, keepdims=True)
    x = c[:, None] * lips[..., 0] + s[:, None] * lips[..., 1]
    y = -s[:, None] * lips[..., 0] + c[:, None] * lips[..., 1]
    return np.stack([x, y], -1) / iod[:, None, None]


def both_valid(real_landmarks: np.ndarray, avatar_landmarks: np.ndarray) -> np.ndarray:
    """[T] bool: frames where both landmark arrays are finite (a face in both)."""
    a, b = _xy(real_landmarks), _xy(avatar_landmarks)
    if len(a) != len(b):
        raise ValueError(f"landmark sequences of different lengths: {len(a)} and {len(b)}")
    return np.isfinite(a).all((1, 2)) & np.isfinite(b).all((1, 2))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def lag_correlations(real: np.ndarray, avatar: np.ndarray, max_lag: int = 3) -> dict[int, float]:
    """Pearson correlation of real[t] with avatar[t + k] for k in -max_lag..max_lag, over the overlapping
    finite frames; ``{k: r}`` (0 for a constant curve, NaN with fewer than 3 frames)."""
    real, avatar = np.asarray(real, np.float64), np.asarray(avatar, np.float64)
    T = len(real)
    out = {}
    for k in range(-max_lag, max_lag + 1):
        if k >= 0:
            out[k] = _pearson(real[:T - k], avatar[k:])
        else:
            out[k] = _pearson(real[-k:], avatar[:T + k])
    return out


def best_lag(corrs: dict[int, float]) -> tuple[int, float]:
    """(lag, r) of the highest correlation; the smallest |lag| among ties; (0, NaN) when all are NaN."""
    finite = [(k, r) for k, r in corrs.items() if np.isfinite(r)]
    if not finite:
        return 0, math.nan
    return max(finite, key=lambda kr: (kr[1], -abs(kr[0])))


def lip_landmark_distance(real_landmarks: np.ndarray, avatar_landmarks: np.ndarray,
                          remove_mean_shape: bool = False) -> float:
    """LMD in IOD units (see the module doc) over the frames where both are finite; NaN when there are none.

    remove_mean_shape: also subtract each sequence's own mean normalised mouth (``lmd_centered``)."""
    ok = both_valid(real_landmarks, avatar_landmarks)
    if not ok.any():
        return math.nan
    a, b = normalised_mouth(real_landmarks)[ok], normalised_mouth(avatar_landmarks)[ok]
    if remove_mean_shape:
        a, b = a - a.mean(0), b - b.mean(0)
    return float(np.linalg.norm(a - b, axis=-1).mean())


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end)) of the runs of True in a [T] bool array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[0::2].tolist(), d[1::2].tolist()))


def speech_masks(level_db: np.ndarray, fps: float, voiced_db: float = VOICED_DB,
                 floor_fraction: float = FLOOR_FRACTION, max_pause_s: float = MAX_PAUSE_S,
                 min_silence_s: float = MIN_SILENCE_S) -> tuple[np.ndarray, np.ndarray]:
    """[T] audio level per video frame (dB, any reference) -> (inside_speech [T] bool, silence [T] bool).

    Voiced: level > max(95th percentile - ``voiced_db``, 5th percentile + ``floor_fraction`` x (95th - 5th
    percentile)).  Inside speech: voiced, or an unvoiced run of at most
    ``max_pause_s`` with voiced frames on both sides.  Silence: an unvoiced run of at least ``min_silence_s``
    (clip ends included).  A frame can be neither (an unvoiced run between the two lengths, or a short one at
    an end of the clip)."""
    level = np.asarray(level_db, np.float64)
    lo, hi = np.percentile(level, [5, 95])
    voiced = level > max(hi - voiced_db, lo + floor_fraction * (hi - lo))
    inside, silence = voiced.copy(), np.zeros_like(voiced)
    T = len(level)
    for s, e in _runs(~voiced):
        n = e - s
        if n <= max_pause_s * fps + 1e-9 and s > 0 and e < T:
            inside[s:e] = True
        if n >= min_silence_s * fps - 1e-9:
            silence[s:e] = True
    return inside, silence


def closed_threshold(real_opening: np.ndarray, fraction: float = CLOSED_FRACTION) -> float:
    """The opening (IOD units) under which lips count as closed, from the real speaker's own distribution:
    5th percentile + ``fraction`` of the 5th-95th percentile range."""
    o = np.asarray(real_opening, np.float64)
    o = o[np.isfinite(o)]
    if o.size == 0:
        return math.nan
    lo, hi = np.percentile(o, [5, 95])
    return float(lo + fraction * (hi - lo))


def closure_recall(real_opening: np.ndarray, avatar_opening: np.ndarray, inside_speech: np.ndarray,
                   threshold: float) -> tuple[float, int]:
    """(share of the real speaker's closed frames inside speech where the avatar is closed too, how many such
    frames); NaN share when there are none.  Openings [T] IOD units, NaN frames ignored."""
    real, av = np.asarray(real_opening, np.float64), np.asarray(avatar_opening, np.float64)
    ok = np.isfinite(real) & np.isfinite(av) & np.asarray(inside_speech, bool)
    closed = ok & (real < threshold)
    n = int(closed.sum())
    return (float((av[closed] < threshold).mean()) if n else math.nan), n


def closed_when_open(real_opening: np.ndarray, avatar_opening: np.ndarray, inside_speech: np.ndarray,
                     threshold: float) -> float:
    """Share of the real speaker's open frames inside speech where the avatar's lips are closed (NaN when
    there are none).  Openings [T] IOD units, NaN frames ignored."""
    real, av = np.asarray(real_opening, np.float64), np.asarray(avatar_opening, np.float64)
    ok = np.isfinite(real) & np.isfinite(av) & np.asarray(inside_speech, bool) & (real >= threshold)
    return float((av[ok] < threshold).mean()) if ok.any() else math.nan


def open_in_silence(avatar_opening: np.ndarray, silence: np.ndarray, threshold: float) -> tuple[float, int]:
    """(share of the silence frames where the avatar's lips are open, how many silence frames); NaN share
    when there are none."""
    av = np.asarray(avatar_opening, np.float64)
    ok = np.isfinite(av) & np.asarray(silence, bool)
    n = int(ok.sum())
    return (float((av[ok] >= threshold).mean()) if n else math.nan), n


def sync_metrics(real_landmarks: np.ndarray, avatar_landmarks: np.ndarray, level_db: np.ndarray, fps: float,
                 max_lag: int = 3) -> dict:
    """Every figure of the module doc for one avatar sequence against one real one.

    real_landmarks, avatar_landmarks: [T, 478, 2+] px (NaN where no face); level_db: [T] audio level per video
    frame (dB); fps: frames per second.  Returns a JSON-ready dict (NaN where a figure is undefined):
    ``corr_lag0``, ``corr_best``, ``best_lag`` (frames; > 0: the avatar is late), ``corr_by_lag``
    ({lag: r}), ``lmd``, ``lmd_centered`` (IOD units), ``amplitude_ratio``, ``real_std``, ``avatar_std``
    (IOD units), ``closure_recall`` (with ``closure_frames``), ``closed_when_open``, ``open_in_silence`` (with
    ``silence_frames``), ``closed_threshold`` (IOD units), ``frames`` (compared)."""
    ok = both_valid(real_landmarks, avatar_landmarks)
    if len(level_db) != len(ok):
        raise ValueError(f"level_db has {len(level_db)} frames, the landmarks {len(ok)}")
    real = np.where(ok, mouth_opening(real_landmarks), np.nan)
    av = np.where(ok, mouth_opening(avatar_landmarks), np.nan)
    corrs = lag_correlations(real, av, max_lag)
    lag, r_best = best_lag(corrs)
    real_std, av_std = float(np.nanstd(real)) if ok.any() else math.nan, float(np.nanstd(av)) if ok.any() else math.nan
    thr = closed_threshold(real)
    inside, silence = speech_masks(level_db, fps)
    recall, n_closed = closure_recall(real, av, inside, thr)
    ois, n_silence = open_in_silence(av, silence & ok, thr)
    return {"corr_lag0": corrs[0], "corr_best": r_best, "best_lag": int(lag),
            "corr_by_lag": {str(k): r for k, r in corrs.items()},
            "lmd": lip_landmark_distance(real_landmarks, avatar_landmarks),
            "lmd_centered": lip_landmark_distance(real_landmarks, avatar_landmarks, remove_mean_shape=True),
            "amplitude_ratio": av_std / real_std if real_std > 1e-12 else math.nan,
            "real_std": real_std, "avatar_std": av_std, "closure_recall": recall, "closure_frames": n_closed,
            "closed_when_open": closed_when_open(real, av, inside, thr),
            "open_in_silence": ois, "silence_frames": n_silence, "closed_threshold": thr, "frames": int(ok.sum())}


#: The figures averaged into totals (the others are counts or details).
SUMMARY_KEYS = ("corr_lag0", "corr_best", "best_lag", "lmd", "lmd_centered", "amplitude_ratio", "closure_recall",
                "closed_when_open", "open_in_silence")


def mean_metrics(per_video: list[dict]) -> dict:
    """Mean over videos of each :data:`SUMMARY_KEYS` figure, NaN entries left out (NaN when all are);
    ``videos``: how many were averaged."""
    out: dict = {}
    for k in SUMMARY_KEYS:
        vals = np.array([m[k] for m in per_video if k in m], np.float64)
        vals = vals[np.isfinite(vals)]
        out[k] = float(vals.mean()) if vals.size else math.nan
    out["videos"] = len(per_video)
    return out


def _per_video_frame(rms: np.ndarray, hop_s: float, fps: float, num_frames: int) -> np.ndarray:
    """[N] RMS at ``hop_s`` steps (step i at i * hop_s s) -> [num_frames] RMS over each video frame's interval
    [t / fps, (t + 1) / fps) (0 past the audio's end)."""
    rms = np.asarray(rms, np.float64)
    idx = np.floor(np.arange(len(rms)) * hop_s * fps + 1e-9).astype(np.int64)
    keep = idx < num_frames
    energy = np.bincount(idx[keep], weights=rms[keep] ** 2, minlength=num_frames)
    count = np.bincount(idx[keep], minlength=num_frames)
    return np.sqrt(energy / np.maximum(count, 1))


def frame_levels_db(rms: np.ndarray, hop_s: float, fps: float, num_frames: int) -> np.ndarray:
    """[N] audio RMS at ``hop_s`` steps -> [num_frames] level per video frame in dB (full scale 0 dB; floor -140)."""
    return 20 * np.log10(np.maximum(_per_video_frame(rms, hop_s, fps, num_frames), 1e-7))


def loudness_envelope(rms: np.ndarray, hop_s: float, fps: float, num_frames: int, smooth_s: float = 0.08) -> np.ndarray:
    """[N] audio RMS at ``hop_s`` steps -> [num_frames] smoothed loudness envelope in [0, 1]: the RMS smoothed
    by a ``smooth_s`` Hann window, per video frame, divided by its 95th percentile and clipped (0: silence,
    1: loud speech)."""
    rms = np.asarray(rms, np.float64)
    n = max(1, int(round(smooth_s / hop_s)))
    w = np.hanning(n + 2)[1:-1]
    smooth = np.convolve(rms, w / w.sum(), mode="same") if len(rms) >= n else rms
    env = _per_video_frame(smooth, hop_s, fps, num_frames)
    ref = np.percentile(env, 95)
    return np.clip(env / ref, 0.0, 1.0) if ref > 1e-9 else np.zeros(num_frames)
