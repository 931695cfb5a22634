"""Head motion, gaze and blinks while talking (the parts audio does not decide).

    pose = head_motion("idle", tracked, num_frames=T, fps=25)   # global_rot, neck, translation, eyes
    expr = add_blinks(expr, blink_ids, fps=25, amplitude=0.9)

Modes (``tracked``: the subject's per-frame training parameters, rig units):
* ``still``: the median tracked pose, every frame.
* ``replay``: the subject's own head motion and gaze, played forwards then backwards (a ping-pong
  loop: no jump where the clip would restart).
* ``idle``: a generated slow sway: per axis a sum of three sinusoids (periods 2.5-9 s, random
  phases) around the median pose, scaled to the tracked motion's spread and capped at 3 degrees
  / 1 cm, so it looks alive without looking like the training clip.
"""

from __future__ import annotations

import numpy as np

POSE_KEYS = ("global_rot", "neck", "translation", "eyes")


def _pingpong(n: int, T: int) -> np.ndarray:
    """[T] indices into a clip of n frames: 0..n-1, n-2..1, 0..n-1, ..."""
    if n <= 1:
        return np.zeros(T, np.int64)
    period = 2 * n - 2
    k = np.arange(T) % period
    return np.where(k < n, k, period - k)


def head_motion(mode: str, tracked: dict[str, np.ndarray], num_frames: int, fps: float = 25.0,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Per-frame ``global_rot [T, 3]``, ``neck [T, 3]``, ``translation [T, 3]`` metres, ``eyes [T, 2, 3]``."""
    T = num_frames
    med = {k: np.median(np.asarray(tracked[k], np.float32), 0) for k in POSE_KEYS}
    if mode == "still":
        return {k: np.repeat(med[k][None], T, 0).astype(np.float32) for k in POSE_KEYS}
    if mode == "replay":
        idx = _pingpong(len(tracked["global_rot"]), T)
        return {k: np.asarray(tracked[k], np.float32)[idx] for k in POSE_KEYS}
    if mode == "idle":
        rng = np.random.default_rng(seed)
        t = np.arange(T, dtype=np.float64) / fps
        out = {}
        for k, cap in (("global_rot", np.deg2rad(3.0)), ("neck", np.deg2rad(2.0)), ("translation", 0.01)):
            x = np.asarray(tracked[k], np.float64)
            amp = np.minimum(np.maximum(x.std(0), 0.25 * cap), cap)  # [3]
            wave = np.zeros((T, 3))
            for _ in range(3):
                period = rng.uniform(2.5, 9.0, size=3)
                phase = rng.uniform(0, 2 * np.pi, size=3)
                wave += np.sin(2 * np.pi * t[:, None] / period + phase)
            out[k] = (med[k][None] + amp * wave / 3.0).astype(np.float32)
        out["eyes"] = np.repeat(med["eyes"][None], T, 0).astype(np.float32)
        return out
    raise ValueError(f"--pose {mode!r}: expected still, replay or idle")


def blink_times(duration_s: float, rate_per_min: float = 17.0, min_gap_s: float = 1.5, seed: int = 0) -> np.ndarray:
    """Start times (s) of blinks: a Poisson process at ``rate_per_min`` with a refractory gap."""
    rng = np.random.default_rng(seed + 1)
    mean_gap = 60.0 / rate_per_min
    times, t = [], rng.uniform(0.5, mean_gap)
    while t < duration_s:
        times.append(t)
        t += min_gap_s + rng.exponential(max(mean_gap - min_gap_s, 0.1))
    return np.asarray(times)


def blink_curve(num_frames: int, fps: float, starts: np.ndarray, close_s: float = 0.08,
                open_s: float = 0.17) -> np.ndarray:
    """[T] eyelid closure in [0, 1]: fast close, slower reopen, for blinks starting at ``starts``."""
    t = np.arange(num_frames) / fps
    c = np.zeros(num_frames)
    for s in starts:
        d = t - s
        up = np.clip(d / close_s, 0, 1)
        down = np.clip(1 - (d - close_s) / open_s, 0, 1)
        c = np.maximum(c, np.where(d < close_s, up, down) * (d >= 0))
    return c.astype(np.float32)


def add_blinks(expression: np.ndarray, blink_ids: list[int], fps: float, amplitude: float = 1.0,
               seed: int = 0) -> np.ndarray:
    """Blend natural-rate blinks into the eyelid coefficients ``blink_ids`` of ``expression`` [T, E]."""
    if not blink_ids:
        return expression
    T = len(expression)
    curve = blink_curve(T, fps, blink_times(T / fps, seed=seed))
    out = expression.copy()
    for i in blink_ids:
        out[:, i] = out[:, i] + (amplitude - out[:, i]) * curve
    return out
