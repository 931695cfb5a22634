"""Import and export the NeRF-style dataset layout of VHAP and GaussianAvatars.

The layout (as written by VHAP's ``vhap/export_as_nerf_dataset.py`` and read by VHAP's
``vhap/data/nerf_dataset.py`` and GaussianAvatars' ``scene/dataset_readers.py``)::

    SRC/
      transforms_train.json   required
      transforms_val.json     optional (VHAP: one held-out camera at the training time steps)
      transforms_test.json    optional (VHAP: the last time steps, all cameras)
      transforms.json         all frames (not read on import; written on export)
      images/00000_00.png     file_path: images/<timestep:05d>_<camera:02d>.png (any name works)
      fg_masks/00000_00.png   fg_mask_path (optional)
      flame_param/00000.npz   flame_param_path, one file per time step
      canonical_flame_param.npz   zero pose, jaw open 0.3 rad (written on export, not read)

Each ``transforms_*.json`` holds optional shared intrinsics at the top level (``fl_x, fl_y, cx,
cy, w, h``, or only ``camera_angle_x`` [/ ``camera_angle_y``]), ``timestep_indices``,
``camera_indices`` and a ``frames`` list.  A frame has ``file_path`` (relative to SRC; ``.png`` is
appended when it has no suffix, as GaussianAvatars does), optional ``fg_mask_path``,
``transform_matrix`` (camera-to-world, OpenGL / Blender axes: x right, y up, z backward; VHAP's
``camera_convention_conversion = 'opencv->opengl'``, GaussianAvatars flips columns 1 and 2 back to
OpenCV), optional per-frame intrinsics overriding the top level, ``timestep_index``,
``camera_index`` and/or ``camera_id``, and ``flame_param_path``.

FLAME parameters (VHAP ``TrackedFLAMEDatasetWriter.write_flame_param``): per time step an ``.npz``
with ``translation [1, 3]``, ``rotation [1, 3]`` (global, axis-angle), ``neck_pose [1, 3]``,
``jaw_pose [1, 3]``, ``eyes_pose [1, 6]`` (FLAME joint 3 then joint 4), ``shape [300]`` (shared),
``expr [1, E]`` and possibly ``static_offset`` / ``dynamic_offset`` (per-vertex offsets: talksplat
has no such thing; they are dropped with a warning).  Alternatively all time steps in one file
with a leading T axis (``translation [T, 3]``, ..., ``expr [T, E]``, ``shape [300]``), indexed by
``timestep_index``: the ``flame_param.npz`` GaussianAvatars saves beside its point cloud (also its
``--motion_path`` files) and VHAP's tracker output ``tracked_flame_params_<epoch>.npz``.  It is used
for frames without ``flame_param_path``: pass it as ``flame_params``, or leave it in SRC as
``flame_param.npz`` / ``tracked_flame_params*.npz`` (highest epoch).

NeRF intrinsics follow the ray convention of pixel centres at integer + 0.5, as talksplat's, so
``fl_x, fl_y, cx, cy`` are copied into ``K`` unchanged.

Validation.  Everything is checked before anything is written, and the source folder is only read
(never modified: images are re-encoded or copied; ``copy_images=False`` hard-links a source PNG only
when it is the user's and already has the mode the dataset gives its files, 0644).  Each problem
raises :class:`NerfImportError` (an :class:`~talksplat.core.errors.InputError`), one line starting
with the json or npz file and naming the frame and field:

* intrinsics (``fl_x, fl_y, cx, cy, w, h, camera_angle_x, camera_angle_y``, in a frame or at the top
  level) must be finite numbers; ``fl_x, fl_y, w, h`` positive, the angles in (0, pi);
* ``transform_matrix`` must be finite, 4x4 (or 3x4), with bottom row ``[0, 0, 0, 1]`` and a
  *rigid* upper-left 3x3: a rotation, ``|R^T R - I| <= ROTATION_TOL`` and ``|det R - 1| <=
  ROTATION_TOL`` (1e-3, loose enough for float32 round trips).  A uniform scale is refused too:
  VHAP writes rigid camera-to-world matrices (OpenCV extrinsics with columns 1 and 2 negated) and
  GaussianAvatars inverts them as rigid transforms, so a scaled or singular matrix (all zeros) means
  a broken export, not a convention to honour;
* ``timestep_index`` / ``camera_index`` non-negative integers, ``fps`` a positive number;
* FLAME parameter files: the keys of :data:`FLAME_NPZ_KEYS`, numeric and finite (no NaN / Inf);
* ``file_path``, ``fg_mask_path`` and ``flame_param_path`` must lie inside SRC once symlinks are
  resolved (no absolute paths or ``../`` elsewhere) unless ``allow_external_paths=True``
  (``--allow-external-paths``).  The ``flame_params=`` file is given explicitly and may lie anywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talksplat.core.checks import check_array
from talksplat.core.errors import InputError
from talksplat.core.files import commit_dir, make_partial_dir
from talksplat.core.outputs import write_marker
from talksplat.rigs.sequence import RigSequence

from .dataset import DatasetWriter, Frame, check_output_dir, image_name, load_dataset

__all__ = ["NerfImportError", "import_nerf_dataset", "export_nerf_dataset", "FLAME_NPZ_KEYS", "GL_TO_CV",
           "DEFAULT_FPS", "NUM_LANDMARKS", "ROTATION_TOL"]

#: Keys a FLAME parameter file must hold (VHAP / GaussianAvatars names).
FLAME_NPZ_KEYS = ("translation", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr")
#: Right-multiplying a camera-to-world matrix flips its camera y and z axes: OpenGL <-> OpenCV.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
DEFAULT_FPS = 25.0
NUM_LANDMARKS = 478  # MediaPipe FaceMesh with irises: the dataset's landmark layout
DIVISIONS = ("train", "val", "test")
FLAME_VERTICES = 5023  # static_offset written on export (GaussianAvatars reads it from time step 0)
#: |R^T R - I| and |det R - 1| allowed for the rotation part of a ``transform_matrix`` (no scale).
ROTATION_TOL = 1e-3
#: Intrinsics a frame or a json's top level may carry.
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
_MAX_INDEX = 2 ** 31  # timestep_index / camera_index must be below


class NerfImportError(InputError):
    """A NeRF-style dataset that cannot be imported; one line naming the file and the problem."""


@dataclass
class _SrcFrame:
    division: str
    json_path: Path
    index: int  # position in its json's frame list
    image: Path
    mask: Path | None
    c2w_gl: np.ndarray  # [4, 4]
    raw: dict  # the frame's json
    top: dict  # its json's top level
    timestep: int  # source timestep_index
    camera_key: tuple
    camera_name: str
    flame_path: Path | None


# ============================================================================= import
def _printable(text: str, limit: int = 80) -> str:
    """``text`` for a message: control characters escaped (one line), at most ``limit`` characters."""
    r = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _show(v, limit: int = 40) -> str:
    """A value read from a json file, for a message (its repr, one line, at most ``limit`` characters)."""
    return _printable(repr(v), limit)


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise NerfImportError(f"{path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NerfImportError(f"{path}: invalid JSON ({_printable(str(e), 200)})") from None
    except RecursionError:
        raise NerfImportError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise NerfImportError(f"{path}: expected an object with a 'frames' list")
    return doc


def _number(v, where: str, key: str) -> float:
    """A json value as a finite float, else :class:`NerfImportError` naming ``where`` and ``key``."""
    try:
        if isinstance(v, bool):
            raise TypeError
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        raise NerfImportError(f"{where}: '{key}' must be a number, got {_show(v)}") from None
    if not math.isfinite(x):
        raise NerfImportError(f"{where}: '{key}' must be a finite number, got {_show(v)}")
    return x


def _index(v, where: str, key: str) -> int:
    """A json value as a non-negative integer (an index), else :class:`NerfImportError`."""
    n = None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, float) and v.is_integer():  # False for NaN and Inf
        n = int(v)
    elif isinstance(v, str) and v.isascii() and v.isdigit():
        n = int(v)
    if n is None or not 0 <= n < _MAX_INDEX:
        raise NerfImportError(f"{where}: '{key}' must be a non-negative integer, got {_show(v)}")
    return n


def _check_intrinsics(d: dict, where: str) -> dict[str, float]:
    """The intrinsics present in one json object (a frame or the top level), checked: finite numbers,
    ``fl_x, fl_y, w, h`` positive, ``camera_angle_x/y`` in (0, pi).  None counts as absent."""
    out = {}
    for k in INTRINSIC_KEYS:
        if d.get(k) is None:
            continue
        x = _number(d[k], where, k)
        if k in ("w", "h") and not round(x) >= 1:
            raise NerfImportError(f"{where}: '{k}' must be a positive number of pixels, got {_show(d[k])}")
        if k in ("fl_x", "fl_y") and not x > 0:
            raise NerfImportError(f"{where}: '{k}' (focal length) must be positive, got {_show(d[k])}")
        if k.startswith("camera_angle") and not 0 < x < math.pi:
            raise NerfImportError(f"{where}: '{k}' (field of view, radians) must lie in (0, pi), got {_show(d[k])}")
        out[k] = x
    return out


def _intrinsics(frame: dict, top: dict, where: str, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """K [3, 3] and the json's w, h (0 when absent) from the frame, else the top level.

    size: (W, H) of the image, used where the json gives no w / h (field of view, centred principal point).
    """
    fr, tp = _check_intrinsics(frame, where), _check_intrinsics(top, where)

    def get(k):
        return fr[k] if k in fr else tp.get(k)

    w0 = int(round(get("w"))) if get("w") is not None else 0
    h0 = int(round(get("h"))) if get("h") is not None else 0
    w, h = w0 or size[0], h0 or size[1]
    for src in (fr, tp):
        if "fl_x" in src or "fl_y" in src:
            fx = src.get("fl_x", src.get("fl_y"))
            fy = src.get("fl_y", fx)
            break
        if "camera_angle_x" in src:
            fx = 0.5 * w / math.tan(0.5 * src["camera_angle_x"])
            fy = 0.5 * h / math.tan(0.5 * src["camera_angle_y"]) if "camera_angle_y" in src else fx
            break
    else:
        raise NerfImportError(f"{where}: no intrinsics (need fl_x/fl_y or camera_angle_x, in the frame or at "
                              f"the top level)")
    cx = get("cx") if get("cx") is not None else w / 2
    cy = get("cy") if get("cy") is not None else h / 2
    if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
        raise NerfImportError(f"{where}: focal lengths must be positive and finite (fl_x={fx}, fl_y={fy})")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64), w0, h0


def _c2w(value, where: str) -> np.ndarray:
    """A frame's ``transform_matrix`` as a checked rigid [4, 4] camera-to-world (see the module doc)."""
    try:
        m = np.asarray(value, np.float64)
    except (TypeError, ValueError, OverflowError):
        m = np.zeros(0)
    if m.shape == (3, 4):
        m = np.concatenate([m, [[0, 0, 0, 1]]], 0)
    if m.shape != (4, 4):
        raise NerfImportError(f"{where}: 'transform_matrix' must be a 4x4 (or 3x4) matrix of numbers")
    if not np.all(np.isfinite(m)):
        raise NerfImportError(f"{where}: 'transform_matrix' holds non-finite values (NaN or Inf)")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise NerfImportError(f"{where}: 'transform_matrix' has bottom row {m[3].tolist()}, expected [0, 0, 0, 1]")
    R = m[:3, :3]
    orth = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if not (orth <= ROTATION_TOL and abs(det - 1.0) <= ROTATION_TOL):
        raise NerfImportError(f"{where}: 'transform_matrix' is not a rigid camera-to-world matrix (its 3x3 part "
                              f"has |R^T R - I| = {orth:.3g}, det = {det:.6g}; need a rotation within "
                              f"{ROTATION_TOL:g}, no scale)")
    return m


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s).strip(".") or "cam"


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # name too long, ...
        return False


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def _resolve_image(src: Path, rel: str) -> Path:
    p = src / rel
    if not p.suffix and not _exists(p) and _exists(p.with_name(p.name + ".png")):
        p = p.with_name(p.name + ".png")
    return p


