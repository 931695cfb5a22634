"""The `talksplat` command: thin tyro entry points over config dataclasses.

Each subcommand is a dataclass whose docstrings are the help text; the work lives in the
modules they call.  Errors the user can fix end as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import sys
import warnings

# Before torch (and its OpenMP runtime) is imported by the configs below: idle OpenMP workers must sleep,
# not spin, or every command slows down several-fold when anything else uses the cores.  A user who
# set the OpenMP waiting (OMP_WAIT_POLICY or GOMP_SPINCOUNT, e.g. on a dedicated machine) keeps it.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from dataclasses import dataclass
from typing import Annotated, Union

import tyro

from talksplat.benchmarks.contention import BenchLoadConfig
from talksplat.benchmarks.drive import BenchDriveConfig
from talksplat.benchmarks.fit import BenchFitConfig
from talksplat.benchmarks.prep import BenchPrepConfig
from talksplat.benchmarks.render import BenchRenderConfig
from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.data_prep.prep import PrepConfig
from talksplat.demo.command import DemoConfig
from talksplat.driving.drive import DriveConfig
from talksplat.fitting.config import FitConfig
from talksplat.render_command import RenderConfig
from talksplat.rigs.spec import DEFAULT_RIG, RigSpec
from talksplat.run_command import RunConfig
from talksplat.viewer.server import ViewConfig


@dataclass
class BenchRigConfig(ProcessOptions):
    """Time rig evaluation alone (blendshapes + skinning) for a batch of frames."""

    rig: RigSpec = DEFAULT_RIG
    batch: Annotated[int, Range(1, 100000)] = 64
    """Frames posed per call (1 to 100000)."""
    iters: Annotated[int, Range(1)] = 10
    """Timed calls (at least 1)."""


Bench = Union[
    Annotated[BenchRenderConfig, tyro.conf.subcommand("render")],
    Annotated[BenchRigConfig, tyro.conf.subcommand("rig")],
    Annotated[BenchPrepConfig, tyro.conf.subcommand("prep")],
    Annotated[BenchFitConfig, tyro.conf.subcommand("fit")],
    Annotated[BenchDriveConfig, tyro.conf.subcommand("drive")],
    Annotated[BenchLoadConfig, tyro.conf.subcommand("load")],
]

Command = Union[
    Annotated[PrepConfig, tyro.conf.subcommand("prep")],
    Annotated[FitConfig, tyro.conf.subcommand("fit")],
    Annotated[DriveConfig, tyro.conf.subcommand("drive")],
    Annotated[RunConfig, tyro.conf.subcommand("run")],
    Annotated[DemoConfig, tyro.conf.subcommand("demo")],
    Annotated[RenderConfig, tyro.conf.subcommand("render")],
    Annotated[ViewConfig, tyro.conf.subcommand("view")],
    Annotated[Bench, tyro.conf.subcommand("bench", description="Benchmarks: speed of rendering, rigs, prep, fitting and driving; slowdown under CPU load.")],
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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error_text(e: OSError) -> str:
    """``/ro/out: Permission denied`` rather than ``[Errno 13] Permission denied: '/ro/out'``."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}" + (f" (-> {e.filename2})" if e.filename2 else "")
    return str(e)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings (bad but usable input) as one line, ``talksplat: warning: ...``; others as Python shows them."""
    if issubclass(category, UserWarning) and not issubclass(category, DeprecationWarning):
        print(f"talksplat: warning: {_one_line(message)}", file=sys.stderr, flush=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    """Parse, check the options, run the command.  A user error (:class:`TalksplatError`, or an OSError such as
    a read-only folder) prints one line and returns 1; Ctrl-C or SIGTERM prints "interrupted" and returns 130;
    anything else is a bug and keeps its traceback."""
    import signal

    cfg = tyro.cli(Command, args=argv, prog="talksplat",
                   description="talksplat: talking Gaussian head avatars from video.")
    from talksplat.core.checks import check_options
    from talksplat.core.errors import TalksplatError
    from talksplat.core.process import configure_threads, handle_termination

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    show_warning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        handle_termination()
        check_options(cfg)
        configure_threads(cfg.threads)
        _run(cfg)
    except TalksplatError as e:
        print(f"talksplat: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # the machine's answer about a path (permissions, disk full, a file in the way)
        print(f"talksplat: error: {_one_line(_os_error_text(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("talksplat: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show_warning
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
    return 0


def _run(cfg) -> None:
    """Dispatch a parsed config to its command."""
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
    elif isinstance(cfg, BenchLoadConfig):
        from talksplat.benchmarks.contention import bench_load, print_rows as print_load

        print_load(bench_load(cfg))
    elif isinstance(cfg, BenchRigConfig):
        _bench_rig(cfg)


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
