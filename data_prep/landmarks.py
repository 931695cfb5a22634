"""Face landmarks with mediapipe FaceMesh (478 points: 468 mesh + 10 iris), one subject per video.

mediapipe 0.10.21's legacy ``solutions.face_mesh`` ships its models inside the wheel, so this works
offline.  Coordinates are pixels in the image given (x right, y down).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

NUM_LANDMARKS = 478
# Indices into the 478 points (mediapipe's canonical face mesh topology).
OUTER_EYE_CORNERS = (33, 263)  # subject's right eye outer corner, left eye outer corner
IRIS_CENTERS = (468, 473)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


def _quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


class FaceMeshDetector:
    """mediapipe FaceMesh with iris refinement.

    Args:
        static: treat every image independently (renders, stills); False tracks through a video.
        max_faces: faces looked for per image; :class:`SubjectTracker` picks one of them.
        min_confidence: detection confidence threshold.
    """

    def __init__(self, static: bool = False, max_faces: int = 3, min_confidence: float = 0.5):
        _quiet_mediapipe()
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=0.5)

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """[H, W, 3] uint8 RGB -> one [478, 3] float32 array per face: x, y in pixels, z (relative
        depth in the same pixel scale, camera-facing negative)."""
        h, w = rgb.shape[:2]
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
