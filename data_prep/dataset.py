"""The talksplat dataset on disk: what `talksplat prep` writes and `talksplat fit` reads.

Layout (documented for users in docs/formats.md)::

    DATASET/
      meta.json          format name + version, source files, fps, rig id + checksum, split, ...
      transforms.json    one entry per image: paths, K [3, 3] px, c2w [4, 4] (OpenCV camera-to-world),
                         timestep, camera id, width, height
      images/<cam>/<t>.png   RGB uint8
      masks/<cam>/<t>.png    foreground, uint8 0..255
      rig_params.npz     shape [S] (shared), expression [T, E], global_rot / neck / jaw [T, 3],
                         eyes [T, 2, 3], translation [T, 3] (axis-angle radians, metres, world frame)
      landmarks.npz      cameras [C] str, points [C, T, 478, 2] px in the dataset images,
                         confidence [C, T] in [0, 1] (0 = no detection), interpolated [C, T] bool
      audio.wav          16 kHz mono PCM (absent when the video had no audio)

Everything is written into a temporary sibling directory by :class:`DatasetWriter` and renamed into
place by :meth:`DatasetWriter.commit`, so an interrupted prep never leaves a dataset that looks whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_NAME = "talksplat-dataset"
FORMAT_VERSION = 1
CAMERA_CONVENTION = "OpenCV camera-to-world: camera x right, y down, z forward; world metres, right-handed"
RIG_PARAM_KEYS = ("expression", "global_rot", "neck", "jaw", "eyes", "translation")


class DatasetError(Exception):
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


def default_split(num_timesteps: int, heldout_fraction: float = 0.1) -> dict[str, list[int]]:
    """The last `heldout_fraction` of time steps (at least one when T >= 2) are held out."""
    n_held = int(round(num_timesteps * heldout_fraction))
    if num_timesteps >= 2:
        n_held = max(1, n_held)
    cut = num_timesteps - n_held
    return {"train": list(range(cut)), "heldout": list(range(cut, num_timesteps))}


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write over an existing dataset or a non-empty directory unless `overwrite`."""
    out = Path(out)
    if out.exists() and not overwrite:
        if is_dataset(out):
            raise DatasetError(f"{out}: already holds a dataset (pass --overwrite to replace it)")
        if out.is_file() or any(out.iterdir()):
            raise DatasetError(f"{out}: exists and is not empty (pass --overwrite to replace it)")


class DatasetWriter:
    """Writes a dataset into a temporary directory beside `out`; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block with an exception removes the temporary directory.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        self.out = Path(out)
        check_output_dir(self.out, overwrite)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
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

    def write_rig_params(self, shape: np.ndarray, params: dict[str, np.ndarray]) -> None:
        """shape [S]; params: the RIG_PARAM_KEYS arrays, leading dimension T."""
        missing = [k for k in RIG_PARAM_KEYS if k not in params]
        if missing:
            raise DatasetError(f"rig parameters lack {missing}")
        arrays = {k: np.asarray(params[k], np.float32) for k in RIG_PARAM_KEYS}
        np.savez(self.root / "rig_params.npz", shape=np.asarray(shape, np.float32), **arrays)

    def write_landmarks(self, cameras: list[str], points: np.ndarray, confidence: np.ndarray,
                        interpolated: np.ndarray) -> None:
        """points [C, T, L, 2] px; confidence [C, T]; interpolated [C, T] bool."""
        np.savez(self.root / "landmarks.npz", cameras=np.asarray(cameras), points=points.astype(np.float32),
                 confidence=confidence.astype(np.float32), interpolated=interpolated.astype(bool))

    def write_json(self, name: str, obj: dict) -> None:
        with open(self.root / name, "w") as f:
            json.dump(obj, f, indent=1)

    def commit(self, meta: dict) -> Path:
        """Write transforms.json and meta.json, then atomically move the dataset into place."""
        self.write_json("transforms.json", {"camera_convention": CAMERA_CONVENTION,
                                            "frames": [fr.to_json() for fr in self.frames]})
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **meta}
        self.write_json("meta.json", meta)
        for p in self.root.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(self.root, 0o755)
        if self.out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.replace(self.out, trash / "old")
            os.replace(self.root, self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.root, self.out)
        self._committed = True
        return self.out


@dataclass
class Dataset:
    """A dataset read back from disk (images are loaded on demand)."""

    root: Path
    meta: dict
    frames: list[Frame]
    shape: np.ndarray
    params: dict[str, np.ndarray]
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_timesteps(self) -> int:
        return int(self.params["expression"].shape[0])

    @property
    def split(self) -> dict[str, list[int]]:
        return self.meta["split"]

    @property
    def audio_path(self) -> Path | None:
        a = self.meta.get("audio")
        return self.root / a if a else None

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


def load_metadata(root: str | os.PathLike) -> tuple[dict, list[Frame]]:
    """Only meta.json and transforms.json (cameras, no images or parameters): ``(meta, frames)``;
    checks the format and version like :func:`load_dataset`."""
    root = Path(root)
    if not is_dataset(root):
        raise DatasetError(f"{root}: not a talksplat dataset (no meta.json); make one with `talksplat prep`")
    try:
        meta = json.loads((root / "meta.json").read_text())
        tr = json.loads((root / "transforms.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{root}: unreadable dataset metadata ({e})") from None
    if meta.get("format") != FORMAT_NAME:
        raise DatasetError(f"{root}/meta.json: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if int(meta.get("version", -1)) > FORMAT_VERSION:
        raise DatasetError(f"{root}/meta.json: dataset version {meta.get('version')} is newer than this "
                           f"talksplat reads ({FORMAT_VERSION}); upgrade talksplat")
    return meta, [Frame.from_json(d) for d in tr["frames"]]


def first_training_frame(meta: dict, frames: list[Frame]) -> Frame:
    """The first frame of a training time step (the first frame when the split is empty)."""
    train = set(meta.get("split", {}).get("train", []))
    return next((f for f in frames if not train or f.timestep in train), frames[0])


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read meta.json, transforms.json, rig_params.npz and landmarks.npz; check the format version."""
    root = Path(root)
    meta, frames = load_metadata(root)
    with np.load(root / "rig_params.npz") as z:
        shape = z["shape"]
        params = {k: z[k] for k in RIG_PARAM_KEYS}
    landmarks = {}
    if (root / "landmarks.npz").is_file():
        with np.load(root / "landmarks.npz") as z:
            landmarks = {k: z[k] for k in z.files}
    return Dataset(root=root, meta=meta, frames=frames, shape=shape, params=params, landmarks=landmarks)
