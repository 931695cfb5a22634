"""The talksplat dataset on disk: what `talksplat prep` writes and `talksplat fit` reads.

Layout (documented for users in docs/formats.md)::

    DATASET/
      meta.json          format name + version, source files, fps, rig id + checksum, split, ...
      transforms.json    one entry per image: paths, K [3, 3] px, c2w [4, 4] (OpenCV camera-to-world),
                         timestep, camera id, width, height
      images/<cam>/<t>.png   RGB uint8
      masks/<cam>/<t>.png    foreground, uint8 0..255
      rig_params.npz     the tracked rig parameters: a RigSequence file (talksplat.rigs.sequence;
                         shape [S], expression [T, E], global_rot / neck / jaw [T, 3], eyes [T, 2, 3],
                         translation [T, 3]; axis-angle radians, metres, world frame)
      landmarks.npz      cameras [C] str, points [C, T, 478, 2] px in the dataset images,
                         confidence [C, T] in [0, 1] (0 = no detection), interpolated [C, T] bool
      audio.wav          16 kHz mono PCM (absent when the video had no audio)
      plate.png          monocular: the source frame without the head (background, torso), RGB uint8 at the
                         size meta.json's ``source_frame`` gives; plate_observed.png: 255 where it was seen
      plate_background.png   monocular: the source frame without the whole person (background only; what the
                             person covers in every sampled frame inpainted), the plate of a fit with
                             torso Gaussians; plate_background_observed.png: 255 where it was seen
      frames/<cam>/<t>.png   monocular: whole source frames: the held-out time steps' (full-frame evaluation) and
                             up to --source-frames training steps' (the torso's whole-frame supervision)
      frame_masks/<cam>/<t>.png  monocular: those training frames' person masks

Everything is written into a temporary sibling directory by :class:`DatasetWriter` and renamed into
place by :meth:`DatasetWriter.commit`, so an interrupted prep never leaves a dataset that looks whole.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talksplat.core import outputs
from talksplat.core.checks import check_array
from talksplat.core.errors import InputError
from talksplat.core.files import commit_dir, json_text, make_partial_dir
from talksplat.rigs.sequence import RigSequence

FORMAT_NAME = "talksplat-dataset"
FORMAT_VERSION = 1
CAMERA_CONVENTION = "OpenCV camera-to-world: camera x right, y down, z forward; world metres, right-handed"


#: The plate (:mod:`talksplat.data_prep.plate`) and the mask of where it was observed, in a monocular dataset.
PLATE = "plate.png"
PLATE_OBSERVED = "plate_observed.png"
#: The person-free plate (background only) and where it was observed.
BACKGROUND_PLATE = "plate_background.png"
BACKGROUND_PLATE_OBSERVED = "plate_background_observed.png"


class DatasetError(InputError):
    """A dataset that cannot be written or read; the message names the path and the problem."""


def is_dataset(path: Path) -> bool:
    return (Path(path) / "meta.json").is_file()


@dataclass
class Frame:
    """One image of the dataset.

    image / mask: paths relative to the dataset root.  K: [3, 3] pixels.  c2w: [4, 4] OpenCV
    camera-to-world, metres.  timestep: index into the rig parameters.  camera: camera id.
    """

    image: str
    mask: str | None
    K: np.ndarray
    c2w: np.ndarray
    timestep: int
    camera: str
    width: int
    height: int

    def to_json(self) -> dict:
        return {"image": self.image, "mask": self.mask, "timestep": int(self.timestep), "camera": self.camera,
                "width": int(self.width), "height": int(self.height),
                "K": np.asarray(self.K, float).tolist(), "c2w": np.asarray(self.c2w, float).tolist()}

    @staticmethod
    def from_json(d: dict) -> "Frame":
        return Frame(image=d["image"], mask=d.get("mask"), K=np.asarray(d["K"], np.float64),
                     c2w=np.asarray(d["c2w"], np.float64), timestep=int(d["timestep"]), camera=str(d["camera"]),
                     width=int(d["width"]), height=int(d["height"]))

    @property
    def viewmat(self) -> np.ndarray:
        """[4, 4] world-to-camera (OpenCV), the rasterizer's `viewmats` entry."""
        return np.linalg.inv(self.c2w)


