"""Face landmarks with mediapipe FaceMesh (478 points: 468 mesh + 10 iris), one subject per video.

mediapipe 0.10.21's legacy ``solutions.face_mesh`` ships its models inside the wheel, so this works
offline.  Coordinates are pixels in the image given (x right, y down).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

NUM_LANDMARKS = 478
# Indices into the 478 points (mediapipe's canonical face mesh topology).
OUTER_EYE_CORNERS = (33, 263)  # subject's right eye outer corner, left eye outer corner
IRIS_CENTERS = (468, 473)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


def _quiet_mediapipe() -> None:
    """Environment and Python-side log levels that keep mediapipe's C++ code (glog/absl, TFLite) to
    errors; must run before ``import mediapipe``.  What it still prints while a model is created and
    first run is held back by :func:`quiet_native_stderr`."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


#: The informational lines of mediapipe's C++ side: absl's I/W lines (``W0000 00:00:1796336104.725632
#: 11469 inference_feedback_manager.cc:114] ...``), absl's notice before InitializeLog, TFLite's
#: ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``, glog/GL context chatter.
_NATIVE_NOISE = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]"
    r"|INFO: "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|WARNING: Logging before InitGoogleLogging\(\) is written to STDERR)")

_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_state: tuple[int, object] | None = None  # (saved fd 2, capture file) while redirected


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back what native code (mediapipe's C++, TFLite) writes to file descriptor 2 inside the block.

    fd 2 goes to a temporary file and is restored on the way out, exceptions included (they pass
    through untouched).  Then every captured line that is not known informational noise
    (:data:`_NATIVE_NOISE`: absl I/W lines, TFLite INFO) is written to the real stderr, so C++ errors
    (``E0000 ...``, ``F0000 ...``) and anything Python printed in the block still reach the user.
    Nests (only the outermost block redirects), also across threads; while a block is open every
    thread's writes to fd 2 are captured and replayed at its end.
    """
    global _quiet_depth, _quiet_state
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_state = None
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2 at all: nothing to quieten
                saved = None
            if saved is not None:
                capture = tempfile.TemporaryFile()
                os.dup2(capture.fileno(), 2)
                _quiet_state = (saved, capture)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_state is not None:
                saved, capture = _quiet_state
                _quiet_state = None
                try:
                    sys.stderr.flush()
                except (AttributeError, OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                try:
                    capture.seek(0)
                    text = capture.read().decode(errors="replace")
                finally:
                    capture.close()
                keep = [line for line in text.splitlines(keepends=True) if not _NATIVE_NOISE.match(line)]
                if keep:
                    try:
                        os.write(2, "".join(keep).encode())
                    except OSError:
                        pass


class FaceMeshDetector:
    """mediapipe FaceMesh with iris refinement.

    Args:
        static: treat every image independently (renders, stills); False tracks through a video.
        max_faces: faces looked for per image; :class:`SubjectTracker` picks one of them.
        min_confidence: detection confidence threshold.
    """

    def __init__(self, static: bool = False, max_faces: int = 3, min_confidence: float = 0.5):
        # Checked here: a bad value reaching mediapipe's C++ side may abort the process (a CHECK).
        if int(max_faces) != max_faces or max_faces < 1:
            raise ValueError(f"max_faces must be a positive integer, got {max_faces}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        _quiet_mediapipe()
        with quiet_native_stderr():
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=int(max_faces), refine_landmarks=True,
                min_detection_confidence=min_confidence, min_tracking_confidence=0.5)
            # The graph opens its calculators on worker threads, which log as they go; one run on a blank
            # image waits for all of them (and leaves no tracking state: no face in it).
            self._mesh.process(np.zeros((128, 128, 3), np.uint8))
        self._first = True

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """[H, W, 3] uint8 RGB -> one [478, 3] float32 array per face: x, y in pixels, z (relative
        depth in the same pixel scale, camera-facing negative)."""
        h, w = rgb.shape[:2]
        if self._first:  # some calculators log as they first run, once a face is found
            with quiet_native_stderr():
                res = self._mesh.process(np.ascontiguousarray(rgb))
            self._first = not res.multi_face_landmarks
        else:
            res = self._mesh.process(np.ascontiguousarray(rgb))
        if not res.multi_face_landmarks:
            return []
        out = []
        for face in res.multi_face_landmarks:
            a = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            out.append(a * np.array([w, h, w], np.float32))
        return out

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceMeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _box(points: np.ndarray) -> np.ndarray:
    """[L, >=2] -> [4] x0, y0, x1, y1."""
    return np.concatenate([points[:, :2].min(0), points[:, :2].max(0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class SubjectTracker:
    """Keeps one subject through a video when several faces appear.

    The subject is the largest face at its first appearance; afterwards, the face whose box
    overlaps the last known box most (IoU >= 0.2).  Faces that overlap nothing are others.
    """

    def __init__(self, min_iou: float = 0.2):
        self.last_box: np.ndarray | None = None
        self.min_iou = min_iou

    def pick(self, faces: list[np.ndarray]) -> np.ndarray | None:
        if not faces:
            return None
        boxes = [_box(f) for f in faces]
        if self.last_box is None:
            i = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
        else:
            ious = [_iou(b, self.last_box) for b in boxes]
            i = int(np.argmax(ious))
            if ious[i] < self.min_iou:
                return None
        self.last_box = boxes[i]
        return faces[i]


@dataclass
class GapReport:
    """What :func:`fill_gaps` did.  Frame indices are time steps of the video."""

    interpolated: list[int]
    dropped: list[int]

    def describe(self, fps: float) -> str:
        def runs(idx: list[int]) -> str:
            if not idx:
                return "none"
            out, start, prev = [], idx[0], idx[0]
            for i in idx[1:] + [None]:
                if i is None or i != prev + 1:
                    out.append(f"{start / fps:.2f}-{(prev + 1) / fps:.2f} s")
                    if i is not None:
                        start = i
                if i is not None:
                    prev = i
            return ", ".join(out)

        return (f"interpolated {len(self.interpolated)} frames ({runs(self.interpolated)}); "
                f"dropped {len(self.dropped)} frames ({runs(self.dropped)})")


def fill_gaps(points: np.ndarray, found: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray, GapReport]:
    """Linearly interpolate detection gaps of at most `max_gap` frames between two detections.

    Args:
        points: [T, L, D] landmarks (rows of missing frames are ignored).
        found: [T] bool, a detection in that frame.
        max_gap: longest run of missing frames that is interpolated.
    Returns:
        points [T, L, D] with short gaps filled, keep [T] bool (detected or interpolated), report.
        Longer gaps and gaps at the clip's ends are dropped (keep False).
    """
    T = len(found)
    points = points.copy()
    keep = found.copy()
    interpolated: list[int] = []
    idx = np.flatnonzero(found)
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            for i in range(a + 1, b):
                w = (i - a) / (b - a)
                points[i] = (1 - w) * points[a] + w * points[b]
                keep[i] = True
                interpolated.append(int(i))
    dropped = [int(i) for i in range(T) if not keep[i]]
    return points, keep, GapReport(interpolated=interpolated, dropped=dropped)
