"""From speech to a full per-frame rig parameter sequence for a fitted avatar.

    fit = open_fit("avatar/")                                  # avatar, driver, tuned parameters, camera
    seq = predict_sequence(fit, load_audio("speech.wav"), fps=25, pose="idle")
    # seq: a RigSequence (shape [S], expression [T, E], jaw / global_rot / neck [T, 3] radians,
    #      eyes [T, 2, 3], translation [T, 3] metres) with the extra fps

Expression and jaw come from the audio predictor (mouth closed in silences), head pose and gaze
from :func:`talksplat.driving.motion.head_motion`, blinks at a natural rate on the rig's eyelid
coefficients (the predictor does not produce them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talksplat.avatar.io import AvatarFileError, read_header
from talksplat.core.errors import InputError, OptionError
from talksplat.data_prep.dataset import DatasetError, Frame, first_training_frame, is_dataset, load_metadata
from talksplat.rigs.sequence import RigSequence

from .audio import SAMPLE_RATE, load_audio
from .motion import add_blinks, head_motion
from .predictor import Driver, load_driver


@dataclass
class FitFolder:
    """What driving needs from `talksplat fit --out DIR`.

    Attributes:
        avatar_file: DIR/avatar.safetensors.
        header: the avatar's JSON header (rig name and checksum, the dataset it was fitted on).
        driver: the audio predictor (DIR/driver.safetensors).
        tracked: the training time steps' parameters (DIR/tuned_params.npz: fit-tuned), T frames.
        fps: the training video's frame rate.
        camera: the dataset's first training frame (its ``c2w`` [4, 4] OpenCV metres, ``K`` [3, 3]
            pixels, ``width``, ``height``), or None when the dataset is not at its recorded path.
        rig_spec: the rig spec the dataset was tracked with when known.
    """

    avatar_file: Path
    header: dict
    driver: Driver
    tracked: RigSequence
    fps: float
    camera: Frame | None
    rig_spec: str | None


def fit_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(fit folder, avatar file) of a fit folder or of its avatar file; AvatarFileError when neither."""
    path = Path(path)
    if path.is_dir():
        fit_dir, avatar_file = path, path / "avatar.safetensors"
    else:
        fit_dir, avatar_file = path.parent, path
    if not avatar_file.is_file():
        raise AvatarFileError(f"{path}: not a fit folder or avatar file (no {avatar_file.name}); "
                              "make one with `talksplat fit DATASET --out DIR`")
    return fit_dir, avatar_file


def fit_files(fit_dir: Path, avatar_file: Path) -> list[Path]:
    """The files of a fit that driving reads (never to be overwritten by its outputs)."""
    return [avatar_file, fit_dir / "driver.safetensors", fit_dir / "tuned_params.npz"]


def _dataset_meta(header: dict) -> tuple[dict | None, list[Frame]]:
    """The metadata of the dataset an avatar was fitted on, or (None, []) when it moved or is damaged."""
    dataset = header.get("extra", {}).get("dataset") if isinstance(header.get("extra"), dict) else None
    try:
        return load_metadata(dataset) if isinstance(dataset, str) and is_dataset(Path(dataset)) else (None, [])
    except DatasetError:  # moved or replaced since the fit: drive without its camera and split
        return None, []


def fit_rig_spec(header: dict) -> str | None:
    """The rig spec of the avatar with this header, from its dataset; else the built-in rig it names
    (:func:`talksplat.rigs.builtin_spec`); None when it cannot be told."""
    meta, _ = _dataset_meta(header)
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


def _tracked(path: Path) -> RigSequence:
    """tuned_params.npz, checked (every field, one T, all finite; the unused ``original_*`` are dropped)."""
    if not path.is_file():
        raise AvatarFileError(f"{path.parent}: no tuned_params.npz (the head motion to drive with); "
                              "is this a `talksplat fit` output folder?")
    try:
        seq = RigSequence.load(path)
    except InputError as e:
        raise AvatarFileError(str(e)) from None
    seq.extras = {}
    return seq


def open_fit(path: str | os.PathLike, rig_checksum: str | None = None) -> FitFolder:
    """Read a fit folder (or its avatar file); one-line errors naming what is missing or damaged.

    ``rig_checksum``: the rig driving will use; the avatar is checked against it before the predictor, so
    a mismatch names the file that is wrong.  The predictor must have been trained beside this avatar."""
    from talksplat.avatar.io import check_rig

    fit_dir, avatar_file = fit_paths(path)
    header = read_header(avatar_file)
    if rig_checksum is not None:
        check_rig(avatar_file, header, rig_checksum)
    driver = load_driver(fit_dir / "driver.safetensors", rig_checksum=header["rig_checksum"], avatar=avatar_file)
    tracked = _tracked(fit_dir / "tuned_params.npz")
    fps, camera, spec = driver.fps, None, None
    meta, frames = _dataset_meta(header)
    if meta is not None:
        fps = float(meta.get("fps", fps))
        spec = meta.get("rig", {}).get("spec")
        train = set(meta.get("split", {}).get("train", []))
        keep = [t for t in range(len(tracked))
                if (not train or t in train) and t not in set(meta.get("dropped_timesteps", []))]
        if keep:
            tracked = tracked[keep]
        camera = first_training_frame(meta, frames)
    return FitFolder(avatar_file, header, driver, tracked, fps, camera, spec)


def predict_sequence(fit: FitFolder, wave: np.ndarray, fps: float = 25.0, pose: str = "replay",
                     blinks: bool = True, seed: int = 0, num_frames: int | None = None,
                     visemes: np.ndarray | None = None) -> RigSequence:
    """[N] loudness-normalised 16 kHz speech -> per-frame rig parameters (see the module doc), with
    the extra ``fps``.

    The sequence has ``round(duration * fps)`` frames unless ``num_frames`` is given.  ``visemes``
    ([N // 160 + 1, 30], known phones such as text's) spare a phonetic predictor its recognition."""
    if num_frames is None:
        num_frames = max(1, int(round(len(wave) / SAMPLE_RATE * fps)))
    mouth = fit.driver.predict(wave, fps, num_frames, visemes=visemes)
    motion = head_motion(pose, fit.tracked.frames, num_frames, fps, seed=seed)
    expr = mouth["expression"]
    ids = fit.driver.layout.blink_ids
    if blinks and ids:
        amp = float(np.clip(np.percentile(fit.tracked.expression[:, ids], 97), 0.6, 1.0))
        expr = add_blinks(expr, ids, fps, amplitude=amp, seed=seed)
    return RigSequence(fit.tracked.shape, {"expression": expr, "jaw": mouth["jaw"], **motion},
                       {"fps": np.float32(fps)}, source="predicted parameters")


def predict_from_audio(avatar_path: Path, audio_path: Path, fps: float = 25.0, pose: str = "replay") -> RigSequence:
    """Convenience for the viewer: a fit folder (or its avatar file) + any audio file -> the sequence."""
    return predict_sequence(open_fit(avatar_path), load_audio(audio_path), fps=fps, pose=pose)
