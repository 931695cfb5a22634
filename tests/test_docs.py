"""The user documentation cannot drift from the code.

- docs/cli.md is exactly what `python -m talksplat.cli_docs` generates;
- every flag the generator lists is spelled as tyro spells it (checked against the real `--help`),
  and every option `--help` lists is in the generated reference;
- relative links (and #anchors) in README.md and docs/*.md point to files / headings that exist;
- every message quoted in docs/troubleshooting.md is still made of string literals in the code.
"""

from __future__ import annotations

import dataclasses

import ast
import contextlib
import functools
import io
import re
from pathlib import Path

import pytest

from talksplat import cli_docs

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
STALE = "docs/cli.md is stale: run python -m talksplat.cli_docs --out docs/cli.md"


# ------------------------------------------------------------------------------ (a) generated reference
def test_cli_reference_is_up_to_date():
    path = DOCS / "cli.md"
    assert path.is_file(), STALE
    assert path.read_text(encoding="utf-8") == cli_docs.render_markdown(), STALE


def test_generator_writes_atomically(tmp_path):
    out = tmp_path / "sub" / "cli.md"
    assert cli_docs.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == cli_docs.render_markdown()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cli.md"]  # no temporary file left
    assert cli_docs.main(["--out", str(out), "--check"]) == 0
    out.write_text("old\n")
    assert cli_docs.main(["--out", str(out), "--check"]) == 1


def test_generator_walks_the_command_union():
    """Every subcommand tyro knows is documented (the list is not hard-coded anywhere)."""
    import typing

    from talksplat.cli import Command

    top = [c.path[-1] for c in cli_docs.collect()]
    assert len(top) == len(typing.get_args(Command))
    assert {"prep", "fit", "drive", "render", "view", "bench"} <= set(top)
    bench = next(c for c in cli_docs.collect() if c.path == ("bench",))
    assert {"render", "rig", "prep", "fit", "drive"} <= {c.path[-1] for c in bench.children}
    assert all(c.description for c in cli_docs.leaves(cli_docs.collect()))


@dataclasses.dataclass
class _TwoFields:
    a: int = 1
    b: int = 2
    """The second."""


def test_type_names_and_attribute_docstrings():
    from typing import Literal, Optional

    from talksplat.fit_command import FitCommandConfig
    from talksplat.fitting.config import LossConfig

    assert cli_docs.type_name(Optional[int]) == "int or none"
    assert cli_docs.type_name(tuple[float, ...]) == "float ..."
    assert cli_docs.type_name(tuple[float, float, float]) == "float float float"
    assert cli_docs.type_name(Literal["fast", "default"]) == "{fast,default}"
    assert cli_docs.type_name(Path | None) == "path or none"
    docs = cli_docs.field_docs(FitCommandConfig)  # the base class's (FitConfig's) docstrings included
    assert docs["preset"].startswith("Step count, Gaussian budget") and "\n" not in docs["preset"]
    assert cli_docs.field_docs(LossConfig)["position_limit"].startswith("Distance from its triangle")
    assert "a" not in cli_docs.field_docs(_TwoFields)  # a field followed by another field has no docstring
    assert cli_docs.field_docs(_TwoFields)["b"] == "The second."
    args, groups = cli_docs.describe_config(FitCommandConfig)
    by_flag = {a.flags[0]: a for a in args}
    assert by_flag["DATASET"].positional and by_flag["DATASET"].default is None
    assert by_flag["--resume"].flags == ["--resume", "--no-resume"]
    assert by_flag["--driver.steps"].default == "1000"
    assert by_flag["--driver.enabled"].flags == ["--driver.enabled", "--driver.no-enabled"]
    assert by_flag["--strategy.grow-grad2d"].default == "0.0002"
    assert [g.prefix for g in groups] == ["--optim.*", "--loss.*", "--strategy.*", "--driver.*"]


# ------------------------------------------------------------------------ (b) flags against `--help`
LEAVES = cli_docs.leaves(cli_docs.collect())


@functools.cache
def _help(path: tuple[str, ...]) -> str:
    from talksplat.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code in (0, None)
    return buf.getvalue()


def _has_token(text: str, token: str) -> bool:
    return re.search(r"(?<![\w.-])" + re.escape(token) + r"(?![\w.-])", text) is not None


@pytest.mark.parametrize("cmd", LEAVES, ids=lambda c: "-".join(c.path))
def test_generated_flags_match_tyro_help(cmd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one option per row: no flag is wrapped
    text = _help(cmd.path)
    listed = set()
    for arg in cmd.arguments:
        if arg.positional:
            continue
        for flag in arg.flags:
            listed.add(flag)
            assert _has_token(text, flag), (f"`talksplat {' '.join(cmd.path)} --help` has no {flag}: "
                                            f"cli_docs spells it differently from tyro")
    # and the other way: every option row of the help is documented
    flag = r"--[a-zA-Z][\w.-]*"
    rows = re.findall(rf"^[^\w-]*({flag}(?:,\s*{flag})*)", text, re.M)
    shown = {f for row in rows for f in re.findall(flag, row)} - {"--help"}
    assert shown <= listed, f"not in the generated reference: {sorted(shown - listed)}"
    if any(a.positional for a in cmd.arguments):
        assert "positional arguments" in text


# ------------------------------------------------------------------------------- (c) Markdown links
def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _strip_code(text: str) -> str:
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        s = _slug(m.group(1))
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def test_markdown_links_resolve():
    checked, broken = 0, []
    for md in _markdown_files():
        text = _strip_code(md.read_text(encoding="utf-8"))
        for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            dest = (md.parent / file_part).resolve() if file_part else md
            checked += 1
            where = f"{md.relative_to(REPO)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where}: no heading with anchor #{anchor}")
    assert checked > 0
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slug_matches_github():
    assert _slug("talksplat bench render") == "talksplat-bench-render"
    assert _slug("`--device cuda` but no GPU") == "--device-cuda-but-no-gpu"
    assert _slug("Prep: video and face") == "prep-video-and-face"


