"""Imports flow one way, and `--help` stays light.

The layers, lowest first (docs/architecture.md draws them):

    core <- render <- rigs <- avatar <- data_prep <- fitting <- driving <- viewer <- talksplat <- benchmarks <- cli

A module may import its own layer and the layers below it, never one above.  ``talksplat`` is the command
layer (run, demo, render and fit commands, stage records); ``benchmarks`` time everything below them;
``cli`` is the entry point (``talksplat/cli.py``, ``talksplat/cli_docs.py``), which dispatches to all.
Every import counts: module level, inside functions (lazy), under ``TYPE_CHECKING``, relative or absolute.
This test, not a code-graph program, is the source of truth (the top-level folders map into ``talksplat.*``
through ``package-dir``, which such programs often ignore).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("core", "render", "rigs", "avatar", "data_prep", "fitting", "driving", "viewer", "talksplat",
          "benchmarks", "cli")
FOLDERS = ("render", "rigs", "avatar", "data_prep", "fitting", "driving", "viewer", "benchmarks")
ENTRY = ("talksplat.cli", "talksplat.cli_docs")


def module_name(path: Path) -> str:
    """``render/cpu.py`` -> ``talksplat.render.cpu``; ``talksplat/core/files.py`` -> ``talksplat.core.files``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts if parts[0] == "talksplat" else ["talksplat"] + parts)


def layer(module: str) -> str | None:
    """The layer of a ``talksplat.*`` module name (None: not ours)."""
    parts = module.split(".")
    if parts[0] != "talksplat":
        return None
    if any(module == e or module.startswith(e + ".") for e in ENTRY):
        return "cli"
    if len(parts) > 1 and (parts[1] == "core" or parts[1] in FOLDERS):
        return parts[1]
    return "talksplat"


def our_modules() -> list[Path]:
    files = sorted((ROOT / "talksplat").rglob("*.py"))
    for folder in FOLDERS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved, lazy ones included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from talksplat import cli` names a module, not an attribute
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names if target == "talksplat"]
    return found


def wrong_way_edges() -> list[str]:
    bad = []
    for path in our_modules():
        own = layer(module_name(path))
        for line, target in imported(path):
            other = layer(target)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {target} ({other})")
    return bad


def test_every_module_is_found():
    names = {module_name(p) for p in our_modules()}
    assert {"talksplat.core.files", "talksplat.render.cpu", "talksplat.rigs.base", "talksplat.cli",
            "talksplat.viewer.server", "talksplat.benchmarks.render"} <= names
    assert all(layer(n) in LAYERS for n in names)


def test_the_checker_sees_lazy_relative_and_wrong_way_imports(tmp_path, monkeypatch):
    """The checker itself: a lazy relative import from render up to fitting is an edge it reports."""
    fake_root = tmp_path
    (fake_root / "render").mkdir()
    (fake_root / "talksplat").mkdir()
    (fake_root / "render" / "bad.py").write_text("def f():\n    from ..fitting import trainer\n")
    (fake_root / "render" / "good.py").write_text("from talksplat.core.files import atomic_write\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert wrong_way_edges() == ["render/bad.py:2: render imports talksplat.fitting (fitting)"]


def test_imports_flow_one_way():
    assert wrong_way_edges() == []


def test_core_imports_nothing_of_ours_but_itself():
    for path in sorted((ROOT / "talksplat" / "core").rglob("*.py")):
        for line, target in imported(path):
            assert layer(target) in (None, "core"), f"{path.relative_to(ROOT)}:{line} imports {target}"


def test_help_does_not_import_torch():
    """`talksplat --help` and `talksplat <cmd> --help` read only the torch-free config modules."""
    code = ("import sys\nfrom talksplat.cli import main\n"
            "for argv in ([], ['prep'], ['fit'], ['drive'], ['run'], ['view'], ['render'], ['demo'], "
            "['bench', 'render']):\n"
            "    try:\n        main(argv + ['--help'])\n    except SystemExit:\n        pass\n"
            "heavy = sorted(m for m in ('torch', 'cv2', 'mediapipe', 'viser', 'scipy') if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage: talksplat" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "HEAVY []"
