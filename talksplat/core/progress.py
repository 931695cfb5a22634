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


class Bars:
    """rich progress bars on stderr, one per task, and log lines above them.

    Usage::

        with Bars(quiet) as bars:
            advance, set_total = bars.task("landmarks", total)
            for item in items:
                ...
                advance()
            bars.log("a note")

    Bars are drawn only when stderr is a terminal and not ``quiet`` (:func:`show_progress`); otherwise
    ``task`` returns no-ops and ``log`` prints plain lines.  ``transient``: the bars vanish when done.
    """

    def __init__(self, quiet: bool = False, transient: bool = False):
        self.quiet = quiet
        self.transient = transient
        self._p = None

    def __enter__(self) -> "Bars":
        if show_progress(self.quiet):
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

            self._p = progress_bar(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                   TimeElapsedColumn(), transient=self.transient)
            self._p.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        p, self._p = self._p, None
        if p is not None:
            p.__exit__(*exc)

    def task(self, name: str, total: int | None):
        """A new bar: ``(advance(n=1), set_total(completed, total=None))`` (no-ops without bars)."""
        p = self._p
        if p is None:
            return lambda n=1: None, lambda completed, total=None: None
        t = p.add_task(name, total=total)
        return (lambda n=1: p.advance(t, n),
                lambda completed, total=None: p.update(t, completed=completed, total=total))

    def log(self, msg: str, warning: bool = False) -> None:
        """One line on stderr (above the bars when they are shown): ``talksplat: [warning: ]msg``;
        without ``warning`` nothing when quiet."""
        if self.quiet and not warning:
            return
        line = "talksplat: " + ("warning: " if warning else "") + " ".join(msg.split())
        if self._p is not None:
            self._p.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)
