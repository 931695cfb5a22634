"""What `talksplat view` shows: the avatar (through :func:`talksplat.driving.fit_reader.open_fit`), its rig,
and the sequences to play (checked by :meth:`RigSequence.validate`): the fit's training sequence, a
`talksplat drive` parameters file, or speech through the avatar's audio predictor.

Everything here is read once at start-up; errors are one line naming the file
(:class:`~talksplat.core.errors.InputError`), and what the viewer can do without (a moved dataset, damaged
tuned parameters) is a warning.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from talksplat.core.errors import InputError

if TYPE_CHECKING:
    from talksplat.driving.fit_reader import FitFolder
    from talksplat.rigs.sequence import RigSequence

    from .config import ViewConfig


@dataclass
class Sequence:
    """A sequence of rig parameters to scrub and play.

    params: the frames (a :class:`RigSequence`, T frames, checked against the rig); fps: frames per
    second; audio: WAV aligned with frame 0, or None.
    """

    name: str
    params: RigSequence
    fps: float
    audio: Path | None = None

    @property
    def frames(self) -> dict[str, np.ndarray]:
        """Frame field -> [T, ...] (expression [T, E], eyes [T, 2, 3], others [T, 3]; radians, metres)."""
        return self.params.frames

    @property
    def shape(self) -> np.ndarray:
        """[S] identity."""
        return self.params.shape

    @property
    def length(self) -> int:
        return len(self.params)

    def frame(self, t: int) -> dict[str, np.ndarray]:
        """One frame (no time axis) including "shape"; ``t`` is clamped to the sequence."""
        return self.params.frame(min(max(int(t), 0), self.length - 1))


@dataclass
class TrainingCamera:
    """A dataset camera: c2w [4, 4] OpenCV camera-to-world, K [3, 3] pixels, image size."""

    c2w: np.ndarray
    K: np.ndarray
    width: int
    height: int


# ---------------------------------------------------------------------------------------- the avatar
def open_avatar(path: str | os.PathLike) -> FitFolder:
    """AVATAR (a fit folder or an avatar file) -> its :class:`~talksplat.driving.fit_reader.FitFolder`
    (the header read; the predictor and the tuned parameters only when used)."""
    from talksplat.driving.fit_reader import open_fit

    return open_fit(path)


def resolve_avatar(path: Path) -> tuple[Path, Path | None]:
    """AVATAR argument -> (avatar .safetensors file, fit folder or None when the file is not in one)."""
    fit = open_avatar(path)
    return fit.avatar_file, (fit.fit_dir if fit.has_tuned else None)


def view_rig(cfg: ViewConfig, avatar_file: Path):
    """The rig to view ``avatar_file`` with: ``--rig``, else the one recorded for the avatar (its dataset's,
    as `talksplat drive` reads it); checked against the avatar's rig checksum."""
    from talksplat.driving.fit_reader import avatar_rig

    return avatar_rig(avatar_file, cfg.rig)


# ---------------------------------------------------------------------------------------- sequences
def check_sequence(params: RigSequence, rig, fps: float, name: str) -> Sequence:
    """Validate a sequence against ``rig`` (:class:`InputError` naming its source) and its frame rate."""
    params.validate(rig)
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"{params.source}: fps must be a positive number, not {fps}")
    return Sequence(name, params, float(fps), None)


def load_params_file(path: Path, rig, allow_external_paths: bool = False) -> Sequence:
    """A `talksplat drive` parameters file -> :class:`Sequence` (:class:`InputError` naming the file)."""
    from talksplat.rigs.sequence import RigSequence

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: parameters file not found")
    params = RigSequence.load(path, finite=False, what="parameters file")  # finiteness: check_sequence
    arrays = params.extras
    if "fps" not in arrays:
        raise InputError(f"{path}: missing 'fps' (the frame rate of the sequence)")
    try:
        fps = float(np.asarray(arrays["fps"]).reshape(()))
    except (TypeError, ValueError):
        raise InputError(f"{path}: 'fps' must be one number") from None
    seq = check_sequence(params, rig, fps, f"driven: {path.name}")
    if "audio" in arrays:
        try:
            audio = Path(str(np.asarray(arrays["audio"]).reshape(())))
        except ValueError:
            raise InputError(f"{path}: 'audio' must be one file name") from None
        audio = audio if audio.is_absolute() else path.parent / audio
        folder = path.parent.resolve()
        if not allow_external_paths and folder not in audio.resolve().parents:
            raise InputError(f"{path}: 'audio' names {audio}, outside the parameters file's folder {path.parent} "
                             "(pass --allow-external-paths to play it)")
        if audio.is_file():
            seq.audio = audio
        else:
            print(f"talksplat view: warning: {path}: audio {audio} not found; playing without sound", file=sys.stderr)
    return seq


def predict_sequence(avatar: FitFolder | Path, audio: Path, fps: float, rig) -> Sequence:
    """Run the avatar's audio predictor (`talksplat.driving.animate`) on ``audio`` (any format ffmpeg
    reads; a non-WAV file is played in the browser from a temporary WAV copy).  ``avatar``: its fit
    folder (opened or not), or the avatar file in one."""
    import atexit
    import tempfile

    from talksplat.driving.audio import load_audio, write_wav
    from talksplat.driving.fit_reader import open_fit
    from talksplat.driving.animate import predict_sequence as predict

    if not audio.is_file():
        raise InputError(f"{audio}: audio file not found")
    wave = load_audio(audio)
    fit = open_fit(avatar, need_predictor=True) if isinstance(avatar, (str, os.PathLike)) else avatar
    params = predict(fit, wave, fps=fps)  # reads the predictor (if not yet) and the tuned parameters
    params.source = f"{audio} (predicted)"
    seq = check_sequence(params, rig, fps, f"driven: {audio.name}")
    seq.audio = audio
    if audio.suffix.lower() != ".wav":
        fd, tmp = tempfile.mkstemp(prefix="talksplat-view-", suffix=".wav")
        os.close(fd)
        atexit.register(lambda: Path(tmp).unlink(missing_ok=True))
        seq.audio = write_wav(tmp, wave)
    return seq


def load_training(fit: FitFolder, rig) -> tuple[Sequence | None, TrainingCamera | None]:
    """The training sequence (the tuned parameters of a fit) and the first training camera of its dataset.

    Anything missing (a bare avatar file, a moved dataset) gives None; a warning says what.
    """
    cam = None
    if fit.dataset_problem is not None:
        print(f"talksplat view: warning: {fit.dataset_problem}; using a default camera", file=sys.stderr)
    elif fit.camera is not None:
        cam = TrainingCamera(fit.camera.c2w, fit.camera.K, fit.camera.width, fit.camera.height)
    if not fit.has_tuned:
        return None, cam
    try:
        seq = check_sequence(fit.tuned, rig, fit.dataset_fps or 25.0, "training (tuned)")
    except (OSError, ValueError) as e:
        print(f"talksplat view: warning: {fit.tuned_file}: {e}; no training sequence", file=sys.stderr)
        return None, cam
    seq.audio = fit.dataset_audio
    return seq, cam
