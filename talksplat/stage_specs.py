"""The cacheable stages (prep, fit, driver) as `talksplat run` and the standalone `talksplat prep` and
`talksplat fit` share them: each stage's inputs, effective config (the options that change its output), what
it leaves (:class:`~talksplat.stage_cache.Product`) and its summary.  One definition, so that a standalone
command records its result under the key that `talksplat run` looks up (talksplat.stage_cache).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from talksplat.stage_cache import Product, StageCache, index_dir
from talksplat.stages import Stage, jsonable, unrunnable

if TYPE_CHECKING:
    from talksplat.data_prep.config import PrepConfig
    from talksplat.data_prep.prep import PrepReport
    from talksplat.fit_command import FitCommandConfig

#: Options that do not change a stage's output: paths, display, speed, where it runs (and, for fit, the
#: predictor's options: the driver stage's).  Input files are keyed by their contents instead.
PREP_IGNORED = ("videos", "out", "overwrite", "quiet", "device", "calibration", "landmark_embedding")
FIT_IGNORED = ("dataset", "out", "resume", "overwrite", "quiet", "device", "driver", "driver_only", "log_every",
               "checkpoint_every", "cache_mb", "tensorboard", "lpips_weights")
#: Fields of a fit's metrics.json in a stage's summary (metrics.json of `talksplat run`).
FIT_SUMMARY = ("num_gaussians", "step", "steps_per_second", "seconds", "device", "heldout")


def effective(config, ignored: tuple[str, ...] = ()) -> dict:
    """A config's fields as JSON minus the ``ignored`` ones (those that do not change the stage's output)."""
    return {k: v for k, v in jsonable(config).items() if k not in ignored}


# ------------------------------------------------------------------ prep
def prep_stage(cfg: PrepConfig, run: Callable[[], dict] = unrunnable) -> Stage:
    """The prep stage of ``cfg`` (``run``: does it; the default only describes it)."""
    return Stage("prep", {**{f"video{i}": v for i, v in enumerate(cfg.videos)}, "calibration": cfg.calibration},
                 effective(cfg, PREP_IGNORED), [Path(cfg.out) / "meta.json"], run, location=Path(cfg.out),
                 product=dataset_product(cfg.out, cfg), cache_parts=lambda: _prep_cache_parts(cfg))


def _prep_cache_parts(cfg: PrepConfig) -> dict[str, str]:
    """The videos' resolved paths (meta.json records them) and a --landmark-embedding file's contents."""
    from talksplat.core.files import file_digest

    parts = {"sources": json.dumps([str(Path(v).resolve()) for v in cfg.videos])}
    if cfg.landmark_embedding is not None:
        parts["input:landmark_embedding"] = file_digest(cfg.landmark_embedding)
    return parts


def dataset_product(folder: str | Path, cfg: PrepConfig | None = None) -> Product:
    """A dataset folder as the prep stage leaves it: every dataset file (talksplat.core.outputs.KINDS); with
    ``cfg``, adopted as `talksplat prep` with ``cfg`` writes it (a new folder swapped in, the marker)."""
    from talksplat.core.outputs import KINDS, write_marker

    folder = Path(folder)

    def prepare() -> None:
        from talksplat.data_prep.dataset import check_output_dir

        check_output_dir(folder, cfg.overwrite, [*cfg.videos, cfg.calibration, cfg.landmark_embedding])

    return Product(folder, tuple(KINDS["dataset"]["files"]), whole=True, prepare=prepare if cfg else None,
                   place=lambda where: write_marker(where, "dataset"))


def prep_summary(rep: PrepReport) -> dict:
    """A prep's figures as the stage records them (metrics.json of `talksplat run`: ``prep``)."""
    return {"timesteps": rep.num_timesteps, "images": rep.num_images, "dropped": len(rep.dropped),
            "interpolated": len(rep.interpolated), "tracking_error": rep.tracking_error,
            "timings": {k: round(v, 2) for k, v in rep.timings.items()}}


# ------------------------------------------------------------------ fit: the avatar, then the predictor
def fit_stage(cfg: FitCommandConfig, run: Callable[[], dict] = unrunnable,
              resume: Callable[[], dict] | None = None) -> Stage:
    """The avatar stage of ``cfg`` (``run``, ``resume``: do it; the default only describes it)."""
    from talksplat.fitting.fit_folder import AVATAR, TUNED

    out = Path(cfg.out)
    return Stage("fit", {"lpips_weights": cfg.lpips_weights}, effective(cfg, FIT_IGNORED), [out / AVATAR, out / TUNED],
                 run, depends=("prep",), location=out, resume=resume, product=avatar_product(cfg))


