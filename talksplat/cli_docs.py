"""The CLI reference (`docs/cli.md`) generated from the tyro config dataclasses.

    python -m talksplat.cli_docs                     # print the Markdown
    python -m talksplat.cli_docs --out docs/cli.md   # write it (temp file, then rename)
    python -m talksplat.cli_docs --out docs/cli.md --check   # exit 1 when the file is stale

The subcommands are found by walking the ``Command`` union of :mod:`talksplat.cli` (members
``Annotated[Config, tyro.conf.subcommand("name")]``, nested unions for groups such as ``bench``), so
new subcommands appear without touching this module.  Help texts are the attribute docstrings (the
string literal right after a field in the class body), read here with :mod:`ast` rather than from
tyro's internals, so the output does not depend on tyro's version; a ``tyro.conf.arg(help=...)`` in a
field's type (the shared ``--rig`` help of :mod:`talksplat.rigs.spec`) wins over it, as in tyro.
Flags are spelled as tyro spells them: ``_`` -> ``-``, nested dataclasses flattened with a dot prefix
(``--driver.steps``), booleans as ``--flag`` / ``--no-flag``; ``tests/test_docs.py`` checks every flag
against the real ``--help``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import os
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

REGENERATE = "python -m talksplat.cli_docs --out docs/cli.md"


@dataclass
class Argument:
    """One row of a subcommand's table."""

    flags: list[str]
    """How it is spelled on the command line: ``["--out"]``, ``["--resume", "--no-resume"]``, or the
    positional's name (``["DATASET"]``)."""
    positional: bool
    type: str
    """Readable type: ``int``, ``path or none``, ``{fast,default,quality}``, ``int ...``."""
    default: str | None
    """Formatted default; None when the argument is required."""
    help: str
    """The attribute docstring joined into one line ("" when the field has none)."""


@dataclass
class Group:
    """A nested dataclass flattened into ``--prefix.*`` flags."""

    prefix: str
    help: str


@dataclass
class Subcommand:
    path: tuple[str, ...]
    """``("fit",)``, ``("bench", "render")``."""
    description: str
    arguments: list[Argument] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    children: list["Subcommand"] = field(default_factory=list)
    """Subcommands of a group (``bench``); such a node has no arguments."""

    @property
    def title(self) -> str:
        return " ".join(("talksplat",) + self.path)


# ------------------------------------------------------------------------------------ type helpers
def _positional_marker() -> Any:
    import tyro

    return typing.get_args(tyro.conf.Positional[int])[1]


def _split_annotated(tp: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, a, b]`` (nested ones flattened) -> (X, [a, b])."""
    extras: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp, extras = args[0], list(args[1:]) + extras
    return tp, extras


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def type_name(tp: Any) -> str:
    """A readable name for a field type (as a user types the value)."""
    tp, _ = _split_annotated(tp)
    if tp is type(None):
        return "none"
    if _is_union(tp):
        args = typing.get_args(tp)
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names + (["none"] if type(None) in args else []))
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{type_name(args[0])} ..."
        return " ".join(type_name(a) for a in args)
    if origin in (list, set, frozenset, typing.Sequence):
        (arg,) = typing.get_args(tp) or (str,)
        return f"{type_name(arg)} ..."
    if isinstance(tp, type) and issubclass(tp, os.PathLike):
        return "path"
    if tp is bool:
        return "bool"
    return getattr(tp, "__name__", str(tp))


def format_default(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (tuple, list)):
        return " ".join(format_default(v) for v in value) if value else "(empty)"
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


# ------------------------------------------------------------------------------ attribute docstrings
def _one_line(text: str) -> str:
    return " ".join(inspect.cleandoc(text).split())


@functools.cache
def _own_field_docs(cls: type) -> dict[str, str]:
    """Field name -> docstring for the fields declared in ``cls``'s own body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__), None)
    if node is None:
        return {}
    docs: dict[str, str] = {}
    body = node.body
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = _one_line(nxt.value.value)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> attribute docstring, base classes first so subclasses override."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_own_field_docs(base))
    return docs


def class_description(cls: type) -> str:
    """The class docstring (paragraphs kept; lines of a paragraph joined)."""
    doc = cls.__doc__ or ""
    if dataclasses.is_dataclass(cls) and doc.startswith(cls.__name__ + "("):
        return ""  # the signature dataclass() puts there when there is no docstring
    paragraphs = [p for p in inspect.cleandoc(doc).split("\n\n") if p.strip()]
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


# ------------------------------------------------------------------------------------------ walking
def _flag(name: str) -> str:
    return name.replace("_", "-")


