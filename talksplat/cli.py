"""The `talksplat` command: thin tyro entry points over config dataclasses.

Each subcommand is a dataclass whose docstrings are the help text; the work lives in the
modules they call.  Errors the user can fix end as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass
from typing import Annotated, Union

import tyro

from talksplat.benchmarks.drive import BenchDriveConfig
from talksplat.benchmarks.fit import BenchFitConfig
from talksplat.benchmarks.prep import BenchPrepConfig
from talksplat.benchmarks.render import BenchRenderConfig
from talksplat.data_prep.prep import PrepConfig
from talksplat.demo.command import DemoConfig
from talksplat.driving.drive import DriveConfig
from talksplat.fitting.config import FitConfig
from talksplat.render_command import RenderConfig
from talksplat.run_command import RunConfig
from talksplat.viewer.server import ViewConfig


@dataclass
class BenchRigConfig:
    """Time rig evaluation alone (blendshapes + skinning) for a batch of frames."""

    rig: str = "open"
    """Head rig spec (see `talksplat render --help`)."""
    batch: int = 64
    """Frames posed per call."""
    iters: int = 10
    """Timed calls."""


Bench = Union[
    Annotated[BenchRenderConfig, tyro.conf.subcommand("render")],
    Annotated[BenchRigConfig, tyro.conf.subcommand("rig")],
    Annotated[BenchPrepConfig, tyro.conf.subcommand("prep")],
    Annotated[BenchFitConfig, tyro.conf.subcommand("fit")],
    Annotated[BenchDriveConfig, tyro.conf.subcommand("drive")],
]

Command = Union[
    Annotated[PrepConfig, tyro.conf.subcommand("prep")],
    Annotated[FitConfig, tyro.conf.subcommand("fit")],
    Annotated[DriveConfig, tyro.conf.subcommand("drive")],
    Annotated[RunConfig, tyro.conf.subcommand("run")],
    Annotated[DemoConfig, tyro.conf.subcommand("demo")],
    Annotated[RenderConfig, tyro.conf.subcommand("render")],
    Annotated[ViewConfig, tyro.conf.subcommand("view")],
    Annotated[Bench, tyro.conf.subcommand("bench", description="Benchmarks: speed of rendering, rigs, prep, fitting and driving.")],
]


def _bench_rig(cfg: BenchRigConfig) -> None:
    import time

    import torch

    from talksplat.rigs import load_rig

    rig = load_rig(cfg.rig)
    p = rig.zero_params(cfg.batch)
    p.expression.uniform_(0, 1)
    p.jaw[:, 0].uniform_(0, 0.3)
    with torch.no_grad():
        rig(p)
        t0 = time.perf_counter()
        for _ in range(cfg.iters):
            rig(p)
        dt = (time.perf_counter() - t0) / cfg.iters
    print(f"rig {rig.name}: {rig.num_vertices} vertices, batch {cfg.batch}: {1e3 * dt:.1f} ms per call, "
          f"{cfg.batch / dt:.0f} frames/s")


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(Command, args=argv, prog="talksplat",
                   description="talksplat: talking Gaussian head avatars from video.")
    from talksplat.avatar.io import AvatarFileError

    # a refused or unreadable FLAME pickle (talksplat.rigs.safe_pickle) is the user's file, not a bug
    errors: tuple[type[BaseException], ...] = (AvatarFileError, FileNotFoundError, ValueError,
                                               pickle.UnpicklingError)
    if isinstance(cfg, (PrepConfig, RunConfig, DemoConfig)):
        from talksplat.data_prep.prep import prep_errors

        errors = errors + prep_errors()
    if isinstance(cfg, (FitConfig, RunConfig, DemoConfig)):
        from talksplat.fitting.trainer import FitError

        errors = errors + (FitError,)
    try:
        if isinstance(cfg, PrepConfig):
            from talksplat.data_prep.prep import run_prep

            rep = run_prep(cfg)
            print(f"wrote {rep.out}: {rep.describe()}")
        elif isinstance(cfg, FitConfig):
            from talksplat.fit_command import run_fit_command

            run_fit_command(cfg)
        elif isinstance(cfg, DriveConfig):
            from talksplat.driving.drive import describe_drive, run_drive

            r = run_drive(cfg)
            print(f"wrote {r['video']} and {r['params']}: {describe_drive(r)}")
        elif isinstance(cfg, RunConfig):
            from talksplat.run_command import run_pipeline

            run_pipeline(cfg)
        elif isinstance(cfg, DemoConfig):
            from talksplat.demo.command import run_demo

            run_demo(cfg)
        elif isinstance(cfg, RenderConfig):
            from talksplat.render_command import run_render

            for path in run_render(cfg):
                print(f"wrote {path}")
        elif isinstance(cfg, ViewConfig):
            from talksplat.viewer.server import run_view

            run_view(cfg)
        elif isinstance(cfg, BenchRenderConfig):
            from talksplat.benchmarks.render import bench_render, print_rows

            print_rows(bench_render(cfg))
        elif isinstance(cfg, BenchPrepConfig):
            from talksplat.benchmarks.prep import bench_prep, print_rows as print_prep

            print_prep(bench_prep(cfg))
        elif isinstance(cfg, BenchFitConfig):
            from talksplat.benchmarks.fit import bench_fit, print_rows as print_fit

            print_fit(bench_fit(cfg))
        elif isinstance(cfg, BenchDriveConfig):
            from talksplat.benchmarks.drive import bench_drive, print_rows as print_drive

            print_drive(bench_drive(cfg))
        elif isinstance(cfg, BenchRigConfig):
            _bench_rig(cfg)
    except errors as e:
        print(f"talksplat: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