def image_name(camera: str, timestep: int, kind: str = "images") -> str:
    return f"{kind}/{camera}/{timestep:05d}.png"


#: A held-out segment has at least this many time steps where the clip allows (at most :data:`HELDOUT_MAX_SHARE`
#: of it): fewer make a noisy figure.
HELDOUT_MIN_STEPS = 50
HELDOUT_MAX_SHARE = 0.2


def default_split(num_timesteps: int, heldout_fraction: float = 0.1) -> dict[str, list[int]]:
    """A contiguous held-out segment at the end of the clip: the last ``heldout_fraction`` of the time steps, and at
    least :data:`HELDOUT_MIN_STEPS` (or :data:`HELDOUT_MAX_SHARE` of the clip when that is fewer); at least one
    when T >= 2.  ``heldout_fraction`` 0 holds nothing out."""
    n_held = int(round(num_timesteps * heldout_fraction))
    if heldout_fraction > 0:
        n_held = max(n_held, min(HELDOUT_MIN_STEPS, int(num_timesteps * HELDOUT_MAX_SHARE)))
    if num_timesteps >= 2:
        n_held = max(1, n_held)
    cut = num_timesteps - n_held
    return {"train": list(range(cut)), "heldout": list(range(cut, num_timesteps))}


def check_output_dir(out: Path, overwrite: bool, inputs=(), kind: str = "dataset") -> None:
    """Refuse ``out`` unless it is new or empty, or (with ``overwrite``) a talksplat dataset holding
    nothing else and none of ``inputs`` (see :mod:`talksplat.core.outputs`)."""
    outputs.check_output_dir(out, kind, overwrite, inputs)