def _inside(p: Path, src_real: Path) -> bool:
    """Whether ``p``, symlinks resolved, lies inside the (resolved) folder ``src_real``."""
    real = Path(os.path.realpath(p))
    return real == src_real or src_real in real.parents


def _frame_path(fr: dict, key: str, src: Path, src_real: Path, where: str, allow_external: bool,
                image: bool = False) -> Path | None:
    """The path a frame's ``key`` names (relative to SRC), confined to SRC unless ``allow_external``."""
    raw = fr.get(key)
    if raw is None or raw == "":
        if key == "file_path":
            raise NerfImportError(f"{where}: 'file_path' is empty")
        return None
    if not isinstance(raw, str) or "\0" in raw:
        raise NerfImportError(f"{where}: '{key}' must be a path (a string), got {_show(raw)}")
    p = _resolve_image(src, raw) if image else src / raw
    if not allow_external and not _inside(p, src_real):
        raise NerfImportError(f"{where}: {key} '{_printable(raw)}' points outside {src} (pass "
                              f"--allow-external-paths to allow it)")
    return p


def _parse_frames(src: Path, allow_external: bool = False) -> tuple[list[_SrcFrame], dict[str, dict]]:
    docs: dict[str, dict] = {}
    frames: list[_SrcFrame] = []
    src_real = Path(os.path.realpath(src))
    for div in DIVISIONS:
        jp = src / f"transforms_{div}.json"
        if not _is_file(jp):
            if div == "train":
                raise NerfImportError(f"{jp}: missing (a NeRF-style dataset needs transforms_train.json, "
                                      f"optionally transforms_val.json and transforms_test.json)")
            continue
        doc = docs[div] = _read_json(jp)
        _check_intrinsics(doc, str(jp))  # the shared intrinsics, named as the top level's
        if doc.get("fps") is not None and not _number(doc["fps"], str(jp), "fps") > 0:
            raise NerfImportError(f"{jp}: 'fps' must be positive, got {_show(doc['fps'])}")
        for i, fr in enumerate(doc["frames"]):
            where = f"{jp}: frame {i}"
            if not isinstance(fr, dict):
                raise NerfImportError(f"{where} is not an object")
            for k in ("file_path", "transform_matrix", "timestep_index"):
                if k not in fr:
                    raise NerfImportError(f"{where} lacks '{k}'")
            if fr.get("camera_index") is None and fr.get("camera_id") is None:
                raise NerfImportError(f"{where} lacks 'camera_index' / 'camera_id'")
            m = _c2w(fr["transform_matrix"], where)
            timestep = _index(fr["timestep_index"], where, "timestep_index")
            cam_id, cam_idx = fr.get("camera_id"), fr.get("camera_index")
            if cam_idx is not None:
                cam_idx = _index(cam_idx, where, "camera_index")
            image = _frame_path(fr, "file_path", src, src_real, where, allow_external, image=True)
            mask = _frame_path(fr, "fg_mask_path", src, src_real, where, allow_external)
            fpath = _frame_path(fr, "flame_param_path", src, src_real, where, allow_external)
            for p, what in ((image, "image"), (mask, "mask")):
                if p is not None and not _is_file(p):
                    raise NerfImportError(f"{jp}: frame {i} references a missing {what} {p}")
            key = ("index", cam_idx) if cam_idx is not None else ("id", str(cam_id))
            name = _safe_name(str(cam_id)) if cam_id is not None else f"{cam_idx:02d}"
            _intrinsics(fr, doc, where, (1, 1))  # fail early on missing / malformed intrinsics
            frames.append(_SrcFrame(division=div, json_path=jp, index=i, image=image, mask=mask, c2w_gl=m,
                                    raw=fr, top=doc, timestep=timestep,
                                    camera_key=key, camera_name=name, flame_path=fpath))
    return frames, docs