# ----------------------------------------------------------------- (d) troubleshooting messages
PLACEHOLDER = re.compile(r"<[^<>\n]*>")
MIN_SEGMENT = 8


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            out[target] = value.value
    return out


@functools.cache
def source_pieces() -> tuple[str, ...]:
    """The string literals of the package's .py files (tests excluded).  An f-string gives its literal
    runs (split where a value is inserted); values that are module-level string constants
    (``FLAME_URL``) are inlined.  Implicitly concatenated literals are already one string here."""
    pieces: set[str] = set()
    packages = [d for d in REPO.iterdir() if (d / "__init__.py").is_file() and d.name != "tests"]
    for py in (p for d in packages for p in d.rglob("*.py")):
        tree = ast.parse(py.read_text(encoding="utf-8"))
        consts = _module_constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                pieces.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                run = ""
                for v in node.values:
                    if isinstance(v, ast.Constant):
                        run += str(v.value)
                    elif (isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name)
                          and v.value.id in consts and v.format_spec is None and v.conversion == -1):
                        run += consts[v.value.id]
                    else:
                        pieces.add(run)
                        run = ""
                pieces.add(run)
    return tuple(p for p in pieces if p)


def _fragment_in_source(fragment: str) -> bool:
    """``fragment`` is inside one literal, or a chain of literals as the code composes messages
    (``f"{path}: {e}"`` with ``e`` from another literal): the end of one literal, whole literals,
    then the start of another, one of the parts at least MIN_SEGMENT characters long."""
    pieces = source_pieces()
    if any(fragment in p for p in pieces):
        return True
    n = len(fragment)
    ends = lambda i: any(p.endswith(fragment[:i]) for p in pieces)  # noqa: E731 - fragment[:i] ends a literal
    starts = lambda i: any(p.startswith(fragment[i:]) for p in pieces)  # noqa: E731 - fragment[i:] starts one
    # whole literals in between; a one-letter literal (a table key such as a phoneme) composes nothing
    inner = [p for p in pieces if p in fragment and not (len(p) == 1 and p.isalnum())]
    # states (position, a long part seen); the first part is a literal's end
    todo = [(i, i >= MIN_SEGMENT) for i in range(1, n) if ends(i)]
    seen = set(todo)
    while todo:
        i, long_seen = todo.pop()
        if (long_seen or n - i >= MIN_SEGMENT) and starts(i):
            return True
        for p in inner:
            if fragment.startswith(p, i):
                state = (i + len(p), long_seen or len(p) >= MIN_SEGMENT)
                if state[0] == n and state[1]:
                    return True
                if state not in seen:
                    seen.add(state)
                    todo.append(state)
    return False


def troubleshooting_messages() -> list[str]:
    """The messages quoted in ```message blocks, and those of the table at the top (each cell of its
    message column holds `` `message` `` items joined by " · ", printed after ``talksplat: error: ``)."""
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```message[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S)
    quoted = [line.strip() for b in blocks for line in b.splitlines() if line.strip()]
    table = text.split("## Every message at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| ") and " | " in line
            and not line.startswith("| problem") and not line.startswith("|---")]
    cells = [m for row in rows for m in re.findall(r"``\s*(.+?)\s*``|`([^`]+)`", row)]
    return quoted + ["talksplat: error: " + (a or b) for a, b in cells]


def test_troubleshooting_quotes_messages():
    messages = troubleshooting_messages()
    assert len(messages) >= 20, "troubleshooting.md: no ```message blocks found"
    assert sum(m.startswith("talksplat: error: <video>: damaged or truncated") for m in messages) >= 2, \
        "the table of messages at the top was not read"


@pytest.mark.parametrize("message", troubleshooting_messages())
def test_troubleshooting_message_is_in_the_code(message):
    fragments = [f.strip() for f in PLACEHOLDER.split(message)]
    fragments = [f for f in fragments if len(f.replace(" ", "")) >= 4]
    assert any(len(f) >= 15 for f in fragments), f"no distinctive fixed text in: {message}"
    missing = [f for f in fragments if not _fragment_in_source(f)]
    assert not missing, (f"docs/troubleshooting.md quotes a message the code no longer has: {missing} "
                         f"(in: {message})")


def test_message_check_catches_drift():
    assert _fragment_in_source(": no face found in the video")
    assert _fragment_in_source(": cannot read audio (no audio track)")  # composed from two literals
    assert not _fragment_in_source(": no face detected in the video")
    assert not _fragment_in_source(": cannot read audio (no video track)")
    assert not _fragment_in_source("talksplat: error: the avatar exploded")