class DatasetWriter:
    """Writes a dataset into a temporary directory beside `out`; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block with an exception (Ctrl-C included) removes the
    temporary directory.  ``inputs``: the files the dataset is made from (never inside ``out``).
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, inputs=()):
        self.out = Path(out)
        check_output_dir(self.out, overwrite, inputs)
        self.root = make_partial_dir(self.out)
        self.frames: list[Frame] = []
        self._committed = False

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            shutil.rmtree(self.root, ignore_errors=True)

    # -------------------------------------------------------------- content
    def write_image(self, rel: str, image: np.ndarray) -> None:
        """[H, W, 3] uint8 RGB or [H, W] uint8 grey -> PNG at `rel` (fast compression)."""
        import cv2

        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = image if image.ndim == 2 else image[..., ::-1]  # cv2 wants BGR
        if not cv2.imwrite(str(path), np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise DatasetError(f"{path}: could not write image")

    def add_frame(self, frame: Frame) -> None:
        self.frames.append(frame)

    def write_rig_params(self, params: RigSequence) -> None:
        """The tracked parameters as rig_params.npz (checked: every field, one T, all finite)."""
        bad = [k for k, v in (("shape", params.shape), *params.frames.items()) if not np.all(np.isfinite(v))]
        if bad:
            raise DatasetError(f"{self.out}: the tracked rig parameters {bad} hold non-finite values (tracking "
                               "diverged); nothing was written")
        try:
            params.validate()
        except InputError as e:
            raise DatasetError(f"{self.out}: the tracked rig parameters are unusable ({e}); nothing was written") \
                from None
        params.save(self.root / "rig_params.npz")

    def write_landmarks(self, cameras: list[str], points: np.ndarray, confidence: np.ndarray,
                        interpolated: np.ndarray) -> None:
        """points [C, T, L, 2] px; confidence [C, T]; interpolated [C, T] bool."""
        np.savez(self.root / "landmarks.npz", cameras=np.asarray(cameras), points=points.astype(np.float32),
                 confidence=confidence.astype(np.float32), interpolated=interpolated.astype(bool))

    def write_json(self, name: str, obj: dict) -> None:
        (self.root / name).write_text(json_text(obj))

    def commit(self, meta: dict) -> Path:
        """Write transforms.json, meta.json and the marker, then atomically move the dataset into place."""
        self.write_json("transforms.json", {"camera_convention": CAMERA_CONVENTION,
                                            "frames": [fr.to_json() for fr in self.frames]})
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **meta}
        self.write_json("meta.json", meta)
        outputs.write_marker(self.root, "dataset")
        commit_dir(self.root, self.out)
        self._committed = True
        return self.out


@dataclass
class SourceFrame:
    """The whole source frame of a monocular dataset, as meta.json's ``source_frame`` records it.

    width, height: px (the source video scaled to at most ``plate.MAX_SIDE``).  K: [3, 3] px of that frame;
    c2w: [4, 4] OpenCV camera-to-world, metres (the dataset's camera; its crops share it).  plate: path of the
    plate image relative to the dataset root.  frames: time step -> relative path of a whole frame (every held-out
    step, and the training steps prep kept for whole-frame supervision).  masks: time step -> relative path of
    such a training frame's person mask (selfie segmentation, 8 bit).  background_plate: path of the
    person-free plate, or None (datasets prepared before it).
    """

    width: int
    height: int
    K: np.ndarray
    c2w: np.ndarray
    plate: str
    frames: dict[int, str]
    masks: dict[int, str] = field(default_factory=dict)
    background_plate: str | None = None

    @property
    def viewmat(self) -> np.ndarray:
        """[4, 4] world-to-camera (OpenCV)."""
        return np.linalg.inv(self.c2w)

    @staticmethod
    def from_meta(d: object, root: Path) -> "SourceFrame":
        where = f"{root}/meta.json: source_frame"
        if not isinstance(d, dict) or not {"width", "height", "K", "c2w", "plate"} <= set(d):
            raise DatasetError(f"{where}: expected an object with width, height, K, c2w and plate")
        try:
            K = check_array(np.asarray(d["K"], np.float64), where, "K", (3, 3))
            c2w = check_array(np.asarray(d["c2w"], np.float64), where, "c2w", (4, 4))
            width, height = int(d["width"]), int(d["height"])
            frames = {int(t): _inside(root, rel, where) for t, rel in dict(d.get("frames", {})).items()}
            masks = {int(t): _inside(root, rel, where) for t, rel in dict(d.get("frame_masks", {})).items()}
            bg = d.get("background_plate")
            bg = None if bg is None else _inside(root, bg, where)
        except (TypeError, ValueError) as e:
            if isinstance(e, InputError):
                raise DatasetError(str(e)) from None
            raise DatasetError(f"{where}: width, height, K, c2w and frames must be numbers and paths") from None
        if width < 2 or height < 2 or not (K[0, 0] > 0 and K[1, 1] > 0):
            raise DatasetError(f"{where}: size {width}x{height} or focal length is not positive")
        return SourceFrame(width=width, height=height, K=K, c2w=c2w, plate=_inside(root, d["plate"], where),
                           frames=frames, masks=masks, background_plate=bg)


@dataclass
class Dataset:
    """A dataset read back from disk (images are loaded on demand).

    ``rig_params``: the tracked parameters (rig_params.npz), T time steps; ``shape`` [S] and ``params``
    (frame field -> [T, ...]) are views of it."""

    root: Path
    meta: dict
    frames: list[Frame]
    rig_params: RigSequence
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> np.ndarray:
        return self.rig_params.shape

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.rig_params.frames

    @property
    def num_timesteps(self) -> int:
        return len(self.rig_params)

    @property
    def split(self) -> dict[str, list[int]]:
        return self.meta["split"]

    @property
    def audio_path(self) -> Path | None:
        a = self.meta.get("audio")
        return self.root / a if a else None

    @functools.cached_property
    def source_frame(self) -> SourceFrame | None:
        """The whole source frame (plate, camera, held-out frames) of a monocular prep; None for older, imported
        or multi-view datasets (they have only their images).  Parsed from meta.json once."""
        d = self.meta.get("source_frame")
        return None if d is None else SourceFrame.from_meta(d, self.root)

    def load_plate(self, person_free: bool = False) -> np.ndarray:
        """[H, W, 3] uint8 RGB: the plate at :attr:`source_frame`'s size; with ``person_free`` the background-only
        plate (no torso in it)."""
        sf = self.source_frame
        if sf is None:
            raise DatasetError(f"{self.root}: no plate (prepare the video again with `talksplat prep`)")
        if person_free and sf.background_plate is None:
            raise DatasetError(f"{self.root}: no person-free plate (prepare the video again with this version "
                               "of `talksplat prep`)")
        return _read_png(self.root / (sf.background_plate if person_free else sf.plate), color=True)

    def load_source_frame(self, timestep: int) -> np.ndarray | None:
        """[H, W, 3] uint8 RGB: the whole source frame of a time step, or None when not kept."""
        sf = self.source_frame
        rel = None if sf is None else sf.frames.get(int(timestep))
        return None if rel is None else _read_png(self.root / rel, color=True)

    def load_source_mask(self, timestep: int) -> np.ndarray | None:
        """[H, W] float32 in [0, 1]: the person mask of a training step's whole frame, or None when not kept."""
        sf = self.source_frame
        rel = None if sf is None else sf.masks.get(int(timestep))
        return None if rel is None else _read_png(self.root / rel, color=False).astype(np.float32) / 255.0

    def load_image(self, frame: Frame) -> np.ndarray:
        """[H, W, 3] uint8 RGB."""
        return _read_png(self.root / frame.image, color=True)

    def load_mask(self, frame: Frame) -> np.ndarray | None:
        """[H, W] uint8, or None when the frame has no mask."""
        return None if frame.mask is None else _read_png(self.root / frame.mask, color=False)


def _read_png(path: Path, color: bool) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DatasetError(f"{path}: missing or unreadable image")
    return img[..., ::-1].copy() if color else img


def _inside(root: Path, rel: object, where: str) -> str:
    """A path stored in the dataset: relative, and inside the dataset folder."""
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{where}: expected a relative path, got {rel!r}")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise DatasetError(f"{where}: path {rel!r} points outside the dataset folder")
    return rel


def _frame(d: object, root: Path, where: str) -> Frame:
    """One transforms.json entry, checked: paths inside the dataset, finite K with positive focal
    lengths, a finite rigid c2w, positive size, an integer time step."""
    if not isinstance(d, dict):
        raise DatasetError(f"{where}: not an object")
    missing = [k for k in ("image", "K", "c2w", "timestep", "camera", "width", "height") if k not in d]
    if missing:
        raise DatasetError(f"{where}: lacks {missing}")
    try:
        K = check_array(np.asarray(d["K"], np.float64), where, "K", (3, 3))
        c2w = check_array(np.asarray(d["c2w"], np.float64), where, "c2w", (4, 4))
        width, height, timestep = int(d["width"]), int(d["height"]), int(d["timestep"])
    except (TypeError, ValueError) as e:
        if isinstance(e, InputError):
            raise DatasetError(str(e)) from None
        raise DatasetError(f"{where}: K, c2w, width, height and timestep must be numbers") from None
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise DatasetError(f"{where}: K has non-positive focal lengths ({K[0, 0]:g}, {K[1, 1]:g})")
    R = c2w[:3, :3]
    if not np.allclose(c2w[3], [0, 0, 0, 1]) or not np.allclose(R @ R.T, np.eye(3), atol=1e-3) \
            or np.linalg.det(R) < 0:
        raise DatasetError(f"{where}: c2w is not a rigid camera-to-world transform")
    if width < 1 or height < 1:
        raise DatasetError(f"{where}: size {width}x{height} is not positive")
    mask = d.get("mask")
    return Frame(image=_inside(root, d["image"], where), mask=None if mask is None else _inside(root, mask, where),
                 K=K, c2w=c2w, timestep=timestep, camera=str(d["camera"]), width=width, height=height)


def load_metadata(root: str | os.PathLike) -> tuple[dict, list[Frame]]:
    """Only meta.json and transforms.json (cameras, no images or parameters): ``(meta, frames)``;
    checks the format, version and every camera like :func:`load_dataset`."""
    root = Path(root)
    if not is_dataset(root):
        raise DatasetError(f"{root}: not a talksplat dataset (no meta.json); make one with `talksplat prep`")
    try:
        meta = json.loads((root / "meta.json").read_text())
        tr = json.loads((root / "transforms.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{root}: unreadable dataset metadata ({e})") from None
    if not isinstance(meta, dict) or not isinstance(tr, dict) or not isinstance(tr.get("frames"), list):
        raise DatasetError(f"{root}: meta.json and transforms.json must be objects (transforms.json with a "
                           "'frames' list)")
    if meta.get("format") != FORMAT_NAME:
        raise DatasetError(f"{root}/meta.json: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    try:
        version = int(meta.get("version", -1))
    except (TypeError, ValueError):
        raise DatasetError(f"{root}/meta.json: 'version' must be a number") from None
    if version > FORMAT_VERSION:
        raise DatasetError(f"{root}/meta.json: dataset version {meta.get('version')} is newer than this "
                           f"talksplat reads ({FORMAT_VERSION}); upgrade talksplat")
    fps = meta.get("fps", 25.0)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (0 < fps < 1e4):
        raise DatasetError(f"{root}/meta.json: 'fps' must be a positive number, not {fps!r}")
    frames = [_frame(d, root, f"{root}/transforms.json: frame {i}") for i, d in enumerate(tr["frames"])]
    if not frames:
        raise DatasetError(f"{root}/transforms.json: no frames")
    return meta, frames


def first_training_frame(meta: dict, frames: list[Frame]) -> Frame:
    """The first frame of a training time step (the first frame when the split is empty)."""
    train = set(meta.get("split", {}).get("train", []))
    return next((f for f in frames if not train or f.timestep in train), frames[0])


def _rig_params(path: Path) -> RigSequence:
    """rig_params.npz, checked: every field present, shapes ``[T, ...]`` with one T, all finite."""
    if not path.is_file():
        raise DatasetError(f"{path.parent}: incomplete dataset (no {path.name}, the tracked rig parameters)")
    try:
        return RigSequence.load(path)
    except InputError as e:
        raise DatasetError(str(e)) from None


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read meta.json, transforms.json, rig_params.npz and landmarks.npz; check the format version, every
    camera, the parameters' shapes and finiteness, and that frames and split name existing time steps."""
    root = Path(root)
    meta, frames = load_metadata(root)
    rig_params = _rig_params(root / "rig_params.npz")
    T = len(rig_params)
    for i, f in enumerate(frames):
        if not 0 <= f.timestep < T:
            raise DatasetError(f"{root}/transforms.json: frame {i} has timestep {f.timestep}, but "
                               f"rig_params.npz holds {T} time steps")
    split = meta.get("split", {"train": list(range(T)), "heldout": []})
    if not isinstance(split, dict) or not all(isinstance(split.get(k, []), list) and
                                              all(isinstance(t, int) and 0 <= t < T for t in split.get(k, []))
                                              for k in ("train", "heldout")):
        raise DatasetError(f"{root}/meta.json: 'split' must hold lists of time steps in 0..{T - 1}")
    meta.setdefault("split", split)
    landmarks = {}
    if (root / "landmarks.npz").is_file():
        path = root / "landmarks.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                landmarks = {k: z[k] for k in z.files}
            pts = check_array(landmarks["points"], str(path), "points", (None, None, None, 2))
            check_array(landmarks["confidence"], str(path), "confidence", pts.shape[:2])
        except InputError as e:
            raise DatasetError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - damaged zip, missing keys
            raise DatasetError(f"{path}: not a readable landmarks file ({type(e).__name__})") from None
    return Dataset(root=root, meta=meta, frames=frames, rig_params=rig_params, landmarks=landmarks)


def check_files(ds: Dataset) -> None:
    """Every image and mask the frames name exists and is not empty (cheap: one stat each); raises
    :class:`DatasetError` naming the first that is not."""
    for f in ds.frames:
        for rel in (f.image, f.mask):
            if rel is None:
                continue
            try:
                ok = (ds.root / rel).stat().st_size > 0
            except OSError:
                ok = False
            if not ok:
                raise DatasetError(f"{ds.root / rel}: missing or empty (the dataset is incomplete; prepare it again "
                                   "with `talksplat prep`)")
