"""Multi-view camera calibration: the ``cameras.json`` file that goes with a set of synchronised videos.

Schema (metres; OpenCV camera convention: x right, y down, z forward)::

    {"cameras": [
        {"id": "cam0",                      # equals the stem of the camera's video file (cam0.mp4)
         "width": 1920, "height": 1080,      # pixels, of the video frames
         "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
         "distortion": [k1, k2, p1, p2, k3], # OpenCV order; optional, may be shorter or empty
         "R": [[...], [...], [...]],         # world-to-camera rotation: x_cam = R @ x_world + t
         "t": [tx, ty, tz]},                 # world-to-camera translation, metres
        ...]}

``K`` and ``distortion`` are exactly what ``cv2.calibrateCamera`` / ``cv2.stereoCalibrate`` give, so
``K`` follows OpenCV's pixel convention: pixel centres at *integer* coordinates.  talksplat's cameras
(gsplat) put pixel centres at integer + 0.5; :attr:`CameraCalib.K_talksplat` is ``K`` in that
convention (cx, cy + 0.5), the one to store in a dataset's ``transforms.json``.

Validation (:func:`load_calibration`): every number must be finite (JSON ``NaN`` / ``Infinity`` are
refused), ``width`` / ``height`` positive integers, ``K`` upper triangular with ``fx, fy > 0`` and
last row ``[0, 0, 1]``, ``R`` a rotation (``|R R^T - I|`` and ``|det R - 1|`` at most
:data:`ROTATION_TOL`), ``t`` three numbers, ``distortion`` at most 14 numbers.  Anything else raises
:class:`CalibrationError` (an :class:`~talksplat.core.errors.InputError`), one line
``<file>: camera <i> ('<id>'): <problem>``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from talksplat.core.errors import InputError
from talksplat.core.files import atomic_write

__all__ = ["CalibrationError", "CameraCalib", "load_calibration", "write_calibration", "match_videos",
           "undistort_points", "undistort_image", "ROTATION_TOL"]

ROTATION_TOL = 1e-4  # |R R^T - I| and |det R - 1| allowed for a rotation matrix
_CV_DIST_LENGTHS = (4, 5, 8, 12, 14)  # distortion vector lengths OpenCV accepts


class CalibrationError(InputError):
    """A calibration file that cannot be used; the message is one line starting with the file path."""


@dataclass(eq=False)
class CameraCalib:
    """One calibrated camera.

    id: camera id (the stem of its video file).  width, height: image size, pixels.
    K: [3, 3] float64 intrinsics, pixels, OpenCV pixel convention (centres at integers).
    dist: [N] float64 OpenCV distortion coefficients (k1, k2, p1, p2, k3, ...), N in {0, 4, 5, 8, 12, 14}.
    R: [3, 3] float64 world-to-camera rotation.  t: [3] float64 world-to-camera translation, metres.
    source: the calibration file it was read from (for error messages), if any.
    """

    id: str
    width: int
    height: int
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    source: Path | None = field(default=None, compare=False, repr=False)

    def __eq__(self, other) -> bool:
        """Same id, size and arrays (exactly); `source` is not compared."""
        if not isinstance(other, CameraCalib):
            return NotImplemented
        return (self.id, self.width, self.height) == (other.id, other.width, other.height) and all(
            np.array_equal(getattr(self, k), getattr(other, k)) for k in ("K", "dist", "R", "t"))

    @property
    def viewmat(self) -> np.ndarray:
        """[4, 4] float64 world-to-camera (OpenCV), the rasterizer's `viewmats` entry."""
        m = np.eye(4)
        m[:3, :3] = self.R
        m[:3, 3] = self.t
        return m

    @property
    def c2w(self) -> np.ndarray:
        """[4, 4] float64 camera-to-world (OpenCV): the inverse of :attr:`viewmat`."""
        m = np.eye(4)
        m[:3, :3] = self.R.T
        m[:3, 3] = -self.R.T @ self.t
        return m

    @property
    def center(self) -> np.ndarray:
        """[3] camera centre in world coordinates, metres."""
        return -self.R.T @ self.t

    @property
    def K_talksplat(self) -> np.ndarray:
        """[3, 3] ``K`` in talksplat's pixel convention (pixel centres at integer + 0.5)."""
        K = self.K.copy()
        K[0, 2] += 0.5
        K[1, 2] += 0.5
        return K

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def scaled(self, s: float) -> "CameraCalib":
        """The calibration of the images resized by factor `s` (``cv2.resize`` to the rounded size).

        The size becomes ``round(width * s) x round(height * s)``; each axis scales by the exact
        ratio of new to old size.  fx, fy scale by it; the principal point follows the resize's
        pixel-centre mapping in OpenCV's convention, ``c' = r (c + 0.5) - 0.5``.  Distortion
        coefficients (on normalised coordinates) and the pose are unchanged.
        """
        if not s > 0:
            raise ValueError(f"scale factor must be positive, got {s}")
        w, h = max(1, int(round(self.width * s))), max(1, int(round(self.height * s)))
        rx, ry = w / self.width, h / self.height
        K = self.K.copy()
        K[0, :] *= rx  # fx, skew
        K[1, :] *= ry  # fy
        K[0, 2] = rx * (self.K[0, 2] + 0.5) - 0.5
        K[1, 2] = ry * (self.K[1, 2] + 0.5) - 0.5
        return replace(self, width=w, height=h, K=K, dist=self.dist.copy(), R=self.R.copy(), t=self.t.copy())

    def to_json(self) -> dict:
        return {"id": self.id, "width": int(self.width), "height": int(self.height),
                "K": np.asarray(self.K, float).tolist(), "distortion": np.asarray(self.dist, float).tolist(),
                "R": np.asarray(self.R, float).tolist(), "t": np.asarray(self.t, float).tolist()}


