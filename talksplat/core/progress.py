"""Progress displays: on stderr, and only when stderr is a terminal (logs get no bars or ``\\r`` lines)."""

from __future__ import annotations

import sys


def show_progress(quiet: bool = False) -> bool:
    """Whether to draw progress bars: not ``--quiet`` and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def progress_bar(*columns, transient: bool = False):
    """A ``rich.progress.Progress`` drawing on stderr (default columns when none are given)."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), transient=transient)


def warn(message: str) -> None:
    """One warning line on stderr: ``talksplat: warning: <message>``."""
    print(f"talksplat: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)