def _load_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    """A FLAME parameter file's arrays; the keys of FLAME_NPZ_KEYS present, numeric and finite."""
    if not _is_file(path):
        raise NerfImportError(f"{where} references a missing FLAME parameter file {path}")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            d = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # noqa: BLE001  (zip / format errors of all kinds)
        reason = _printable(f"{type(e).__name__}: {e}", 200)
        raise NerfImportError(f"{path}: unreadable FLAME parameter file ({reason})") from None
    missing = [k for k in FLAME_NPZ_KEYS if k not in d]
    if missing:
        raise NerfImportError(f"{path}: FLAME parameters lack {missing} (need {', '.join(FLAME_NPZ_KEYS)})")
    for k in FLAME_NPZ_KEYS:
        try:
            check_array(d[k], str(path), k)  # numbers, no NaN / Inf
        except InputError as e:
            raise NerfImportError(str(e)) from None
    return d


def _warn_offsets(path: Path, d: dict, warned: set) -> None:
    for k in ("static_offset", "dynamic_offset"):
        if k in d and k not in warned and d[k].dtype.kind in "biuf" and np.any(d[k] != 0):
            warnings.warn(f"{path}: '{k}' (per-vertex FLAME offsets) has no talksplat equivalent; ignored",
                          stacklevel=3)
            warned.add(k)


