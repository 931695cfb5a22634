"""The `talksplat` command: thin tyro entry points over config dataclasses.

Each subcommand is a dataclass whose docstrings are the help text; the work lives in the
modules they call.  Errors the user can fix end as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import warnings

# Before torch (and its OpenMP runtime) is imported by the configs below: idle OpenMP workers must sleep,
# not spin, or every command slows down several-fold when anything else uses the cores.  A user who
# set the OpenMP waiting (OMP_WAIT_POLICY or GOMP_SPINCOUNT, e.g. on a dedicated machine) keeps it.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from typing import Annotated, Callable, Union

import tyro

from talksplat.batch_command import BatchConfig
from talksplat.benchmarks.config import (BenchDriveConfig, BenchEncodeConfig, BenchFidelityConfig, BenchFitConfig,
                                         BenchGpuConfig, BenchLoadConfig, BenchPrepConfig, BenchRenderConfig,
                                         BenchRigConfig, BenchTextSyncConfig)
from talksplat.data_prep.config import PrepConfig
from talksplat.demo.command import DemoConfig
from talksplat.driving.config import DriveConfig, SyncEvalConfig
from talksplat.fit_command import FitCommandConfig
from talksplat.render_command import RenderConfig
from talksplat.run_command import RunConfig
from talksplat.viewer.config import ViewConfig


Bench = Union[
    Annotated[BenchRenderConfig, tyro.conf.subcommand("render")],
    Annotated[BenchRigConfig, tyro.conf.subcommand("rig")],
    Annotated[BenchPrepConfig, tyro.conf.subcommand("prep")],
    Annotated[BenchFitConfig, tyro.conf.subcommand("fit")],
    Annotated[BenchDriveConfig, tyro.conf.subcommand("drive")],
    Annotated[BenchLoadConfig, tyro.conf.subcommand("load")],
    Annotated[BenchTextSyncConfig, tyro.conf.subcommand("text-sync")],
    Annotated[BenchEncodeConfig, tyro.conf.subcommand("encode")],
    Annotated[BenchGpuConfig, tyro.conf.subcommand("gpu")],
    Annotated[BenchFidelityConfig, tyro.conf.subcommand("fidelity")],
]

@dataclasses.dataclass
class _NoEval:
    """Never parsed: a hidden second member, so that `eval` stays a group while `sync` is its only command (a
    one-member Union is the member itself, and tyro would make `eval` the command)."""


Eval = Union[
    Annotated[SyncEvalConfig, tyro.conf.subcommand("sync")],
    Annotated[_NoEval, tyro.conf.Suppress],
]

Command = Union[
    Annotated[PrepConfig, tyro.conf.subcommand("prep")],
    Annotated[FitCommandConfig, tyro.conf.subcommand("fit")],
    Annotated[DriveConfig, tyro.conf.subcommand("drive")],
    Annotated[RunConfig, tyro.conf.subcommand("run")],
    Annotated[BatchConfig, tyro.conf.subcommand("batch")],
    Annotated[DemoConfig, tyro.conf.subcommand("demo")],
    Annotated[RenderConfig, tyro.conf.subcommand("render")],
    Annotated[ViewConfig, tyro.conf.subcommand("view")],
    Annotated[Eval, tyro.conf.subcommand("eval", description="Evaluations: lip sync of a fitted avatar against real speakers.")],
    Annotated[Bench, tyro.conf.subcommand("bench", description="Benchmarks: speed of rendering, rigs, prep, fitting and driving; the video encoder; slowdown under CPU load; articulation on speech in several languages; one table for a GPU machine; held-out fidelity on real video.")],
]


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
        for line in getattr(e, "lines", None) or [e]:  # a manifest's errors: one line each
            print(f"talksplat: error: {_one_line(line)}", file=sys.stderr)
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


def _say(text: str) -> None:
    """The CLI's one way to show a line on stdout while a command runs (a long stage's result, a URL)."""
    print(text, flush=True)


def _wrote(report) -> str:
    return f"wrote {report.out}: {report.describe()}"


def _wrote_drive(report: dict) -> str:
    from talksplat.driving.drive import describe_drive

    csv = f" and {report['arkit_csv']}" if report.get("arkit_csv") else ""
    return f"wrote {report['video']} and {report['params']}{csv}: {describe_drive(report)}"


def _sync_table(report: dict) -> str:
    from talksplat.driving.sync_eval import format_table

    return format_table(report)


def _wrote_files(paths: list) -> str:
    return "\n".join(f"wrote {p}" for p in paths)


def _run_text(summary: dict) -> str:
    from talksplat.run_command import summary_text

    return summary_text(summary)


def _batch_text(summary: dict) -> str:
    from talksplat.batch_command import summary_text

    return summary_text(summary)


def _demo_text(metrics: dict) -> str:
    from talksplat.demo.command import demo_text

    return demo_text(metrics)


def _view_text(report: dict) -> str:
    return "talksplat view: stopped"


#: A benchmark's rows are shown by its own module's ``rows_text`` (a table).
ROWS = "rows_text"

#: Each command: its config type -> ("module:function" that runs it, its report's text: a function of the
#: returned report, the name of one in the command's module (:data:`ROWS`), or None, and whether it runs long
#: stages).  The module is imported only when its command runs, so `--help` reads the config modules alone.
#: Library code never prints to stdout (tests/test_output.py): a command returns its report and the CLI prints
#: the report's text.  A command with long stages (fit, run, demo, view) is also given ``on_stage=``, which it
#: calls with each stage's line as the stage ends (or the viewer's URL once serving), so they show at once.
COMMANDS: dict[type, tuple[str, Callable | str | None, bool]] = {
    PrepConfig: ("talksplat.prep_command:run_prep_command", _wrote, False),
    FitCommandConfig: ("talksplat.fit_command:run_fit_command", None, True),
    DriveConfig: ("talksplat.driving.drive:run_drive", _wrote_drive, False),
    RunConfig: ("talksplat.run_command:run_pipeline", _run_text, True),
    BatchConfig: ("talksplat.batch_command:run_batch", _batch_text, True),
    DemoConfig: ("talksplat.demo.command:run_demo", _demo_text, True),
    RenderConfig: ("talksplat.render_command:run_render", _wrote_files, False),
    ViewConfig: ("talksplat.viewer.server:run_view", _view_text, True),
    SyncEvalConfig: ("talksplat.driving.sync_eval:run_sync_eval", _sync_table, False),
    BenchRenderConfig: ("talksplat.benchmarks.render:bench_render", ROWS, False),
    BenchRigConfig: ("talksplat.benchmarks.rig:bench_rig", ROWS, False),
    BenchPrepConfig: ("talksplat.benchmarks.prep:bench_prep", ROWS, False),
    BenchFitConfig: ("talksplat.benchmarks.fit:bench_fit", ROWS, False),
    BenchDriveConfig: ("talksplat.benchmarks.drive:bench_drive", ROWS, False),
    BenchLoadConfig: ("talksplat.benchmarks.contention:bench_load", ROWS, False),
    BenchTextSyncConfig: ("talksplat.benchmarks.text_sync:bench_text_sync", ROWS, False),
    BenchEncodeConfig: ("talksplat.benchmarks.encode:bench_encode", ROWS, False),
    BenchGpuConfig: ("talksplat.benchmarks.gpu_check:bench_gpu", ROWS, False),
    BenchFidelityConfig: ("talksplat.benchmarks.fidelity:bench_fidelity", ROWS, False),
}


def _run(cfg) -> None:
    """Run the command of a parsed config (:data:`COMMANDS`) and print its report."""
    target, text, staged = COMMANDS[type(cfg)]
    module_name, _, function = target.partition(":")
    module = importlib.import_module(module_name)
    run = getattr(module, function)
    report = run(cfg, on_stage=_say) if staged else run(cfg)
    if isinstance(text, str):
        text = getattr(module, text)
    if text is not None:
        _say(text(report))


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
