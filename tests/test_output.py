"""Stdout belongs to the CLI: library code returns reports, the CLI prints them.

Every command returns a report (a dataclass with ``describe()`` or a dict with a text function) and
``talksplat/cli.py`` prints its text (its ``COMMANDS`` table); a command with long stages is given
``on_stage=`` and calls it with each stage's line as the stage ends.  No module outside the CLI layer
(``talksplat/cli.py``, ``talksplat/cli_docs.py``) writes to stdout: no ``print()`` without ``file=``, no
writes to ``sys.stdout``, no rich ``Console()`` on stdout.  Diagnostics may go to stderr (warnings through
``talksplat.core.progress.warn``, progress bars, ``print(..., file=sys.stderr)``).  A module's own script
entry point (its ``if __name__ == "__main__":`` block and the ``main()`` of such a module, e.g.
``python -m talksplat.benchmarks.rasterizer``) is a command line of its own and may print.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("talksplat", "render", "rigs", "avatar", "data_prep", "fitting", "driving", "viewer", "benchmarks")
CLI = ("talksplat/cli.py", "talksplat/cli_docs.py")


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``"""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def _is_sys_stdout(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in ("stdout", "__stdout__")
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def stdout_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) of every write to stdout in ``source`` outside its script entry point."""
    tree = ast.parse(source)
    skip: set[int] = set()
    script = any(_is_main_guard(n) for n in tree.body)
    for n in tree.body:
        if _is_main_guard(n) or (script and isinstance(n, ast.FunctionDef) and n.name == "main"):
            skip |= {id(m) for m in ast.walk(n)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        target = f.value.value if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) \
            and f.value.attr == "buffer" else f.value if isinstance(f, ast.Attribute) else None
        if (isinstance(f, ast.Attribute) and f.attr in ("write", "writelines") and _is_sys_stdout(target)) or any(
                _is_sys_stdout(a) for a in [*node.args, *(k.value for k in node.keywords)]):
            found.append((node.lineno, "sys.stdout"))
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        keywords = {k.arg: k.value for k in node.keywords}
        if isinstance(f, ast.Name) and name == "print" and "file" not in keywords:
            found.append((node.lineno, "print() to stdout"))
        elif name == "Console" and "file" not in keywords and not (
                isinstance(keywords.get("stderr"), ast.Constant) and keywords["stderr"].value is True):
            found.append((node.lineno, "rich Console() on stdout"))
        elif (name == "write" and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "os"
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == 1):
            found.append((node.lineno, "os.write(1, ...)"))
    return sorted(found)


def library_modules() -> list[Path]:
    files = [p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    return [p for p in files if p.relative_to(ROOT).as_posix() not in CLI]


def test_library_code_never_writes_to_stdout():
    bad = [f"{p.relative_to(ROOT)}:{line}: {what}"
           for p in library_modules() for line, what in stdout_writes(p.read_text())]
    assert not bad, ("library code writes to stdout (return a report, or take on_stage=, and let "
                     "talksplat/cli.py print it; diagnostics go to stderr):\n" + "\n".join(bad))


def test_the_check_sees_each_kind_of_write_and_allows_stderr_and_script_entry_points():
    source = textwrap.dedent("""
        import os, sys
        from rich.console import Console

        def f(x):
            print(x)                                  # 6
            print(x, file=sys.stdout)                 # 7
            sys.stdout.buffer.write(x) if sys.stdout.isatty() else sys.stdout.write(x)  # 8
            Console().print(x)                        # 9
            os.write(1, b"x")                         # 10
            print(x, file=sys.stderr)
            Console(stderr=True).print(x)
            os.write(2, b"x")

        def main():
            print("a script's own output")

        if __name__ == "__main__":
            print(main())
    """)
    assert [line for line, _ in stdout_writes(source)] == [6, 7, 8, 8, 9, 10]
    # main() is exempt only in a module that runs as a script
    assert [line for line, _ in stdout_writes("def main():\n    print(1)\n")] == [2]


def test_every_command_returns_its_report_to_the_cli():
    """Each row of the CLI's table names a text for the report (or runs long stages and says them itself)."""
    from talksplat.cli import COMMANDS, ROWS

    for config, (target, text, staged) in COMMANDS.items():
        assert ":" in target, config
        assert text is not None or staged, f"{config.__name__}: returns nothing the CLI prints"
        assert text is None or callable(text) or text == ROWS, config