def avatar_product(cfg: FitCommandConfig) -> Product:
    """What the avatar stage leaves in ``cfg.out``: the avatar, its PLY, the tuned parameters, the checkpoint,
    the held-out renders and metrics.json but its ``driver`` entry; adopted as fitting with ``cfg`` writes
    them (the folder cleared first, the avatar and checkpoint pointed at ``cfg.dataset``)."""
    from talksplat.fitting import fit_folder as ff

    def prepare() -> None:
        from talksplat.fitting.trainer import prepare_fit_dir

        prepare_fit_dir(cfg)

    return Product(Path(cfg.out), ff.AVATAR_FILES, file_digest=ff.portable_digest,
                   share=lambda folder: {k: v for k, v in ff.read_metrics(folder).items() if k != ff.DRIVER_METRICS},
                   put_share=ff.write_metrics, prepare=prepare, place=lambda folder: ff.place_avatar_files(folder, cfg))


def fit_summary(metrics: dict) -> dict:
    """An avatar's figures (its metrics.json) as the stage records them (`talksplat run`'s ``fit``)."""
    return {k: metrics[k] for k in FIT_SUMMARY if k in metrics}


def driver_stage(cfg: FitCommandConfig, run: Callable[[], dict] = unrunnable) -> Stage:
    """The audio-predictor stage of ``cfg`` (``run``: does it; the default only describes it)."""
    from talksplat.fitting.fit_folder import DRIVER

    return Stage("driver", {}, effective(cfg.driver), [Path(cfg.out) / DRIVER], run, depends=("prep", "fit"),
                 product=driver_product(cfg), cache_parts=lambda: _driver_cache_parts(cfg))


def _driver_cache_parts(cfg: FitCommandConfig) -> dict[str, str]:
    """The contents of the predictor's other inputs: --driver.extra-data datasets, an ``hf:DIR`` encoder."""
    from talksplat.core.files import file_digest

    parts = {f"input:extra_data{i}": file_digest(p) for i, p in enumerate(cfg.driver.extra_data)}
    if cfg.driver.encoder.startswith("hf:"):
        parts["input:encoder"] = file_digest(cfg.driver.encoder[3:])
    return parts


def driver_product(cfg: FitCommandConfig) -> Product:
    """What the predictor stage leaves in ``cfg.out``: driver.safetensors and metrics.json's ``driver``; adopted
    as training beside the avatar there writes them (bound to that avatar)."""
    from talksplat.driving.predictor import set_avatar_digest
    from talksplat.fitting import fit_folder as ff

    def prepare() -> None:
        from talksplat.fit_command import prepare_predictor_dir

        prepare_predictor_dir(cfg)

    def place(folder: Path) -> None:
        avatar = ff.path(folder, ff.AVATAR)
        set_avatar_digest(ff.path(folder, ff.DRIVER), avatar if avatar.is_file() else None)

    return Product(Path(cfg.out), (ff.DRIVER,), file_digest=ff.portable_digest,
                   share=lambda folder: ff.read_metrics(folder).get(ff.DRIVER_METRICS),
                   put_share=lambda folder, share: ff.record_metrics(folder, {ff.DRIVER_METRICS: share}),
                   prepare=prepare, place=place)


# ------------------------------------------------------------------ the standalone commands' records
def record(stage: Stage, upstream: Callable[[], dict[str, str]], summary: dict, seconds: float) -> str | None:
    """Record in the stage cache a stage that a standalone command finished (``upstream``: what the stages before
    it left, by name), so that `talksplat run` can reuse it.  Returns what it left (its identity), or None,
    with a warning, when that cannot be done (the command's result stands)."""
    try:
        cache = StageCache()
        key, parts = cache.key(stage, upstream())
        return cache.record(stage, key, parts, summary, round(seconds, 2))
    except (OSError, ValueError) as e:
        from talksplat.core.progress import warn

        warn(f"{stage.product.folder}: not recorded in the stage cache {index_dir()} ({' '.join(str(e).split())}); "
             "`talksplat run` will not reuse it")
        return None


def dataset_identity(folder: str | Path) -> dict[str, str]:
    """``{"prep": what the dataset in folder holds}``: the upstream of the fit stage."""
    return {"prep": dataset_product(folder).identity()}
