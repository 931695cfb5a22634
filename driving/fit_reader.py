"""The one reader of a fit folder (`talksplat fit --out DIR`): drive, eval sync, the viewer, the demo.

    fit = open_fit("avatar/", need_predictor=True)   # avatar header, audio predictor, tuned parameters, camera
    fit.predictor, fit.tracked, fit.camera, fit.load_avatar(rig)

The names of its files and its one writer are in :mod:`talksplat.fitting.fit_folder`; speech -> a
sequence for the avatar is :mod:`talksplat.driving.animate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talksplat.avatar.io import AvatarFileError, read_header
from talksplat.core.errors import InputError, OptionError
from talksplat.data_prep.dataset import (DatasetError, Frame, SourceFrame, first_training_frame, is_dataset,
                                         load_metadata)
from talksplat.fitting import fit_folder
from talksplat.rigs.sequence import RigSequence

from .predictor import AudioPredictor, load_predictor


@dataclass(eq=False)
class FitFolder:
    """A fit folder (`talksplat fit --out DIR`, or an avatar file on its own), as :func:`open_fit` reads it.

    The avatar's header and its dataset's metadata are read when the folder is opened; the audio predictor
    and the tuned parameters when first used (:attr:`predictor`, :attr:`tuned`, :attr:`tracked`), each with a
    one-line error naming the file that is missing or damaged.  File names: :mod:`talksplat.fitting.fit_folder`.

    Attributes:
        avatar_file: DIR/avatar.safetensors (or the avatar file given).
        fit_dir: the folder holding it (DIR).
        header: the avatar's JSON header (rig name and checksum, the dataset it was fitted on).
        avatar: the avatar, loaded and checked against the rig :func:`open_fit` was given (else None).
        dataset: the dataset the avatar was fitted on (as recorded in its header), or None.
        dataset_meta: that dataset's meta.json, or None when it is not at its recorded path or unreadable
            (:attr:`dataset_problem` says which).
        camera: the dataset's first training frame (its ``c2w`` [4, 4] OpenCV metres, ``K`` [3, 3]
            pixels, ``width``, ``height``), or None.
        dataset_problem: why the recorded dataset could not be read ("dataset D not found", ...), or None.
    """

    avatar_file: Path
    fit_dir: Path
    header: dict
    avatar: object | None = None
    dataset: Path | None = None
    dataset_meta: dict | None = None
    camera: Frame | None = None
    dataset_problem: str | None = None
    _predictor: AudioPredictor | None = field(default=None, repr=False)
    _tuned: RigSequence | None = field(default=None, repr=False)
    _tracked: RigSequence | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ files
    @property
    def predictor_file(self) -> Path:
        return fit_folder.path(self.fit_dir, fit_folder.DRIVER)

    @property
    def tuned_file(self) -> Path:
        return fit_folder.path(self.fit_dir, fit_folder.TUNED)

    @property
    def has_source_frame(self) -> bool:
        """Whether the avatar was fitted over a plate (DIR/plate.png and DIR/source_frame.json)."""
        return (self.fit_dir / fit_folder.PLATE).is_file() and (self.fit_dir / fit_folder.SOURCE_FRAME).is_file()

    def source_frame(self) -> tuple[SourceFrame, np.ndarray]:
        """The source frame the avatar was fitted in (size, camera) and its plate [H, W, 3] uint8 RGB; one-line
        AvatarFileError naming the file when missing or damaged."""
        import json

        import cv2

        meta_file, plate_file = self.fit_dir / fit_folder.SOURCE_FRAME, self.fit_dir / fit_folder.PLATE
        try:
            d = json.loads(meta_file.read_text())
            sf = SourceFrame.from_meta({**d, "plate": fit_folder.PLATE}, self.fit_dir)
        except (OSError, ValueError, DatasetError) as e:
            raise AvatarFileError(f"{meta_file}: unreadable ({e})") from None
        plate = cv2.imread(str(plate_file), cv2.IMREAD_COLOR)
        if plate is None or plate.shape[:2] != (sf.height, sf.width):
            raise AvatarFileError(f"{plate_file}: missing, unreadable or not {sf.width}x{sf.height} "
                                  f"(as {meta_file.name} says)")
        return sf, np.ascontiguousarray(plate[..., ::-1])

    @property
    def has_predictor(self) -> bool:
        """Whether DIR holds an audio predictor (it is not read here)."""
        return self.predictor_file.is_file()

    @property
    def has_tuned(self) -> bool:
        """Whether DIR holds tuned parameters (a fit's output rather than a bare avatar file)."""
        return self.tuned_file.is_file()

    # ------------------------------------------------------------------ contents
    def load_avatar(self, rig):
        """The avatar, checked whole against ``rig`` (:class:`AvatarFileError` naming the file)."""
        from talksplat.avatar.io import load_avatar

        return load_avatar(self.avatar_file, rig=rig)

    @property
    def predictor(self) -> AudioPredictor:
        """The audio predictor (DIR/driver.safetensors), trained beside this avatar; :class:`PredictorFileError`
        naming the file when it is missing, damaged, or another avatar's."""
        if self._predictor is None:
            self._predictor = load_predictor(self.predictor_file, rig_checksum=self.header["rig_checksum"],
                                       avatar=self.avatar_file)
        return self._predictor

    @property
    def tuned(self) -> RigSequence:
        """Every time step's fit-tuned parameters (DIR/tuned_params.npz, extras such as ``original_*`` kept),
        checked (every field, one T, all finite); :class:`AvatarFileError` naming the file when missing or damaged."""
        if self._tuned is None:
            self._tuned = read_tuned(self.tuned_file)
        return self._tuned

    @property
    def tracked(self) -> RigSequence:
        """The training time steps' tuned parameters (no extras): the head motion to drive with."""
        if self._tracked is None:
            tuned = self.tuned
            tracked = RigSequence(tuned.shape, tuned.frames, {}, tuned.source)  # the unused original_* dropped
            meta = self.dataset_meta
            if meta is not None:
                train = set(meta.get("split", {}).get("train", []))
                dropped = set(meta.get("dropped_timesteps", []))
                keep = [t for t in range(len(tracked)) if (not train or t in train) and t not in dropped]
                if keep:
                    tracked = tracked[keep]
            self._tracked = tracked
        return self._tracked

    @property
    def dataset_fps(self) -> float | None:
        """The training video's frame rate, when its dataset was read."""
        fps = self.dataset_meta.get("fps") if self.dataset_meta is not None else None
        return float(fps) if fps else None

    @property
    def fps(self) -> float:
        """The training video's frame rate (the dataset's, else the one the predictor was trained at)."""
        fps = self.dataset_fps
        return fps if fps is not None else self.predictor.fps

    @property
    def dataset_audio(self) -> Path | None:
        """The dataset's audio.wav (the training clip's sound) when it is there."""
        name = self.dataset_meta.get("audio") if self.dataset_meta is not None else None
        return self.dataset / name if name and (self.dataset / name).is_file() else None

    @property
    def rig_spec(self) -> str | None:
        """The rig spec the dataset was tracked with, when known."""
        rig = self.dataset_meta.get("rig") if self.dataset_meta is not None else None
        return rig.get("spec") if isinstance(rig, dict) else None


def fit_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(fit folder, avatar file) of a fit folder or of its avatar file; AvatarFileError when neither."""
    path = Path(path)
    if path.is_dir():
        fit_dir, avatar_file = path, fit_folder.path(path, fit_folder.AVATAR)
    elif not path.exists():
        raise AvatarFileError(f"{path}: avatar not found (not a fit folder or avatar file); "
                              "make one with `talksplat fit DATASET --out DIR`")
    else:
        fit_dir, avatar_file = path.parent, path
    if not avatar_file.is_file():
        raise AvatarFileError(f"{path}: not a fit folder or avatar file (no {avatar_file.name}); "
                              "make one with `talksplat fit DATASET --out DIR`")
    return fit_dir, avatar_file


def fit_files(fit_dir: Path, avatar_file: Path) -> list[Path]:
    """The files of a fit that driving reads (never to be overwritten by its outputs)."""
    return [avatar_file, fit_folder.path(fit_dir, fit_folder.DRIVER), fit_folder.path(fit_dir, fit_folder.TUNED)]


def _read_dataset(header: dict) -> tuple[Path | None, dict | None, list[Frame], str | None]:
    """(recorded dataset, its metadata, its frames, why it could not be read) of the avatar with this header;
    the metadata is None when the dataset moved or is damaged (driving and viewing go on without its camera)."""
    extra = header.get("extra") if isinstance(header.get("extra"), dict) else {}
    dataset = extra.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        return None, None, [], None
    dataset = Path(dataset)
    if not is_dataset(dataset):
        return dataset, None, [], f"dataset {dataset} not found"
    try:
        meta, frames = load_metadata(dataset)
    except (OSError, ValueError, KeyError, IndexError, TypeError, DatasetError) as e:
        return dataset, None, [], f"{dataset}: cannot read the training cameras ({e})"
    return dataset, meta, frames, None


def fit_rig_spec(header: dict) -> str | None:
    """The rig spec of the avatar with this header, from its dataset; else the built-in rig it names
    (:func:`talksplat.rigs.builtin_spec`); None when it cannot be told."""
    _, meta, _, _ = _read_dataset(header)
    spec = meta.get("rig", {}).get("spec") if meta is not None and isinstance(meta.get("rig"), dict) else None
    if spec:
        return spec
    from talksplat.rigs.spec import builtin_spec

    return builtin_spec(header.get("rig_name"))


def avatar_rig(avatar_file: Path, spec: str | None = None):
    """The :class:`~talksplat.rigs.HeadRig` of an avatar file: ``spec`` (a ``--rig``), else the one recorded for
    it (:func:`fit_rig_spec`); OptionError when neither tells, InputError naming the avatar when the rig's
    checksum is not the one the avatar was fitted on."""
    from talksplat.avatar.io import check_rig
    from talksplat.rigs import load_rig

    header = read_header(avatar_file)
    spec = spec or fit_rig_spec(header)
    if spec is None:
        raise OptionError(f"{avatar_file}: cannot tell which rig the avatar uses ({header['rig_name']}); pass --rig")
    rig = load_rig(spec)
    check_rig(avatar_file, header, rig.checksum)  # the avatar is named when it is the one that does not match
    return rig


def read_tuned(path: Path) -> RigSequence:
    """A fit's tuned_params.npz, checked (every field, one T, all finite); :class:`AvatarFileError` naming it
    when missing or damaged.  Through :attr:`FitFolder.tuned`, or on its own while a fit folder is written."""
    if not path.is_file():
        raise AvatarFileError(f"{path.parent}: no {path.name} (the head motion to drive with); "
                              "is this a `talksplat fit` output folder?")
    try:
        return RigSequence.load(path)
    except InputError as e:
        raise AvatarFileError(str(e)) from None


def open_fit(path: str | os.PathLike, need_predictor: bool = False, rig=None) -> FitFolder:
    """Read a fit folder (or its avatar file): the only reader of `talksplat fit --out DIR`.

    Reads the avatar's header and its dataset's metadata now; one-line errors naming what is missing or
    damaged.  ``rig``: the :class:`~talksplat.rigs.HeadRig` the avatar will be used with; the avatar is
    checked against it and loaded whole (:attr:`FitFolder.avatar`) before the predictor, so a mismatch or a
    damaged avatar names the avatar file.  ``need_predictor``: read the audio predictor now (PredictorFileError
    when it is missing, damaged or another avatar's); else it is read on first use of
    :attr:`FitFolder.predictor`, and a folder without one opens (the viewer shows an avatar on its own)."""
    from talksplat.avatar.io import check_rig

    fit_dir, avatar_file = fit_paths(path)
    header = read_header(avatar_file)
    avatar = None
    if rig is not None:
        check_rig(avatar_file, header, rig.checksum)
        avatar = FitFolder(avatar_file, fit_dir, header).load_avatar(rig)
    dataset, meta, frames, problem = _read_dataset(header)
    camera = first_training_frame(meta, frames) if meta is not None else None
    fit = FitFolder(avatar_file, fit_dir, header, avatar, dataset, meta, camera, problem)
    if need_predictor:
        fit.predictor  # noqa: B018 - read now: its error before anything else is done
    return fit
