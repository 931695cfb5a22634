"""The fit folder has one writer that names its files (talksplat.fitting.fit_folder) and one reader
(talksplat.driving.fit_reader.open_fit)."""

from __future__ import annotations

import ast
from pathlib import Path

from talksplat.core.outputs import KINDS
from talksplat.fitting import fit_folder

ROOT = Path(__file__).resolve().parents[1]
NAMES = (fit_folder.AVATAR, fit_folder.PLY, fit_folder.TUNED, fit_folder.DRIVER, fit_folder.CHECKPOINT)
#: Modules that may spell the names: the writer, and the output-folder rules of the core (below fitting).
ALLOWED = {"fitting/fit_folder.py", "talksplat/core/outputs.py"}


def test_output_rules_know_every_file():
    files = KINDS["fit"]["files"]
    assert all(name in files for name in (*NAMES, fit_folder.METRICS)) and f"{fit_folder.HELDOUT}/*.png" in files


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants a module computes with: not documentation (a string statement) and not the
    literal text of an f-string message."""
    tree = ast.parse(path.read_text())
    text = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    text |= {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in text]


def test_only_the_writer_names_the_files():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.split("/")[0] in {"tests", ".venv", "build", "scripts"} or rel in ALLOWED:
            continue
        found += [f"{rel}:{line}: {s!r}" for line, s in _code_strings(path) if any(n in s for n in NAMES)]
    assert not found, found