def describe_config(cls: type, instance: Any = None, prefix: str = "") -> tuple[list[Argument], list[Group]]:
    """The arguments of a config dataclass, nested dataclasses flattened (``--prefix.name``).

    ``instance``: where defaults of nested dataclasses come from (their default factory's result)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = field_docs(cls)
    marker = _positional_marker()
    args: list[Argument] = []
    groups: list[Group] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, extras = _split_annotated(hints[f.name])
        positional = any(e is marker for e in extras)
        rename = next((getattr(e, "name", None) for e in extras
                       if type(e).__name__ == "_ArgConfig" and getattr(e, "name", None)), None)
        # A help text given with the type (tyro.conf.arg(help=...), e.g. talksplat.rigs.spec.RigSpec) wins,
        # as in tyro.
        arg_help = next((_one_line(e.help) for e in extras
                         if type(e).__name__ == "_ArgConfig" and isinstance(getattr(e, "help", None), str)), None)
        name = rename or f.name
        if instance is not None:
            default: Any = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if _is_dataclass_type(tp) and not positional:
            sub_prefix = f"{prefix}{_flag(name)}."
            groups.append(Group(f"--{sub_prefix}*", docs.get(f.name, "")))
            sub_args, sub_groups = describe_config(tp, None if default is dataclasses.MISSING else default,
                                                   sub_prefix)
            args += sub_args
            groups += sub_groups
            continue
        if positional:
            variadic = typing.get_origin(tp) is tuple and typing.get_args(tp)[-1:] == (Ellipsis,)
            flags = [name.upper() + (" ..." if variadic else "")]
        elif tp is bool:
            flags = [f"--{prefix}{_flag(name)}", f"--{prefix}no-{_flag(name)}"]
        else:
            flags = [f"--{prefix}{_flag(name)}"]
        args.append(Argument(flags=flags, positional=positional, type=type_name(tp),
                             default=None if default is dataclasses.MISSING else format_default(default),
                             help=arg_help if arg_help is not None else docs.get(f.name, "")))
    return args, groups


def _suppress_markers() -> tuple[Any, ...]:
    import tyro

    return typing.get_args(tyro.conf.Suppress[int])[1:]


def _subcommand_meta(extras: list[Any]) -> Any:
    return next((e for e in extras if type(e).__name__ == "_SubcommandConfig" or
                 (isinstance(getattr(e, "name", None), str) and hasattr(e, "description")
                  and hasattr(e, "prefix_name"))), None)


def walk(union: Any, path: tuple[str, ...] = ()) -> list[Subcommand]:
    """The subcommands of a union of ``Annotated[Config, tyro.conf.subcommand(...)]`` (recursively)."""
    out: list[Subcommand] = []
    for member in typing.get_args(union):
        tp, extras = _split_annotated(member)
        if any(e in _suppress_markers() for e in extras):  # hidden (cli.py's placeholder keeping `eval` a group)
            continue
        meta = _subcommand_meta(extras)
        name = getattr(meta, "name", None) or getattr(tp, "__name__", str(tp)).lower()
        explicit = getattr(meta, "description", None)
        if _is_union(tp):
            out.append(Subcommand(path + (name,), explicit or "", children=walk(tp, path + (name,))))
        elif _is_dataclass_type(tp):
            arguments, groups = describe_config(tp)
            out.append(Subcommand(path + (name,), explicit or class_description(tp), arguments, groups))
        else:
            raise TypeError(f"subcommand {name!r}: {tp!r} is neither a dataclass nor a union of subcommands")
    return out


def collect() -> list[Subcommand]:
    """Every subcommand of ``talksplat`` (groups hold theirs in ``children``)."""
    from talksplat.cli import Command

    return walk(Command)


def leaves(commands: list[Subcommand]) -> list[Subcommand]:
    """The subcommands that take arguments (the children of groups, not the groups)."""
    out: list[Subcommand] = []
    for c in commands:
        out += leaves(c.children) if c.children else [c]
    return out


# ----------------------------------------------------------------------------------------- Markdown
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _anchor(title: str) -> str:
    """GitHub's heading anchor for a plain-text heading."""
    return "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_").replace(" ", "-")


def _section(cmd: Subcommand, level: int) -> list[str]:
    lines = [f"{'#' * level} {cmd.title}", ""]
    if cmd.description:
        lines += [cmd.description, ""]
    if cmd.children:
        lines += [f"Subcommands: {', '.join(f'[`{c.path[-1]}`](#{_anchor(c.title)})' for c in cmd.children)}.", ""]
        for child in cmd.children:
            lines += _section(child, level + 1)
        return lines
    usage = " ".join([cmd.title] + [a.flags[0] if a.default is None else f"[{a.flags[0]}]"
                                    for a in cmd.arguments if a.positional] + ["[OPTIONS]"])
    lines += ["```", usage, "```", ""]
    if cmd.arguments:
        lines += ["| argument | type | default | help |", "|---|---|---|---|"]
        for a in cmd.arguments:
            flags = " / ".join(f"`{f}`" for f in a.flags) + (" (positional)" if a.positional else "")
            default = "required" if a.default is None else f"`{a.default}`"
            lines.append(f"| {flags} | {_cell(a.type)} | {_cell(default)} | {_cell(a.help)} |")
        lines.append("")
    if cmd.groups:
        lines += ["Option groups:", ""]
        lines += [f"- `{g.prefix}`" + (f": {g.help}" if g.help else "") for g in cmd.groups]
        lines.append("")
    return lines


def render_markdown(commands: list[Subcommand] | None = None) -> str:
    commands = collect() if commands is None else commands
    lines = [
        "<!-- Generated from the config dataclasses by talksplat/cli_docs.py; do not edit by hand. -->",
        f"<!-- Regenerate with: {REGENERATE} -->",
        "",
        "# Command-line reference",
        "",
        f"Generated from the tyro config dataclasses (`{REGENERATE}` regenerates it; "
        "`tests/test_docs.py` fails when it is stale). `talksplat SUBCOMMAND --help` prints the same "
        "help. Booleans are flags: `--x` sets, `--no-x` clears. Options of nested configs are "
        "written with a dot (`--driver.steps 500`). A type `X ...` takes several values "
        "(`--yaw -30 0 30`); `or none` means the option may be left unset.",
        "",
        "Subcommands: "
        + ", ".join(f"[`{' '.join(c.path)}`](#{_anchor(c.title)})" for c in leaves(commands)) + ".",
        "",
    ]
    for cmd in commands:
        lines += _section(cmd, 2)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    from talksplat.core.files import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m talksplat.cli_docs",
                                     description="Generate the talksplat CLI reference (Markdown).")
    parser.add_argument("--out", type=Path, help="write it to this file (atomically) instead of stdout")
    parser.add_argument("--check", action="store_true", help="with --out: exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render_markdown()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
        if current != text:
            print(f"{args.out} is stale: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    write_atomically(args.out, text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
