"""From speech to a full per-frame rig parameter sequence for a fitted avatar.

    fit = open_fit("avatar/", need_predictor=True)
    seq = predict_sequence(fit, load_audio("speech.wav"), fps=25, pose="idle")
    # seq: a RigSequence (shape [S], expression [T, E], jaw / global_rot / neck [T, 3] radians,
    #      eyes [T, 2, 3], translation [T, 3] metres) with the extra fps

Expression and jaw come from the audio predictor (mouth closed in silences), head pose and gaze
from :func:`talksplat.driving.motion.head_motion`, blinks at a natural rate on the rig's eyelid
coefficients (the predictor does not produce them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talksplat.core.errors import OptionError
from talksplat.rigs.sequence import RigSequence

from .audio import SAMPLE_RATE, load_audio
from .fit_reader import FitFolder, open_fit
from .motion import add_blinks, head_motion


def predict_sequence(fit: FitFolder, wave: np.ndarray, fps: float = 25.0, pose: str = "replay",
                     blinks: bool = True, seed: int = 0, num_frames: int | None = None,
                     visemes: np.ndarray | None = None, mouth_amplitude: str = "predicted") -> RigSequence:
    """[N] loudness-normalised 16 kHz speech -> per-frame rig parameters (see the module doc), with
    the extra ``fps``.

    The sequence has ``round(duration * fps)`` frames unless ``num_frames`` is given.  ``visemes``
    ([N // 160 + 1, 30], known phones such as text's) spare a phonetic predictor its recognition.
    ``mouth_amplitude``: ``"predicted"`` as the predictor outputs it, or ``"subject"``: scaled to the subject's
    own mouth motion (:meth:`~talksplat.driving.predictor.AudioPredictor.match_amplitude`)."""
    if num_frames is None:
        num_frames = max(1, int(round(len(wave) / SAMPLE_RATE * fps)))
    if mouth_amplitude == "subject" and fit.predictor.amp_axis is None:
        raise OptionError(f"--mouth-amplitude subject: {fit.predictor_file} predates amplitude matching; retrain "
                          f"it with `talksplat fit DATASET --out {fit.fit_dir} --driver-only`")
    mouth = fit.predictor.predict(wave, fps, num_frames, visemes=visemes,
                                  match_amplitude=mouth_amplitude == "subject")
    motion = head_motion(pose, fit.tracked.frames, num_frames, fps, seed=seed)
    expr = mouth["expression"]
    ids = fit.predictor.layout.blink_ids
    if blinks and ids:
        amp = float(np.clip(np.percentile(fit.tracked.expression[:, ids], 97), 0.6, 1.0))
        expr = add_blinks(expr, ids, fps, amplitude=amp, seed=seed)
    return RigSequence(fit.tracked.shape, {"expression": expr, "jaw": mouth["jaw"], **motion},
                       {"fps": np.float32(fps)}, source="predicted parameters")


def predict_from_audio(avatar_path: Path, audio_path: Path, fps: float = 25.0, pose: str = "replay") -> RigSequence:
    """Convenience for the viewer: a fit folder (or its avatar file) + any audio file -> the sequence."""
    return predict_sequence(open_fit(avatar_path, need_predictor=True), load_audio(audio_path), fps=fps, pose=pose)
