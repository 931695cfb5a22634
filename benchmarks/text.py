"""A benchmark's rows as text: what `talksplat bench ...` prints (the CLI prints it, the benchmark returns it)."""

from __future__ import annotations


def table_text(table) -> str:
    """A rich ``Table`` rendered as the terminal would show it (its width; colour when stdout is a terminal),
    without printing it."""
    import io
    import sys

    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, force_terminal=sys.stdout.isatty()).print(table)
    return buffer.getvalue().rstrip("\n")