def _fit(a: np.ndarray, n: int, what: str, path: Path, warned: set) -> np.ndarray:
    """Pad with zeros / truncate the last axis to n."""
    if a.shape[-1] > n:
        if np.any(a[..., n:] != 0) and what not in warned:
            warnings.warn(f"{path}: '{what}' has {a.shape[-1]} coefficients, the rig {n}; the rest are dropped",
                          stacklevel=3)
            warned.add(what)
        return a[..., :n]
    pad = [(0, 0)] * (a.ndim - 1) + [(0, n - a.shape[-1])]
    return np.pad(a, pad)


def _per_step(d: dict, path: Path) -> dict[str, np.ndarray]:
    """One time step of a per-timestep npz ([1, k] or [k] arrays) -> flat arrays."""
    want = {"translation": 3, "rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6}
    out = {}
    for k, n in want.items():
        a = np.asarray(d[k], np.float64).reshape(-1)
        if a.size != n:
            raise NerfImportError(f"{path}: '{k}' has shape {list(d[k].shape)}, expected [1, {n}]")
        out[k] = a
    for k in ("expr", "shape"):
        a = np.asarray(d[k], np.float64)
        if a.ndim > 2 or (a.ndim == 2 and a.shape[0] != 1):
            raise NerfImportError(f"{path}: '{k}' has shape {list(a.shape)}, expected [1, N] or [N]")
        out[k] = a.reshape(-1)
    return out


def _find_sequence_file(src: Path) -> Path | None:
    if (src / "flame_param.npz").is_file():
        return src / "flame_param.npz"
    tracked = sorted(src.glob("tracked_flame_params*.npz"))
    if tracked:
        def epoch(p: Path) -> int:
            m = re.search(r"(\d+)$", p.stem)
            return int(m.group(1)) if m else -1
        return max(tracked, key=epoch)
    return None


def _sequence_params(path: Path, timesteps: list[int]) -> tuple[dict[int, dict], np.ndarray]:
    d = _load_npz(path, f"{path}")
    T = np.asarray(d["expr"]).shape[0] if np.asarray(d["expr"]).ndim == 2 else 0
    want = {"translation": 3, "rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6}
    for k, n in want.items():
        if d[k].ndim != 2 or d[k].shape != (T, n):
            raise NerfImportError(f"{path}: '{k}' has shape {list(d[k].shape)}, expected [T, {n}] with T = "
                                  f"{T} (the time steps of 'expr' [T, E])")
    if T <= max(timesteps):
        raise NerfImportError(f"{path}: holds {T} time steps but the frames use timestep_index up to "
                              f"{max(timesteps)}")
    shape = np.asarray(d["shape"], np.float64)
    if shape.ndim == 2 and shape.shape[0] == 1:
        shape = shape[0]
    if shape.ndim != 1:
        raise NerfImportError(f"{path}: 'shape' has shape {list(d['shape'].shape)}, expected [300] or [1, 300]")
    per = {t: {**{k: np.asarray(d[k][t], np.float64) for k in want}, "expr": np.asarray(d["expr"][t], np.float64),
               "shape": shape} for t in timesteps}
    _warn_offsets(path, d, set())
    return per, shape


def _read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """-> RGB uint8 [H, W, 3], alpha uint8 [H, W] or None, whether the file is already an 8-bit RGB PNG."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise NerfImportError(f"{path}: unreadable image")
    is_8bit = img.dtype == np.uint8
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535
    elif img.dtype != np.uint8:
        if not np.all(np.isfinite(img)):
            raise NerfImportError(f"{path}: image holds non-finite values (NaN or Inf)")
        img = np.clip(img.astype(np.float64) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255)
    img = img.astype(np.uint8)
    plain_png = False
    alpha = None
    if img.ndim == 2:
        rgb = np.repeat(img[..., None], 3, -1)
    elif img.shape[2] == 4:
        rgb, alpha = img[..., 2::-1], img[..., 3]
    elif img.shape[2] == 3:
        rgb = img[..., ::-1]
        plain_png = is_8bit and path.suffix.lower() == ".png"
    else:
        rgb = np.repeat(img[..., :1], 3, -1)
    return np.ascontiguousarray(rgb), alpha, plain_png


def _read_mask(path: Path) -> np.ndarray:
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise NerfImportError(f"{path}: unreadable mask")
    if m.ndim == 3:
        m = m[..., 3] if m.shape[2] == 4 else m[..., 0]
    if m.dtype == np.uint16:
        m = (m.astype(np.uint32) * 255 + 32767) // 65535
    elif m.dtype != np.uint8 or m.max() <= 1:
        if not np.all(np.isfinite(m)):
            raise NerfImportError(f"{path}: mask holds non-finite values (NaN or Inf)")
        m = m.astype(np.float64)
        m = m * 255.0 if m.max() <= 1.0 else m
    return np.clip(m, 0, 255).astype(np.uint8)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` when that cannot change the source, else copy its bytes.

    The dataset writer gives its files mode 0644 on commit, which a hard link would pass on to the
    source file: link only the user's own files that already have exactly that mode."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.stat(src)
        if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o644:
            raise OSError("not ours, or another mode")
        os.link(src, dst)
    except (OSError, AttributeError):
        shutil.copyfile(src, dst)


def _eye_order(rig) -> list[int]:
    """Which eyes_pose slot (FLAME joint 3 / 4) feeds the rig's left and right eye."""
    sj = getattr(rig, "semantic_joints", {})
    left, right = sj.get("eye_left", 3), sj.get("eye_right", 4)
    if {left, right} == {3, 4}:
        return [left - 3, right - 3]
    return [0, 1]


def import_nerf_dataset(src_dir: str | os.PathLike, out_dir: str | os.PathLike, rig, overwrite: bool = False,
                        copy_images: bool = True, flame_params: str | os.PathLike | None = None,
                        allow_external_paths: bool = False, rig_spec: str | None = None) -> Path:
    """A VHAP / GaussianAvatars NeRF-style folder -> a talksplat dataset at `out_dir`.

    rig: the FLAME :class:`~talksplat.rigs.HeadRig` the parameters belong to (shape and expression are
    padded / truncated to its sizes).  copy_images: re-encode every image as PNG; with False, source
    images that already are 8-bit RGB PNGs are hard-linked (same file system, owned by the user) or
    byte-copied instead.  flame_params: a FLAME file with a leading time axis for frames that have
    no ``flame_param_path`` (default: ``SRC/flame_param.npz`` or ``SRC/tracked_flame_params*.npz``).
    allow_external_paths: accept ``file_path`` / ``fg_mask_path`` / ``flame_param_path`` entries that
    lead outside SRC (absolute, ``../``, or through a symlink); by default they are refused.
    rig_spec: the spec that loads ``rig`` (:func:`talksplat.rigs.recorded_spec`), recorded in the dataset's
    ``meta.json`` so `talksplat fit` / drive / view find the rig without ``--rig``.

    Cameras: ``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)``; K from ``fl_x, fl_y, cx, cy`` (or the field of
    view).  Split: train = the time steps of transforms_train.json, heldout = those only in
    transforms_val/test.json.  Raises :class:`NerfImportError` (one line naming the file; see the
    module doc for what is checked); the source folder is only read.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise NerfImportError(f"{src}: not a directory")
    if not str(getattr(rig, "name", "")).lower().startswith("flame"):
        raise NerfImportError(f"{src}: NeRF-style datasets carry FLAME parameters; import them with the FLAME "
                              f"rig (--rig flame:PATH), not '{getattr(rig, 'name', rig)}'")
    check_output_dir(Path(out_dir), overwrite, inputs=[src])
    frames, docs = _parse_frames(src, allow_external_paths)
    if not frames:
        raise NerfImportError(f"{src / 'transforms_train.json'}: no frames")

    # ------------------------------------------------------------- de-duplicate, index
    seen: dict[tuple, _SrcFrame] = {}
    for f in frames:
        seen.setdefault((f.camera_key, f.timestep), f)  # the same image listed in two divisions: keep the first
    frames = list(seen.values())
    src_steps = sorted({f.timestep for f in frames})
    t_new = {t: i for i, t in enumerate(src_steps)}
    cam_keys = sorted({f.camera_key for f in frames}, key=lambda k: (k[0] != "index", k[1]))
    names: dict[tuple, str] = {}
    for f in frames:
        names.setdefault(f.camera_key, f.camera_name)
    used: dict[str, tuple] = {}
    for k in cam_keys:  # make camera names unique
        n, j = names[k], 1
        while n in used:
            n, j = f"{names[k]}_{j}", j + 1
        used[n] = k
        names[k] = n
    cameras = [names[k] for k in cam_keys]

    # ------------------------------------------------------------- FLAME parameters
    per: dict[int, dict] = {}
    warned: set = set()
    first_path: dict[int, Path] = {}
    for f in sorted(frames, key=lambda f: (f.timestep, DIVISIONS.index(f.division))):
        if f.flame_path is not None and f.timestep not in first_path:
            first_path[f.timestep] = f.flame_path
    for t, p in first_path.items():
        where = f"{next(f.json_path for f in frames if f.flame_path == p)}: frame of timestep {t}"
        d = _load_npz(p, where)
        _warn_offsets(p, d, warned)
        per[t] = _per_step(d, p)
    missing = [t for t in src_steps if t not in per]
    seq_path = Path(flame_params) if flame_params is not None else (_find_sequence_file(src) if missing else None)
    if missing:
        if seq_path is None:
            f0 = next(f for f in frames if f.timestep == missing[0])
            raise NerfImportError(f"{f0.json_path}: frame {f0.index} has no 'flame_param_path' and there is no "
                                  f"flame_param.npz / tracked_flame_params*.npz in {src} (pass flame_params=)")
        seq, _ = _sequence_params(seq_path, missing)
        per.update(seq)
    shape_src = per[src_steps[0]]["shape"]
    shapes = [per[t]["shape"] for t in src_steps]
    if any(s.shape != shape_src.shape or np.any(np.abs(s - shape_src) > 1e-6) for s in shapes):
        warnings.warn(f"{src}: FLAME 'shape' differs between time steps; using time step {src_steps[0]}'s",
                      stacklevel=2)
    ref = first_path.get(src_steps[0], seq_path or src)
    S, E = int(rig.num_shape), int(rig.num_expression)
    shape = _fit(shape_src, S, "shape", ref, warned)
    expr = np.stack([_fit(per[t]["expr"], E, "expr", ref, warned) for t in src_steps])
    eye = _eye_order(rig)
    params = {
        "expression": expr,
        "global_rot": np.stack([per[t]["rotation"] for t in src_steps]),
        "neck": np.stack([per[t]["neck_pose"] for t in src_steps]),
        "jaw": np.stack([per[t]["jaw_pose"] for t in src_steps]),
        "eyes": np.stack([per[t]["eyes_pose"].reshape(2, 3)[eye] for t in src_steps]),
        "translation": np.stack([per[t]["translation"] for t in src_steps]),
    }

    # ------------------------------------------------------------- split, fps
    train = sorted({t_new[f.timestep] for f in frames if f.division == "train"})
    heldout = sorted({t_new[f.timestep] for f in frames if f.division != "train"} - set(train))
    fps = next((float(docs[d]["fps"]) for d in DIVISIONS if d in docs and docs[d].get("fps") is not None),
               DEFAULT_FPS)  # checked by _parse_frames

    # ------------------------------------------------------------- images, frames
    T, C = len(src_steps), len(cameras)
    inputs = {src, *(f.image for f in frames), *(f.mask for f in frames if f.mask is not None),
              *first_path.values(), *([Path(seq_path)] if missing else [])}
    with DatasetWriter(out_dir, overwrite=overwrite, inputs=sorted(inputs)) as w:
        warned_size = False
        for f in sorted(frames, key=lambda f: (cameras.index(names[f.camera_key]), f.timestep)):
            cam, t = names[f.camera_key], t_new[f.timestep]
            rgb, alpha, plain_png = _read_image(f.image)
            H, W = rgb.shape[:2]
            K, w0, h0 = _intrinsics(f.raw, f.top, f"{f.json_path}: frame {f.index}", (W, H))
            if (w0 and w0 != W) or (h0 and h0 != H):
                if not warned_size:
                    warnings.warn(f"{f.json_path}: frame {f.index}: image {f.image} is {W}x{H}, the json says "
                                  f"{w0}x{h0}; intrinsics scaled to the image", stacklevel=2)
                    warned_size = True
                K[0] *= W / (w0 or W)
                K[1] *= H / (h0 or H)
            rel = image_name(cam, t)
            if not copy_images and plain_png:
                _link_or_copy(f.image, w.root / rel)
            else:
                w.write_image(rel, rgb)
            mask = None
            if f.mask is not None:
                m = _read_mask(f.mask)
                if m.shape != (H, W):
                    raise NerfImportError(f"{f.mask}: mask is {m.shape[1]}x{m.shape[0]}, its image {f.image} "
                                          f"is {W}x{H}")
                mask = image_name(cam, t, "masks")
                w.write_image(mask, m)
            elif alpha is not None:
                mask = image_name(cam, t, "masks")
                w.write_image(mask, alpha)
            w.add_frame(Frame(image=rel, mask=mask, K=K, c2w=f.c2w_gl @ GL_TO_CV, timestep=t, camera=cam,
                              width=W, height=H))
        w.write_rig_params(RigSequence(shape, params, source=str(src)))
        w.write_landmarks(cameras, np.zeros((C, T, NUM_LANDMARKS, 2), np.float32), np.zeros((C, T), np.float32),
                          np.zeros((C, T), bool))
        meta = {"source": str(src.resolve()), "imported_from": "nerf", "fps": fps, "rig_name": rig.name,
                "rig_checksum": rig.checksum, "num_timesteps": T, "cameras": cameras,
                "split": {"train": train, "heldout": heldout}, "source_timesteps": src_steps,
                "rig": {"name": rig.name, "checksum": rig.checksum, "spec": rig_spec}}
        if missing:
            meta["flame_params_file"] = str(Path(seq_path).resolve())
        return w.commit(meta)


# ============================================================================= export
def export_nerf_dataset(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False,
                        val_camera: str | None = "auto") -> Path:
    """A talksplat dataset -> the NeRF-style layout of VHAP's export (readable by GaussianAvatars).

    Writes transforms.json (all frames) and transforms_{train,val,test}.json split as VHAP's
    ``split_json`` does: the dataset's train time steps go to train, except the frames of
    `val_camera` ("auto": the last camera when there are several; None: no validation camera) which
    go to val; the heldout time steps (all cameras) go to test.  Images and masks are copied as
    ``images/<t:05d>_<c:02d>.png`` / ``fg_masks/...``; FLAME parameters go to
    ``flame_param/<t:05d>.npz`` (VHAP keys, [1, k] arrays, ``shape`` [S], zero ``static_offset``
    [1, 5023, 3] as GaussianAvatars expects) plus ``canonical_flame_param.npz``.  Written into a
    temporary directory and renamed into place.
    """
    ds = load_dataset(dataset_dir)
    out = Path(out_dir)
    check_output_dir(out, overwrite, inputs=[dataset_dir], kind="nerf")
    out.parent.mkdir(parents=True, exist_ok=True)
    cams = list(ds.meta.get("cameras") or [])
    for fr in ds.frames:
        if fr.camera not in cams:
            cams.append(fr.camera)
    cams = [c for c in cams if any(fr.camera == c for fr in ds.frames)]
    cam_index = {c: i for i, c in enumerate(cams)}
    if val_camera == "auto":
        val_camera = cams[-1] if len(cams) > 1 else None
    elif val_camera is not None and val_camera not in cam_index:
        raise NerfImportError(f"{ds.root}: no camera '{val_camera}' (has {cams})")
    train_t, held_t = set(ds.split.get("train", [])), set(ds.split.get("heldout", []))
    fps = float(ds.meta.get("fps", DEFAULT_FPS))
    is_flame = str(ds.meta.get("rig_name", "")).lower().startswith("flame")

    tmp = make_partial_dir(out)
    try:
        (tmp / "images").mkdir()
        (tmp / "flame_param").mkdir()
        p = ds.params
        shape = np.asarray(ds.shape, np.float32)
        static = {"static_offset": np.zeros((1, FLAME_VERTICES, 3), np.float32)} if is_flame else {}
        for t in range(ds.num_timesteps):
            np.savez(tmp / "flame_param" / f"{t:05d}.npz",
                     translation=p["translation"][[t]].astype(np.float32),
                     rotation=p["global_rot"][[t]].astype(np.float32),
                     neck_pose=p["neck"][[t]].astype(np.float32), jaw_pose=p["jaw"][[t]].astype(np.float32),
                     eyes_pose=p["eyes"][[t]].reshape(1, 6).astype(np.float32), shape=shape,
                     expr=p["expression"][[t]].astype(np.float32), **static)
        np.savez(tmp / "canonical_flame_param.npz", translation=np.zeros((1, 3), np.float32),
                 rotation=np.zeros((1, 3), np.float32), neck_pose=np.zeros((1, 3), np.float32),
                 jaw_pose=np.array([[0.3, 0, 0]], np.float32), eyes_pose=np.zeros((1, 6), np.float32),
                 shape=shape, expr=np.zeros((1, p["expression"].shape[1]), np.float32), **static)

        entries = []
        for fr in sorted(ds.frames, key=lambda fr: (fr.timestep, cam_index[fr.camera])):
            t, ci = fr.timestep, cam_index[fr.camera]
            fx, fy, cx, cy = (float(fr.K[0, 0]), float(fr.K[1, 1]), float(fr.K[0, 2]), float(fr.K[1, 2]))
            item = {
                "timestep_index": t, "timestep_index_original": t, "timestep_id": f"{t:05d}",
                "camera_index": ci, "camera_id": fr.camera,
                "cx": cx, "cy": cy, "fl_x": fx, "fl_y": fy, "h": int(fr.height), "w": int(fr.width),
                "camera_angle_x": 2 * math.atan(fr.width / (2 * fx)),
                "camera_angle_y": 2 * math.atan(fr.height / (2 * fy)),
                "transform_matrix": (np.asarray(fr.c2w, np.float64) @ GL_TO_CV).tolist(),
                "file_path": f"images/{t:05d}_{ci:02d}.png",
                "flame_param_path": f"flame_param/{t:05d}.npz",
            }
            shutil.copyfile(ds.root / fr.image, tmp / item["file_path"])
            if fr.mask is not None:
                item["fg_mask_path"] = f"fg_masks/{t:05d}_{ci:02d}.png"
                (tmp / "fg_masks").mkdir(exist_ok=True)
                shutil.copyfile(ds.root / fr.mask, tmp / item["fg_mask_path"])
            div = ("test" if t in held_t or t not in train_t else
                   "val" if fr.camera == val_camera else "train")
            entries.append((div, item))

        shared = {}
        if entries:
            last = entries[-1][1]
            shared = {k: last[k] for k in ("cx", "cy", "fl_x", "fl_y", "h", "w", "camera_angle_x", "camera_angle_y")}

        def doc(items, steps, cam_ids):
            return {**shared, "fps": fps, "timestep_indices": sorted(steps), "camera_indices": sorted(cam_ids),
                    "frames": items}

        all_items = [it for _, it in entries]
        docs = {None: doc(all_items, {it["timestep_index"] for it in all_items}, cam_index.values())}
        train_cams = [cam_index[c] for c in cams if c != val_camera]
        docs["train"] = doc([it for d, it in entries if d == "train"], train_t, train_cams)
        docs["val"] = doc([it for d, it in entries if d == "val"], train_t,
                          [cam_index[val_camera]] if val_camera is not None else [])
        docs["test"] = doc([it for d, it in entries if d == "test"], set(range(ds.num_timesteps)) - train_t,
                           cam_index.values())
        for div, d in docs.items():
            name = "transforms.json" if div is None else f"transforms_{div}.json"
            (tmp / name).write_text(json.dumps(d, indent=1))
        write_marker(tmp, "nerf")
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
