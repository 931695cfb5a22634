"""`talksplat demo`: the whole pipeline on a generated talking subject; no input, no network.

1. A synthetic subject (``talksplat.demo.subject``): the open head with a textured appearance, saying
   a few sentences (espeak-ng when installed, else procedural speech) with mouth and head motion that
   follow the speech, rendered to ``OUT/subject/subject.mp4`` with the audio; plus a second utterance.
2. ``talksplat run`` on that video and the second utterance (``OUT/run/``: dataset, avatar, predictor,
   driven video), at a size that finishes in a few minutes on a 2-core CPU.
3. ``OUT/demo.mp4``: input | re-rendered avatar | avatar driven by the new speech, and
   ``OUT/metrics.json``: the run's figures plus what only a synthetic subject allows, the driven
   mouth opening against the ground truth the subject would have made for the new speech.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions


@dataclass
class DemoConfig(ProcessOptions):
    """Show the whole job on a generated talking subject: no input, no network, a few minutes on a CPU.

    Writes OUT/demo.mp4 (input | re-rendered avatar | avatar driven by new speech, with the new
    speech's audio), OUT/metrics.json, OUT/demo_frames.jpg, and keeps every intermediate in OUT/subject
    and OUT/run (a rerun reuses the finished stages)."""

    out: Path = Path("talksplat-demo")
    """Output directory."""
    resolution: Annotated[int, Range(64, 1024)] = 128
    """Side of the head crop the avatar is fitted on, pixels (64 to 1024)."""
    steps: Annotated[int, Range(1, 10000000)] = 1000
    """Avatar training steps (1 to 10000000)."""
    driver_steps: Annotated[int, Range(1, 10000000)] = 400
    """Audio-predictor training steps (1 to 10000000)."""
    drive_resolution: Annotated[int, Range(16, 2048)] = 256
    """Side of each panel of the demo video, pixels (even) (16 to 2048)."""
    seed: Annotated[int, Range(0)] = 0
    """Seed of the subject's texture, motion and speech (at least 0)."""
    tts: bool = True
    """Let espeak-ng speak the subject's sentences when it is installed (else, or with --no-tts, a
    procedural speech-like voice)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when available, else the CPU."""
    quiet: bool = False
    """No progress display."""


def mouth_sync_vs_truth(rig, truth: dict, truth_shape: np.ndarray, pred: dict, pred_shape: np.ndarray) -> dict:
    """Mouth opening (upper- over lower-lip midline, metres) of a predicted sequence against the true one."""
    from talksplat.driving.evaluate import LipGeometry

    T = min(len(truth["expression"]), len(pred["expression"]))
    o_true = LipGeometry(rig, truth_shape).opening(truth["expression"][:T], truth["jaw"][:T])
    o_pred = LipGeometry(rig, pred_shape).opening(pred["expression"][:T], pred["jaw"][:T])
    corr = float(np.corrcoef(o_true, o_pred)[0, 1]) if o_true.std() > 1e-9 and o_pred.std() > 1e-9 else 0.0
    return {"frames": int(T), "mouth_open_corr": round(corr, 4),
            "true_opening_mm": round(float(1000 * np.ptp(o_true)), 2),
            "predicted_opening_mm": round(float(1000 * np.ptp(o_pred)), 2)}


def run_demo(cfg: DemoConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """Do the work of `talksplat demo`; returns what it writes to OUT/metrics.json (its text: :func:`demo_text`).
    ``on_stage`` gets each stage's lines (the subject, then those of `talksplat run` and its summary)."""
    from talksplat.driving.audio import load_audio
    from talksplat.driving.config import PredictorConfig
    from talksplat.core.files import atomic_write
    from talksplat.render.video import read_video
    from talksplat.rigs import RigSequence, load_rig
    from talksplat.run_command import RunConfig, run_pipeline, summary_text

    from .compose import rerender_training_clip, write_side_by_side
    from .subject import make_demo_subject, subject_motion

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rig = load_rig("open")
    say = on_stage or (lambda text: None)
    say("demo: generating the synthetic talking subject")
    subject = make_demo_subject(out / "subject", seed=cfg.seed, use_tts=cfg.tts)
    t_subject = time.perf_counter() - t0
    say(f"demo: {subject['video']} ({subject['speech_source']} speech), {t_subject:.1f} s")

    run = run_pipeline(RunConfig(videos=(Path(subject["video"]),), audio=Path(subject["drive_speech"]),
                                 out=out / "run", preset="fast", resolution=cfg.resolution, steps=cfg.steps,
                                 driver=PredictorConfig(steps=cfg.driver_steps), drive_resolution=cfg.drive_resolution,
                                 pose="replay", device=cfg.device, quiet=cfg.quiet), on_stage=say)
    say(summary_text(run))

    # What the subject would have done saying the new sentence, against what the avatar did.
    fps = 25.0
    truth = RigSequence.from_params(subject_motion(load_audio(subject["drive_speech"]), fps, rig, seed=cfg.seed))
    pred = RigSequence.load(out / "run" / "talk.npz")
    true_shape = RigSequence.load(subject["params"]).shape
    sync = mouth_sync_vs_truth(rig, truth.frames, true_shape, pred.frames, pred.shape)

    t1 = time.perf_counter()
    training = list(rerender_training_clip(out / "run" / "avatar", out / "run" / "dataset", cfg.drive_resolution,
                                           device=cfg.device))
    driven, _ = read_video(out / "run" / "talk.mp4")
    h = run["fit"].get("heldout", {})
    footer = f"mouth vs truth r={sync['mouth_open_corr']:.2f}"
    frames = write_side_by_side(out / "demo.mp4", training, driven, out / "run" / "talk.wav", fps,
                                ("input video", "avatar re-render", "driven by new speech"), footer=footer)
    _write_stills(out / "demo.mp4", out / "demo_frames.jpg")
    t_compose = time.perf_counter() - t1

    metrics = {"video": str(out / "demo.mp4"), "frames": frames, "speech_source": subject["speech_source"],
               "heldout_psnr": h.get("psnr"), "heldout_ssim": h.get("ssim"), "heldout_mouth_psnr": h.get("mouth_psnr"),
               "driven_vs_truth": sync, "seconds": {"subject": round(t_subject, 1), "compose": round(t_compose, 1),
                                                    "total": round(time.perf_counter() - t0, 1)},
               "run": run}
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    return metrics


def demo_text(metrics: dict) -> str:
    """What a demo made (its OUT/metrics.json) as text: the video, the figures, where the rest is."""
    from talksplat.fit_command import heldout_text

    video = Path(metrics["video"])
    out = video.parent
    sync = metrics["driven_vs_truth"]
    h = metrics["run"]["fit"].get("heldout", {})
    return (f"demo: wrote {video} ({metrics['frames']} frames): input | avatar re-render | driven by new speech\n"
            f"  {heldout_text(h).removeprefix('; ') or 'no held-out frames'}; driven mouth opening vs the "
            f"subject's true motion for the new speech: r = {sync['mouth_open_corr']:.3f}\n"
            f"  figures: {out / 'metrics.json'}; stills: {out / 'demo_frames.jpg'}; "
            f"{metrics['seconds']['total']:.0f} s in all")


def _write_stills(video: Path, out_jpg: Path, count: int = 3) -> None:
    """``count`` evenly spaced frames of ``video`` stacked vertically, as a JPEG (for the README)."""
    import cv2

    from talksplat.core.files import atomic_write
    from talksplat.render.video import read_video

    frames, _ = read_video(video)
    idx = np.linspace(0, len(frames) - 1, count + 2)[1:-1].round().astype(int)
    with atomic_write(out_jpg) as tmp:
        cv2.imwrite(str(tmp), np.concatenate([frames[i] for i in idx], axis=0)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 88])
