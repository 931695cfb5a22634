"""Foreground masks (head, hair, neck, shoulders) with mediapipe's selfie segmentation."""

from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np

from .landmarks import _quiet_mediapipe, quiet_native_stderr


class Segmenter:
    """mediapipe SelfieSegmentation (general model, 256x256 input; shipped in the wheel)."""

    def __init__(self, model: int = 0):
        if model not in (0, 1):  # any other value aborts the process in mediapipe's C++ code
            raise ValueError(f"model must be 0 (general) or 1 (landscape), got {model}")
        _quiet_mediapipe()
        with quiet_native_stderr():
            import mediapipe as mp

            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model)
            # The graph opens its calculators on worker threads, which log as they go (TFLite's XNNPACK
            # line among them); one run on a blank image waits for all of them.
            self._seg.process(np.zeros((128, 128, 3), np.uint8))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 -> [H, W] float32 foreground probability in [0, 1]."""
        return self._seg.process(np.ascontiguousarray(rgb)).segmentation_mask

    def close(self) -> None:
        self._seg.close()


class TemporalSmoother:
    """Centred [1, 2, 1] / 4 smoothing over time of a stream of masks, one frame of delay.

    ``push(item, mask)`` returns the (item, smoothed mask) pairs that became final; ``flush()`` the rest.
    ``item`` is carried along untouched (the frame index, the image to write, ...).
    """

    def __init__(self):
        self._buf: deque = deque()

    def push(self, item, mask: np.ndarray) -> list:
        self._buf.append((item, mask))
        if len(self._buf) == 2 and not getattr(self, "_started", False):
            self._started = True
            (i0, m0), (_, m1) = self._buf
            return [(i0, (3 * m0 + m1) / 4)]
        if len(self._buf) == 3:
            (_, m0), (i1, m1), (_, m2) = self._buf
            self._buf.popleft()
            return [(i1, (m0 + 2 * m1 + m2) / 4)]
        return []

    def flush(self) -> list:
        out = []
        if len(self._buf) == 1:
            out = [self._buf[0]]
        elif len(self._buf) == 2:
            (_, m0), (i1, m1) = self._buf
            out = [(i1, (m0 + 3 * m1) / 4)]
        self._buf.clear()
        self._started = False
        return out


def smooth_stream(pairs: Iterator[tuple[object, np.ndarray]]) -> Iterator[tuple[object, np.ndarray]]:
    """Generator form of :class:`TemporalSmoother`."""
    sm = TemporalSmoother()
    for item, m in pairs:
        yield from sm.push(item, m)
    yield from sm.flush()


def to_uint8_mask(mask: np.ndarray) -> np.ndarray:
    """[H, W] float in [0, 1] -> uint8 0..255."""
    return (np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8)
