"""`talksplat eval sync`: lip sync of a fitted avatar measured against real speakers.

For each VIDEO (a real recording of someone speaking, its own truth):

1. its frames are decoded at the video's own frame rate (at most ``--max-frames``) and FaceMesh finds the
   speaker's landmarks ([T, 478, 3] px; NaN in frames without a face);
2. its audio drives the avatar three ways, T frames each, head still at the subject's median tracked pose,
   no blinks:
   * ``predictor``: the fit's audio predictor (:func:`talksplat.driving.animate.predict_sequence`);
   * ``envelope``: the mean tracked expression, with the jaw (rotation and the rig's ``jaw_open`` units) moved
     from the subject's tracked closed mouth (mean of its 10 % least open frames) towards its open mouth (its
     10 % most open) by the audio's smoothed loudness envelope in [0, 1];
   * ``mean``: the mean tracked expression and jaw (a static mouth);
3. each sequence is rendered as `talksplat drive` renders it (:func:`talksplat.driving.drive.drive_camera`:
   the training camera's direction and field of view, square ``--resolution`` px, white background) and
   FaceMesh finds the avatar's landmarks;
4. :func:`talksplat.driving.sync_metrics.sync_metrics` compares each with the real speaker.

OUT/metrics.json: ``{"avatar", "settings", "videos": {stem: {"video", "frames", "fps", "methods": {method:
figures}}}, "total": {method: means over the videos}}``; with ``--plot`` OUT/STEM.png per video.  The folder is
built beside OUT and renamed into place when complete.
"""

from __future__ import annotations

import itertools
import math
import shutil
import time
from pathlib import Path

import numpy as np

from talksplat.core.errors import InputError, OptionError

from . import sync_metrics as sm
from .config import SyncEvalConfig

METHODS = ("predictor", "envelope", "mean")
#: Share of a video's frames in which FaceMesh must find the speaker.
MIN_FACE_FRACTION = 0.5
#: Curves in the plot: name -> RGB colour.
PLOT_COLOURS = {"real": (0, 0, 0), "predictor": (220, 40, 40), "envelope": (30, 110, 220)}


def check_inputs(cfg: SyncEvalConfig) -> list:
    """Every video readable, with a video and an audio stream (one line naming the file otherwise); returns
    their :class:`~talksplat.data_prep.decode.VideoInfo`."""
    from talksplat.data_prep.decode import probe_video

    if not cfg.videos:
        raise OptionError("give at least one VIDEO (a recording of someone speaking)")
    infos = []
    stems = set()
    for v in cfg.videos:
        info = probe_video(v)
        if not info.has_audio:
            raise InputError(f"{v}: no audio track (eval sync drives the avatar with the video's own speech)")
        if v.stem in stems:
            raise OptionError(f"{v}: two videos named {v.stem}; their results would share a name")
        stems.add(v.stem)
        infos.append(info)
    return infos