# ----------------------------------------------------------------------------- reading
def _printable(text: str, limit: int = 40) -> str:
    """``text`` for a message: control characters escaped (one line), at most ``limit`` characters."""
    r = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _show(v, limit: int = 40) -> str:
    """A value read from the file, for a message (its repr, one line, at most ``limit`` characters)."""
    return _printable(repr(v), limit)


def _matrix(path: Path, where: str, cam: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(cam[key], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise CalibrationError(f"{path}: {where}: '{key}' is not a numeric array") from None
    if a.shape != shape:
        raise CalibrationError(f"{path}: {where}: '{key}' has shape {list(a.shape)}, expected {list(shape)}")
    if not np.all(np.isfinite(a)):
        raise CalibrationError(f"{path}: {where}: '{key}' has non-finite values")
    return a


def _size(path: Path, where: str, cam: dict, key: str) -> int:
    v = cam[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        # float.is_integer() is False for NaN and +-Inf
        raise CalibrationError(f"{path}: {where}: '{key}' must be an integer number of pixels, got {_show(v)}")
    if int(v) <= 0:
        raise CalibrationError(f"{path}: {where}: '{key}' must be positive, got {v}")
    return int(v)


def _distortion(path: Path, where: str, cam: dict) -> np.ndarray:
    raw = cam.get("distortion")
    if raw is None:
        return np.zeros(0)
    try:
        d = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise CalibrationError(f"{path}: {where}: 'distortion' is not a numeric list") from None
    if d.ndim != 1 or d.size > 14:
        raise CalibrationError(f"{path}: {where}: 'distortion' must be a flat list of at most 14 "
                               f"coefficients (OpenCV order k1, k2, p1, p2, k3, ...), got shape {list(d.shape)}")
    if not np.all(np.isfinite(d)):
        raise CalibrationError(f"{path}: {where}: 'distortion' has non-finite values")
    if d.size and not np.any(d):
        return np.zeros(0)
    if d.size and d.size not in _CV_DIST_LENGTHS:  # pad with zeros to a length OpenCV accepts
        n = min(n for n in _CV_DIST_LENGTHS if n >= d.size)
        d = np.concatenate([d, np.zeros(n - d.size)])
    return d


def _parse_camera(path: Path, i: int, cam) -> CameraCalib:
    where = f"camera {i}"
    if not isinstance(cam, dict):
        raise CalibrationError(f"{path}: {where} is not an object")
    if "id" in cam:
        cid = cam["id"]
        where = f"camera {i} ('{_printable(cid, 60)}')" if isinstance(cid, str) else f"camera {i} ({_show(cid)})"
    missing = [k for k in ("id", "width", "height", "K", "R", "t") if k not in cam]
    if missing:
        raise CalibrationError(f"{path}: {where} lacks {', '.join(repr(k) for k in missing)}")
    cid = cam["id"]
    if (not isinstance(cid, str) or not cid or "/" in cid or "\\" in cid or cid in (".", "..")
            or not cid.isprintable()):
        raise CalibrationError(f"{path}: {where}: 'id' must be a non-empty string usable as a file name")
    width, height = _size(path, where, cam, "width"), _size(path, where, cam, "height")
    K = _matrix(path, where, cam, "K", (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise CalibrationError(f"{path}: {where}: 'K' must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                               f"with fx, fy > 0")
    R = _matrix(path, where, cam, "R", (3, 3))
    orth = np.abs(R @ R.T - np.eye(3)).max()
    det = np.linalg.det(R)
    if orth > ROTATION_TOL or abs(det - 1.0) > ROTATION_TOL:
        raise CalibrationError(f"{path}: {where}: 'R' is not a rotation matrix (|R R^T - I| = {orth:.2g}, "
                               f"det = {det:.6g}; need orthonormal with det +1 within {ROTATION_TOL:g})")
    t = _matrix(path, where, cam, "t", (3,))
    return CameraCalib(id=cid, width=width, height=height, K=K, dist=_distortion(path, where, cam), R=R, t=t,
                       source=path)


def load_calibration(path: str | os.PathLike) -> list[CameraCalib]:
    """Read ``cameras.json``; :class:`CalibrationError` (one line, starting with the path) if unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read calibration file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise CalibrationError(f"{path}: not a text (JSON) file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise CalibrationError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(doc, dict) or "cameras" not in doc:
        raise CalibrationError(f"{path}: expected an object with a 'cameras' list")
    cams = doc["cameras"]
    if not isinstance(cams, list) or not cams:
        raise CalibrationError(f"{path}: 'cameras' must be a non-empty list")
    calibs = [_parse_camera(path, i, c) for i, c in enumerate(cams)]
    seen: set[str] = set()
    dup = sorted({c.id for c in calibs if c.id in seen or seen.add(c.id)})
    if dup:
        raise CalibrationError(f"{path}: duplicate camera ids {dup}")
    return calibs


def write_calibration(path: str | os.PathLike, calibs: list[CameraCalib]) -> Path:
    """Write ``cameras.json`` atomically (temporary file + rename); the inverse of :func:`load_calibration`."""
    path = Path(path)
    doc = {"cameras": [c.to_json() for c in calibs]}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return path


# ----------------------------------------------------------------------------- videos
def match_videos(calibs: list[CameraCalib], video_paths: list[str | os.PathLike],
                 calib_path: str | os.PathLike | None = None) -> list[CameraCalib]:
    """The camera of each video, in the order of `video_paths` (camera id == video file stem).

    :class:`CalibrationError` naming the calibration file (`calib_path`, else where `calibs` were
    read from) and the unmatched ids / videos unless cameras and videos pair one to one.
    """
    src = calib_path if calib_path is not None else next((c.source for c in calibs if c.source), "cameras.json")
    by_id = {c.id: c for c in calibs}
    stems = [Path(v).stem for v in video_paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        names = [str(v) for v, s in zip(video_paths, stems) if s in dup]
        raise CalibrationError(f"{src}: several videos map to the same camera id {dup}: {names}")
    no_cam = [str(v) for v, s in zip(video_paths, stems) if s not in by_id]
    no_video = [c.id for c in calibs if c.id not in set(stems)]
    if no_cam or no_video:
        parts = []
        if no_cam:
            parts.append(f"videos without a camera: {no_cam}")
        if no_video:
            parts.append(f"cameras without a video: {no_video}")
        raise CalibrationError(f"{src}: cameras and videos do not match one to one (a camera id must equal its "
                               f"video's file stem, e.g. cam0 <-> cam0.mp4); " + "; ".join(parts))
    return [by_id[s] for s in stems]


# ----------------------------------------------------------------------------- undistortion
def undistort_points(points: np.ndarray, calib: CameraCalib) -> np.ndarray:
    """[N, 2] pixels in the distorted image -> [N, 2] pixels in the undistorted image (same K).

    ``cv2.undistortPointsIter`` with ``P = K`` (iterated to convergence, so strong distortion is
    inverted to well below 0.01 px); returns the input unchanged when there is no distortion.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be [N, 2], got {list(pts.shape)}")
    if not calib.has_distortion or len(pts) == 0:
        return pts.copy()
    import cv2

    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    out = cv2.undistortPointsIter(pts.reshape(-1, 1, 2), calib.K, calib.dist, None, calib.K, crit)
    return out.reshape(-1, 2)


def undistort_image(img: np.ndarray, calib: CameraCalib) -> np.ndarray:
    """[H, W(, C)] image -> the undistorted image with the same K (``cv2.undistort``).

    Returns `img` itself when there is no distortion.
    """
    if not calib.has_distortion:
        return img
    if img.shape[:2] != (calib.height, calib.width):
        src = calib.source or "calibration"
        raise CalibrationError(f"{src}: camera '{calib.id}' is {calib.width}x{calib.height} but the image is "
                               f"{img.shape[1]}x{img.shape[0]}")
    import cv2

    return cv2.undistort(img, calib.K, calib.dist)
