"""`talksplat run`: video + speech -> talking-avatar MP4 in one command (prep -> fit -> predictor -> drive).

Everything lands in one work directory::

    WORKDIR/dataset/      talksplat prep's tracked dataset
    WORKDIR/avatar/       talksplat fit's avatar (+ driver.safetensors, the audio predictor)
    WORKDIR/talk.mp4      the driven avatar with the speech muxed in (+ talk.npz, talk.wav)
    WORKDIR/metrics.json  every stage's figures and whether it ran or was reused
    WORKDIR/stages/*.json what made each stage's output (input hashes, config, upstream keys)
    WORKDIR/run.log       the stage decisions of every run

A rerun repeats only the stages whose inputs or config changed (and those after them): a new
``--audio`` reruns only ``drive``; new ``--driver.*`` options rerun the predictor and ``drive``.  A stage
that is not up to date here but was computed with the same inputs and effective config by `talksplat prep`,
`talksplat fit` or another run is copied from there instead (the stage cache, :mod:`talksplat.stage_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Callable, Literal

import tyro

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.core.errors import InputError, OptionError, OutputError
from talksplat.core.files import write_json
from talksplat.driving.config import PredictorConfig
from talksplat.rigs.spec import DEFAULT_RIG, RigSpec

#: run preset -> (prep crop side px, fit preset, drive output side px)
RUN_PRESETS = {"fast": (256, "fast", 512), "default": (512, "default", 1024), "quality": (512, "quality", 1024)}
STAGE_NAMES = ("prep", "fit", "driver", "drive")


@dataclass
class RunConfig(ProcessOptions):
    """Video of a talking person + speech -> an MP4 of their avatar saying it: prep, fit, drive in one go.

    Reruns reuse every stage whose inputs and config are unchanged, and a stage that `talksplat prep`,
    `talksplat fit` or another run computed with the same inputs and options is copied from there (the stage
    cache in the user cache folder; see WORKDIR/run.log).  Presets:
    fast (256 px crops, 2k fit steps, 512 px output), default (512 px, 10k steps, 1024 px), quality
    (512 px, 30k steps, 1024 px).
    """

    videos: tyro.conf.Positional[tuple[Path, ...]]
    """Video of the subject talking (several with --calibration: synchronized multi-view)."""
    audio: Path | None = None
    """Speech to drive the avatar with: any file ffmpeg reads."""
    text: str | None = None
    """Text to speak with the local TTS (espeak-ng) instead of --audio."""
    out: Path = Path("talksplat-run")
    """Work directory (dataset/, avatar/, talk.mp4, metrics.json, stages/, run.log)."""
    preset: Literal["fast", "default", "quality"] = "default"
    """Size and length of the job: crop size, fit preset, output size (see above)."""
    calibration: Path | None = None
    """Multi-view: cameras.json (see docs/formats.md)."""
    rig: RigSpec = DEFAULT_RIG
    fps: Annotated[float, Range(1, 240)] = 25.0
    """Frames per second of the dataset and the output video (1 to 240)."""
    resolution: Annotated[int | None, Range(64, 4096)] = None
    """Side of the square head crop the avatar is fitted on (default: the preset's) (64 to 4096)."""
    max_frames: Annotated[int | None, Range(1)] = None
    """Use only the first N frames of the video (at least 1)."""
    heldout: Annotated[float, Range(0.0, 0.9)] = 0.1
    """Fraction of time steps (the last ones) held out for evaluation (0 to 0.9)."""
    steps: Annotated[int | None, Range(1, 10000000)] = None
    """Avatar training steps (default: the preset's) (1 to 10000000)."""
    budget: Annotated[int | None, Range(1)] = None
    """Maximum number of Gaussians (default: the preset's) (at least 1)."""
    lpips_weights: Path | None = None
    """LPIPS weights for fitting and evaluation (see README: Fit); off without them."""
    torso: bool = False
    """Torso Gaussians that follow the head weakly, trained on whole frames too (as `talksplat fit --torso`)."""
    driver: PredictorConfig = field(default_factory=PredictorConfig)
    """The audio-to-rig predictor (as `talksplat fit --driver.*`; `run` always trains it)."""
    drive_resolution: Annotated[int | None, Range(16, 8192)] = None
    """Output video size: with --frame head its width and height (default: the preset's); with the source frame the
    longer side at most this (default: the source's size, at most 1920) (16 to 8192)."""
    pose: Literal["still", "replay", "idle"] = "replay"
    """Head motion of the driven avatar (as `talksplat drive --pose`)."""
    frame: Literal["auto", "source", "head"] = "auto"
    """Framing of the driven video (as `talksplat drive --frame`): `auto` is the subject's own whole frame, over
    their background, for a monocular video."""
    background: str = "auto"
    """Background of the driven video: `auto` (the subject's own with --frame source, else white), `white`,
    `black`, `#rrggbb` or an image file."""
    camera: str = "0,0"
    """Camera `yaw,pitch` in degrees around the head (0,0 = the training camera's direction)."""
    voice: str = "en-us"
    """espeak-ng voice for --text."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when available, else the CPU."""
    force: tuple[Literal["prep", "fit", "driver", "drive"], ...] = ()
    """Rerun these stages even when up to date or in the stage cache (later stages follow, as their inputs
    change)."""
    quiet: bool = False
    """No progress display (stage decisions and the summary are still printed)."""


def _resolved(cfg: RunConfig):
    from talksplat.data_prep.config import PrepConfig
    from talksplat.driving.config import DriveConfig
    from talksplat.fit_command import FitCommandConfig

    crop, fit_preset, out_px = RUN_PRESETS[cfg.preset]
    out = Path(cfg.out)
    prep = PrepConfig(videos=tuple(cfg.videos), out=out / "dataset", calibration=cfg.calibration, rig=cfg.rig,
                      fps=cfg.fps, resolution=cfg.resolution or crop, max_frames=cfg.max_frames, overwrite=True,
                      heldout=cfg.heldout, device=cfg.device, quiet=cfg.quiet)
    driver = cfg.driver
    fit = FitCommandConfig(dataset=out / "dataset", out=out / "avatar", preset=fit_preset, steps=cfg.steps,
                           budget=cfg.budget, overwrite=True, device=cfg.device, lpips_weights=cfg.lpips_weights,
                           quiet=cfg.quiet, driver=driver, torso=cfg.torso)
    drive = DriveConfig(avatar=out / "avatar", audio=cfg.audio, text=cfg.text, out=out / "talk.mp4",
                        resolution=cfg.drive_resolution or out_px, fps=cfg.fps, pose=cfg.pose,
                        **({"max_size": cfg.drive_resolution} if cfg.drive_resolution else {}),
                        frame=cfg.frame, background=cfg.background, camera=cfg.camera, device=cfg.device, voice=cfg.voice,
                        quiet=cfg.quiet, overwrite=True)
    return prep, fit, drive


def check_inputs(cfg: RunConfig) -> None:
    """Fail early, with one line naming the file, before hours of fitting: every input is opened and
    checked (the videos probed, the audio decoded whole, the calibration parsed, the background read),
    and no output of the run may be one of them."""
    from talksplat.core.outputs import same_file
    from talksplat.data_prep.decode import probe_video
    from talksplat.driving.audio import decode_audio, espeak_exe
    from talksplat.driving.drive import background_image, parse_background, parse_camera

    if (cfg.audio is None) == (cfg.text is None):
        raise OptionError("give exactly one of --audio FILE or --text \"...\"")
    if not cfg.videos:
        raise OptionError("no input video given")
    if not cfg.driver.enabled:
        raise OptionError("--driver.no-enabled: talksplat run always trains the audio predictor "
                          "(use `talksplat prep` and `talksplat fit --driver.no-enabled` for an avatar alone)")
    for p in (*cfg.videos, cfg.audio, cfg.calibration, cfg.lpips_weights):
        if p is not None and not Path(p).exists():
            raise InputError(f"{p}: no such file")
    parse_background(cfg.background, 16)  # a bad colour or an unreadable image fails here, not after the fit
    parse_camera(cfg.camera)
    if cfg.text is not None and espeak_exe() is None:
        raise OptionError("--text needs espeak-ng (apt-get install espeak-ng); or give --audio FILE")
    if not (len(cfg.videos) == 1 and Path(cfg.videos[0]).is_dir()):  # a NeRF-style folder is checked by prep
        for v in cfg.videos:
            probe_video(v, min_duration=1.0)
    if cfg.calibration is not None:
        from talksplat.data_prep.calibration import load_calibration

        load_calibration(cfg.calibration)
    if cfg.audio is not None:
        decode_audio(cfg.audio)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    inputs = [p for p in (*cfg.videos, cfg.audio, cfg.calibration, cfg.lpips_weights, background_image(cfg.background))
              if p is not None]
    for name in ("talk.mp4", "talk.npz", "talk.wav", "metrics.json", "run.log"):
        for p in inputs:
            if (out / name).exists() and Path(p).exists() and same_file(out / name, p):
                raise OutputError(f"{out / name}: is the input {p}; choose another --out (talksplat never "
                                  "replaces its inputs)")


def build_stages(cfg: RunConfig, on_stage: Callable[[str], None] | None = None):
    """The four stages of a run, in order (see :mod:`talksplat.stages`; prep, fit and driver as the standalone
    commands define them, :mod:`talksplat.stage_specs`); each gives ``on_stage`` its lines."""
    from talksplat.stage_specs import driver_stage, fit_stage, fit_summary, prep_stage, prep_summary

    prep, fit, drive = _resolved(cfg)
    say = on_stage or _silent

    def run_prep_stage() -> dict:
        from talksplat.data_prep.prep import run_prep

        rep = run_prep(prep)
        say(f"prep: {rep.describe()}")
        return prep_summary(rep)

    def run_fit_stage(resume: bool = False) -> dict:
        from talksplat.fit_command import fit_avatar
        from talksplat.fitting.fit_folder import CHECKPOINT

        if resume and (fit.out / CHECKPOINT).is_file():
            say(f"fit: continuing from {fit.out / CHECKPOINT}")
            m = fit_avatar(replace(fit, resume=True, overwrite=False), say)
        else:
            m = fit_avatar(fit, say)  # --overwrite: only a talksplat fit, its own files (talksplat.core.outputs)
        return fit_summary(m)

    def run_driver_stage() -> dict:
        from talksplat.fit_command import fit_predictor

        return fit_predictor(fit, require_audio=True, on_stage=say)

    return [
        prep_stage(prep, run_prep_stage),
        fit_stage(fit, run_fit_stage, resume=lambda: run_fit_stage(resume=True)),
        driver_stage(fit, run_driver_stage),
        drive_stage(drive, say),
    ]


def drive_stage(drive, on_stage: Callable[[str], None] | None = None):
    """The drive stage of a :class:`~talksplat.driving.config.DriveConfig` (its audio and background image
    keyed by contents; it depends on the fit and driver stages); ``on_stage`` gets its line."""
    from talksplat.driving.drive import background_image
    from talksplat.stage_specs import effective
    from talksplat.stages import Stage

    say = on_stage or _silent

    def run_drive_stage() -> dict:
        from talksplat.driving.drive import describe_drive, run_drive

        r = run_drive(drive)
        say(f"drive: {describe_drive(r)}")
        return r

    drive_cfg = effective(drive, ("avatar", "audio", "out", "quiet", "device", "batch"))
    drive_inputs = {"audio": drive.audio, "background": background_image(drive.background)}
    return Stage("drive", drive_inputs, drive_cfg, [drive.out, drive.out.with_suffix(".npz")], run_drive_stage,
                 depends=("driver", "fit"))


def _silent(text: str) -> None:
    pass


def run_pipeline(cfg: RunConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """Do the work of `talksplat run`; returns the summary written to WORKDIR/metrics.json (its text:
    :func:`summary_text`).  ``on_stage`` gets each stage decision (also in WORKDIR/run.log) and each stage's
    result as it comes."""
    from talksplat.core.outputs import output_lock

    check_inputs(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        return _run_stages(cfg, out, on_stage or _silent)


def _run_stages(cfg: RunConfig, out: Path, say: Callable[[str], None]) -> dict:
    from talksplat.stage_cache import StageCache
    from talksplat.stages import StageRunner

    runner = StageRunner(out, force=tuple(cfg.force), echo=say, cache=StageCache())
    for stage in build_stages(cfg, say):
        runner.run(stage)
    summary = {"workdir": str(out),
               "outputs": {"dataset": str(out / "dataset"), "avatar": str(out / "avatar"),
                           "video": str(out / "talk.mp4"), "params": str(out / "talk.npz"),
                           "audio": str(out / "talk.wav"), "heldout_images": str(out / "avatar" / "heldout")},
               "stages": {name: {"status": runner.status[name], "seconds": runner.records[name]["seconds"]}
                          for name in STAGE_NAMES},
               **{name: runner.records[name]["summary"] for name in STAGE_NAMES}}
    write_json(out / "metrics.json", summary)
    return summary


def summary_text(s: dict) -> str:
    """A run's summary (WORKDIR/metrics.json) as text: where everything is and the evaluation figures."""
    from talksplat.fit_command import predictor_text, heldout_text

    prep, fit, drv, drive = s["prep"], s["fit"], s["driver"], s["drive"]
    lines = [f"talksplat run: {s['workdir']}"]
    for name in STAGE_NAMES:
        st = s["stages"][name]
        lines.append(f"  {name:7s} {st['status']:6s} ({st['seconds']:.1f} s when it ran)")
    err = prep.get("tracking_error") or {}
    lines.append(f"  dataset  {s['outputs']['dataset']}: {prep['timesteps']} time steps"
                 + (f", tracking error {100 * err['mean_iod']:.2f}% of the inter-ocular distance" if err else ""))
    h = fit.get("heldout", {})
    lines.append(f"  avatar   {s['outputs']['avatar']}: {fit['num_gaussians']:,} Gaussians{heldout_text(h)}"
                 + (f" (images: {s['outputs']['heldout_images']})" if "psnr" in h else ""))
    lines.append(f"  driver   audio predictor: {predictor_text(drv)}")
    lines.append(f"  video    {s['outputs']['video']}: {drive['frames']} frames, {drive['audio_seconds']:.2f} s "
                 f"(+ {Path(s['outputs']['params']).name}, {Path(s['outputs']['audio']).name})")
    lines.append(f"  figures  {Path(s['workdir']) / 'metrics.json'}")
    return "\n".join(lines)