def _landmarks(frames, num: int | None = None) -> tuple[np.ndarray, int]:
    """[H, W, 3] uint8 RGB frames -> ([T, 478, 3] px, NaN where no face; how many frames had one)."""
    from talksplat.data_prep.landmarks import NUM_LANDMARKS, FaceMeshDetector, SubjectTracker

    out = []
    with FaceMeshDetector() as det:
        tracker = SubjectTracker()
        for frame in frames:
            face = tracker.pick(det.detect(frame))
            out.append(face if face is not None else np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
            if num is not None and len(out) >= num:
                break
    lm = np.stack(out) if out else np.zeros((0, NUM_LANDMARKS, 3), np.float32)
    return lm, int(np.isfinite(lm).all((1, 2)).sum())


def open_avatar(avatar: Path, rig_spec=None):
    """A fit folder (or its avatar file) for driving: (the :class:`~talksplat.driving.fit_reader.FitFolder`
    with its predictor, its HeadRig, the avatar file); the avatar is checked whole before the predictor is
    read, the tracked parameters against the rig (InputError naming the file)."""
    from .fit_reader import avatar_rig, fit_paths, open_fit

    _, avatar_file = fit_paths(avatar)
    rig = avatar_rig(avatar_file, rig_spec)
    fit = open_fit(avatar, need_predictor=True, rig=rig)
    fit.tracked.validate(rig)
    return fit, rig, avatar_file


def avatar_landmarks(avatar, render_rig, seq, viewmat, K, resolution: int, batch: int, what: str) -> np.ndarray:
    """Render ``seq`` as `talksplat drive` does (:func:`talksplat.driving.drive.render_batches`) and find the
    avatar's FaceMesh landmarks: [T, 478, 3] px, NaN where no face; InputError (``what`` names the avatar and
    the drive) when FaceMesh finds it in no frame."""
    from .drive import render_batches

    batches = render_batches(avatar, render_rig, seq, viewmat, K, resolution, resolution, batch,
                             fps=seq.fps or 25.0)
    lm, found = _landmarks(itertools.chain.from_iterable(batches))
    if found == 0:
        raise InputError(f"{what}: FaceMesh finds no face in the avatar's renders; is the fit complete?")
    return lm


def real_landmarks(video: Path, fps: float, max_frames: int | None) -> np.ndarray:
    """[T, 478, 3] px of the speaker in ``video`` at ``fps``; InputError naming it when FaceMesh finds a face in
    fewer than :data:`MIN_FACE_FRACTION` of the frames."""
    from talksplat.data_prep.decode import iter_frames

    with iter_frames(video, fps, max_frames=max_frames) as frames:
        lm, found = _landmarks(frames)
    if len(lm) == 0:
        raise InputError(f"{video}: no video frames")
    if found < MIN_FACE_FRACTION * len(lm):
        raise InputError(f"{video}: no face found in {len(lm) - found} of {len(lm)} frames (FaceMesh); "
                         "eval sync needs the speaker's face in view")
    return lm


def baseline_sequences(fit, rig, predicted, envelope: np.ndarray) -> dict:
    """The ``envelope`` and ``mean`` sequences (see the module doc) beside ``predicted`` (same length and pose).

    fit: the :class:`~talksplat.driving.fit_reader.FitFolder`; rig: its HeadRig; predicted: RigSequence [T];
    envelope: [T] in [0, 1]."""
    from .evaluate import LipGeometry

    tr = fit.tracked
    T = len(predicted)
    mean_expr, mean_jaw = tr.expression.mean(0), tr.jaw.mean(0)
    opening = LipGeometry(rig, tr.shape).opening(tr.expression, tr.jaw)  # [T_train] metres
    lo, hi = np.percentile(opening, [10, 90])
    closed, wide = opening <= lo, opening >= hi
    ids = rig.expression_group("jaw_open")
    e = envelope[:, None].astype(np.float32)
    env_expr = np.repeat(mean_expr[None], T, 0).astype(np.float32)
    if ids:
        c, o = tr.expression[closed][:, ids].mean(0), tr.expression[wide][:, ids].mean(0)
        env_expr[:, ids] = c + e * (o - c)
    jc, jo = tr.jaw[closed].mean(0), tr.jaw[wide].mean(0)
    env_jaw = (jc + e * (jo - jc)).astype(np.float32)
    return {"envelope": predicted.with_frames(expression=env_expr, jaw=env_jaw),
            "mean": predicted.with_frames(expression=np.repeat(mean_expr[None], T, 0).astype(np.float32),
                                          jaw=np.repeat(mean_jaw[None], T, 0).astype(np.float32))}


def plot_curves(path: Path, curves: dict[str, np.ndarray], fps: float, silence: np.ndarray, title: str,
                width: int = 960, height: int = 320) -> None:
    """A PNG of mouth-opening curves over time (cv2): ``curves`` name -> [T] IOD units (NaN gaps), silence
    frames shaded grey."""
    import cv2

    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 30, 40
    T = max(len(c) for c in curves.values())
    vals = np.concatenate([c[np.isfinite(c)] for c in curves.values()] + [np.zeros(1)])
    ymax = max(0.05, float(vals.max()) * 1.1)
    x = lambda t: int(round(left + (width - left - right) * t / max(T - 1, 1)))  # noqa: E731
    y = lambda v: int(round(height - bottom - (height - top - bottom) * v / ymax))  # noqa: E731
    for t in np.flatnonzero(silence):
        cv2.rectangle(img, (x(t - 0.5), top), (x(t + 0.5), height - bottom), (235, 235, 235), -1)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), (120, 120, 120), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for v in np.linspace(0, ymax, 5):
        cv2.putText(img, f"{v:.2f}", (5, y(v) + 4), font, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    for s in range(0, int(T / fps) + 1):
        cv2.putText(img, f"{s} s", (x(s * fps) - 8, height - bottom + 16), font, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    for name, c in curves.items():
        colour = PLOT_COLOURS.get(name, (0, 160, 0))
        pts = [(x(t), y(v)) for t, v in enumerate(c) if np.isfinite(v)]
        for a, b in zip(pts[:-1], pts[1:]):
            cv2.line(img, a, b, colour, 2 if name == "real" else 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    lx = width - right - 330
    for i, name in enumerate(curves):
        cv2.line(img, (lx + 110 * i, 16), (lx + 110 * i + 20, 16), PLOT_COLOURS.get(name, (0, 160, 0)), 2)
        cv2.putText(img, name, (lx + 110 * i + 25, 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "mouth opening / inter-ocular distance; grey: silence", (left, height - 8), font, 0.4,
                (80, 80, 80), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img[..., ::-1])
    if not ok:  # pragma: no cover
        raise RuntimeError("cv2 could not encode the plot")
    path.write_bytes(png.tobytes())


def run_sync_eval(cfg: SyncEvalConfig) -> dict:
    """Do the work of `talksplat eval sync` (holding the lock of OUT); returns the metrics (also in
    OUT/metrics.json)."""
    from talksplat.core.outputs import check_output_dir, output_lock

    from .fit_reader import fit_files, fit_paths

    fit_dir, avatar_file = fit_paths(cfg.avatar)
    infos = check_inputs(cfg)
    inputs = [*fit_files(fit_dir, avatar_file), *cfg.videos]
    with output_lock(cfg.out):
        check_output_dir(cfg.out, "sync_eval", cfg.overwrite, inputs)
        return _run(cfg, infos)


def _run(cfg: SyncEvalConfig, infos: list) -> dict:
    from talksplat.core.files import commit_dir, make_partial_dir, write_json
    from talksplat.core.outputs import write_marker
    from talksplat.core.progress import Bars
    from talksplat.render.device import pick_device

    from .audio import frame_rms, load_audio
    from .drive import drive_camera
    from .animate import predict_sequence

    t0 = time.perf_counter()
    fit, rig, avatar_file = open_avatar(cfg.avatar, cfg.rig)
    avatar = fit.avatar
    device = pick_device(cfg.device)
    render_rig, avatar = rig.to(device), avatar.to(device)
    videos, curves = {}, {}
    with Bars(cfg.quiet, transient=True) as bars:
        advance, _ = bars.task("eval sync", len(infos) * (1 + len(METHODS)))
        for info in infos:
            video, fps = info.path, info.fps
            real = real_landmarks(video, fps, cfg.max_frames)
            T = len(real)
            advance()
            wave = load_audio(video)
            rms = frame_rms(wave)  # 10 ms steps
            level = sm.frame_levels_db(rms, 0.01, fps, T)
            predicted = predict_sequence(fit, wave, fps=fps, pose="still", blinks=False, num_frames=T,
                                         mouth_amplitude=cfg.mouth_amplitude)
            seqs = {"predictor": predicted,
                    **baseline_sequences(fit, rig, predicted, sm.loudness_envelope(rms, 0.01, fps, T))}
            viewmat, K = drive_camera(rig, predicted, fit.camera, cfg.resolution, 0.0, 0.0)
            viewmat, K = viewmat.to(device), K.to(device)
            methods, openings = {}, {"real": sm.mouth_opening(real)}
            for name in METHODS:
                lm = avatar_landmarks(avatar, render_rig, seqs[name], viewmat, K, cfg.resolution, cfg.batch,
                                      f"{avatar_file} ({name}, driven by {video})")
                methods[name] = {**sm.sync_metrics(real, lm, level, fps, cfg.max_lag),
                                 "avatar_face_frames": int(np.isfinite(lm).all((1, 2)).sum())}
                openings[name] = sm.mouth_opening(lm)
                advance()
            _, silence = sm.speech_masks(level, fps)
            videos[video.stem] = {"video": str(video), "frames": T, "fps": fps,
                                  "real_face_frames": int(np.isfinite(real).all((1, 2)).sum()), "methods": methods}
            curves[video.stem] = ({k: openings[k] for k in ("real", "predictor", "envelope")}, fps, silence)
    total = {m: sm.mean_metrics([v["methods"][m] for v in videos.values()]) for m in METHODS}
    result = {"avatar": str(avatar_file), "settings": {"resolution": cfg.resolution, "max_lag": cfg.max_lag,
                                                       "max_frames": cfg.max_frames, "pose": "still",
                                                       "mouth_amplitude": cfg.mouth_amplitude,
                                                       "device": str(device)},
              "videos": videos, "total": total, "seconds": round(time.perf_counter() - t0, 1)}
    tmp = make_partial_dir(cfg.out)
    try:
        write_json(tmp / "metrics.json", result)
        if cfg.plot:
            for stem, (c, fps, silence) in curves.items():
                m = videos[stem]["methods"]
                title = (f"{stem}: r(predictor) {m['predictor']['corr_lag0']:.2f}, "
                         f"r(envelope) {m['envelope']['corr_lag0']:.2f}")
                plot_curves(tmp / f"{stem}.png", c, fps, silence, title)
        write_marker(tmp, "sync_eval")
        commit_dir(tmp, cfg.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result["out"] = cfg.out
    return result


def _fmt(v) -> str:
    return "   -  " if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:6.3f}"


def format_table(result: dict) -> str:
    """The printed summary: one row per video and method, then the means."""
    keys = ("corr_lag0", "corr_best", "best_lag", "lmd", "lmd_centered", "amplitude_ratio", "closure_recall",
            "closed_when_open", "open_in_silence")
    heads = ("r lag0", "r best", "lag", "LMD", "LMD-c", "ampl", "closure", "cl-open", "open-sil")
    lines = [f"{'video':<20} {'method':<10} " + " ".join(f"{h:>8}" for h in heads)]
    rows = [(stem, v["methods"]) for stem, v in result["videos"].items()] + [("mean", result["total"])]
    for stem, methods in rows:
        for m in METHODS:
            f = methods[m]
            cells = [f"{f[k]:>8d}" if k == "best_lag" and stem != "mean" else f"{_fmt(f[k]):>8}" for k in keys]
            lines.append(f"{stem:<20} {m:<10} " + " ".join(cells))
    lines.append(f"wrote {result['out']}/metrics.json ({len(result['videos'])} videos, {result['seconds']:.0f} s)")
    return "\n".join(lines)
