"""`talksplat fit`: the Gaussian avatar (talksplat.fitting), then the audio predictor (talksplat.driving).

The two stages live in their own packages (driving may import fitting, not the reverse); this thin
command holds their joint config (:class:`FitCommandConfig`: the avatar's :class:`FitConfig` plus the
predictor's `--driver.*`), runs them in order and says what each measured (``on_stage``, one line per stage).
Each finished stage is recorded in the stage cache (talksplat.stage_cache), so that `talksplat run` with the
same inputs and options reuses it.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from talksplat.driving.config import PredictorConfig
from talksplat.fitting.config import FitConfig


@dataclass
class FitCommandConfig(FitConfig):
    """Fit a Gaussian avatar to a dataset made by `talksplat prep`, then its audio-to-rig predictor.

    Writes OUT/avatar.safetensors (+ .ply), tuned per-frame rig parameters, metrics.json with
    held-out PSNR/SSIM (full frame and mouth), side-by-side renders of held-out frames, a
    resumable checkpoint, and OUT/driver.safetensors (the audio predictor, see `talksplat drive`).
    """

    driver: PredictorConfig = field(default_factory=PredictorConfig)
    """The audio-to-rig predictor trained after the avatar (see `talksplat drive`)."""
    driver_only: bool = False
    """Train only the audio predictor (beside an existing avatar in --out, or alone)."""


def run_fit_command(cfg: FitCommandConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """Fit the avatar (unless ``--driver-only``), then the audio predictor (unless disabled); record each in
    the stage cache (talksplat.stage_specs.record).

    Holds the lock of OUT throughout (talksplat.core.outputs).  ``on_stage`` gets each stage's line
    (:func:`avatar_line`, :func:`predictor_line`) as the stage ends.  Returns the metrics written to OUT/metrics.json."""
    from talksplat.core.outputs import output_lock
    from talksplat.fitting.fit_folder import AVATAR, path
    from talksplat.stage_specs import avatar_product, dataset_identity, driver_stage, fit_stage, fit_summary, record

    metrics: dict = {}
    dataset_done = functools.cache(lambda: dataset_identity(cfg.dataset))  # what the dataset holds, read once
    with output_lock(cfg.out):
        fit_done = None  # what the avatar stage left (talksplat.stage_cache.identity)
        if not cfg.driver_only:
            t0 = time.perf_counter()
            metrics = fit_avatar(cfg, on_stage)
            fit_done = record(fit_stage(cfg), dataset_done, fit_summary(metrics), time.perf_counter() - t0)
        if cfg.driver.enabled or cfg.driver_only:
            t0 = time.perf_counter()
            m = fit_predictor(cfg, require_audio=cfg.driver_only, on_stage=on_stage)
            if m is not None:
                metrics["driver"] = m
                if fit_done is not None or (cfg.driver_only and path(cfg.out, AVATAR).is_file()):
                    record(driver_stage(cfg), lambda: {**dataset_done(),
                                                       "fit": fit_done or avatar_product(cfg).identity()},
                           m, time.perf_counter() - t0)
    return metrics


def fit_avatar(cfg: FitConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """The avatar stage of `talksplat fit`: returns its metrics (OUT/metrics.json), and gives
    ``on_stage`` their line (:func:`avatar_line`)."""
    from talksplat.fitting.trainer import run_fit

    metrics = run_fit(cfg)
    if on_stage is not None:
        on_stage(avatar_line(cfg.out, metrics))
    return metrics


def avatar_line(out, metrics: dict) -> str:
    """The avatar stage's line: "wrote OUT: N Gaussians after S steps (...); held-out PSNR ..."."""
    return (f"wrote {out}: {metrics['num_gaussians']} Gaussians after {metrics['step']} steps "
            f"({metrics['steps_per_second']:.2f} steps/s){heldout_text(metrics.get('heldout', {}))}")


def heldout_text(h: dict) -> str:
    """The avatar's held-out figures (a fit's metrics.json -> heldout) as "; held-out PSNR ...", or ""."""
    return ((f"; held-out PSNR {h['psnr']:.2f} dB, SSIM {h['ssim']:.4f}" if "psnr" in h else "")
            + (f", mouth PSNR {h['mouth_psnr']:.2f} dB" if "mouth_psnr" in h else "")
            + (f", LPIPS {h['lpips']:.4f}" if "lpips" in h else ""))


def predictor_text(m: dict) -> str:
    """The audio predictor's held-out figures (metrics.json -> driver) as one phrase."""
    h = m.get("heldout")
    return (f"held-out lip vertex error {h['lve_mm2']:.2f} mm² (mean-expression baseline "
            f"{h['lve_mean_baseline_mm2']:.2f} mm²), mouth-opening correlation {h['mouth_open_corr']:.3f}"
            if h else "no held-out time steps to evaluate")


def fit_predictor(cfg: FitCommandConfig, require_audio: bool = True,
               on_stage: Callable[[str], None] | None = None) -> dict | None:
    """The audio-predictor stage of `talksplat fit`: trains OUT/driver.safetensors on the dataset's audio.

    Returns the predictor's metrics (``on_stage`` gets their line, :func:`predictor_line`), or None (with a
    warning) when the dataset has no audio and ``require_audio`` is false; with ``require_audio`` the
    trainer's error names the dataset."""
    from talksplat.core.outputs import output_lock
    from talksplat.core.progress import warn
    from talksplat.driving.train import PredictorTrainingError, train_predictor_on_dataset
    from talksplat.fitting.trainer import load_dataset_rig, open_dataset
    from talksplat.render.device import pick_device

    with output_lock(cfg.out):
        ds = open_dataset(cfg.dataset)
        if ds.audio_path is None or not ds.audio_path.is_file():
            if require_audio:
                raise PredictorTrainingError(f"{ds.root}: the dataset has no audio.wav (the video had no sound): the "
                                          "audio predictor needs the subject's speech; use --driver.no-enabled to "
                                          "skip it")
            warn(f"{ds.root} has no audio: skipping the audio predictor")
            return None
        rig = load_dataset_rig(ds, cfg.rig)
        prepare_predictor_dir(cfg)
        _, m = train_predictor_on_dataset(ds, cfg.out, rig, cfg.driver, progress=_progress(cfg),
                                          device=pick_device(cfg.device))
    if on_stage is not None:
        on_stage(predictor_line(cfg.out, m))
    return m


def prepare_predictor_dir(cfg: FitCommandConfig) -> None:
    """Check OUT before the predictor is written into it (a fit folder or a new one; the dataset not inside)
    and mark it (talksplat.core.outputs)."""
    from talksplat.core.outputs import check_output_dir, write_marker

    check_output_dir(cfg.out, "fit", overwrite=False, inputs=(cfg.dataset,), allow_existing=True)
    write_marker(cfg.out, "fit")


def predictor_line(out, m: dict) -> str:
    """The audio-predictor stage's line: "wrote OUT/driver.safetensors: audio predictor, ..."."""
    return f"wrote {out}/driver.safetensors: audio predictor, {m['steps']} steps in {m['seconds']:.1f} s; {predictor_text(m)}"


def _progress(cfg: FitConfig):
    """A one-line progress display on stderr when it is a terminal (None otherwise)."""
    from talksplat.core.progress import show_progress

    if not show_progress(cfg.quiet):
        return None

    def show(step: int, total: int, loss: float, rate: float) -> None:
        print(f"\raudio predictor: step {step}/{total}  loss {loss:.4f}  {rate:.1f} steps/s", end="",
              file=sys.stderr, flush=True)
        if step == total:
            print(file=sys.stderr)

    return show
