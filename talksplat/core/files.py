"""Writing files so that no reader ever sees half of one, and cleaning up after killed writers.

Every temporary name carries the writer's PID: ``.NAME.partial-<pid>-<random>[.suffix]`` beside the
target (files and directories), ``.NAME.old-<pid>-<random>`` for a replaced directory on its way out,
``talksplat-<what>-<pid>-<random>`` in the system temp folder.  A later run that holds the output's
lock removes those whose process is gone (:func:`clean_stale_partials`), so ``kill -9`` leaves
nothing behind for long.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

#: ``.NAME.partial-PID-...`` / ``.NAME.old-PID-...`` (``NAME`` may hold dots).
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-")
_SCRATCH = re.compile(r"^talksplat-[a-z]+-(?P<pid>\d+)-")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (any user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_prefix(name: str) -> str:
    """The start of a temporary sibling's name for target ``name``: ``.NAME.partial-<pid>-``."""
    return f".{name}.partial-{os.getpid()}-"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (same suffix) to write to; on success it gets
    permissions ``mode`` and replaces ``path``; on an exception (Ctrl-C included) it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(path.name), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, Inf) replaced by None, so it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_text(obj: Any, indent: int | None = 1, sort_keys: bool = False) -> str:
    """Strict JSON (``allow_nan=False``) of ``obj`` after :func:`json_safe`: a NaN becomes ``null``."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, sort_keys=sort_keys)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (see :func:`json_text`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json_text(obj, indent))
    return Path(path)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's contents (a directory: of its files' relative paths and contents, sorted)."""
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Make ``dst`` hold ``src``'s contents: a hard link where the file system allows it, else a copy (written
    atomically).  ``src`` is only read; a file at ``dst`` is unlinked first, never written into (it may be a
    link to another file).  Returns "linked" or "copied".

    A hard link shares the file: whatever later writes into it in place changes both names; talksplat never
    does (it replaces files: :func:`atomic_write`), so the other name keeps its contents."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        with atomic_write(dst) as tmp:
            shutil.copyfile(src, tmp)
        return "copied"


def safetensors_digest(path: str | os.PathLike, leave_out: tuple[str, ...] = ()) -> str:
    """sha256 of a safetensors file read without the dotted keys ``leave_out`` (``extra.dataset``) of its
    ``talksplat`` metadata (a JSON object): two files that differ only there (where they lie, what lies
    beside them) digest alike.  Covers the rest of the metadata, each tensor's name, dtype, shape and
    bytes.  ValueError for a file that is not safetensors."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= 100_000_000:
            raise ValueError(f"{path}: not a safetensors file")
        index = json.loads(f.read(n))
        meta = dict(index.pop("__metadata__", None) or {})
        own = json.loads(meta.pop("talksplat", "null"))
        for dotted in leave_out:
            *parents, last = dotted.split(".")
            d = own
            for k in parents:
                d = d.get(k) if isinstance(d, dict) else None
            if isinstance(d, dict):
                d.pop(last, None)
        h.update(json.dumps({"talksplat": own, "metadata": meta, "tensors": index}, sort_keys=True).encode())
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def rewrite_safetensors(path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Replace the safetensors file ``path`` by one with the same tensors and ``metadata``: byte for byte
    what ``safetensors.torch.save_file(tensors, path, metadata)`` writes.  Atomic, and a new file: a hard
    link's other names keep the old contents."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def set_safetensors_header(path: str | os.PathLike, entries: dict, serialize: Callable[[dict], str],
                           header: dict | None = None) -> Path:
    """Give the safetensors file ``path`` the entries ``entries`` in its ``talksplat`` metadata (a JSON object),
    through :func:`rewrite_safetensors`; left alone when it already holds them.  ``serialize``: the writer's
    own JSON text of a header (so the file becomes byte for byte what that writer writes); ``header``: the
    file's header when the caller has read it already."""
    if header is None:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            header = json.loads((f.metadata() or {})["talksplat"])
    if all(header.get(k) == v for k, v in entries.items()):
        return Path(path)  # already so: left alone
    return rewrite_safetensors(path, {"talksplat": serialize({**header, **entries})})


def make_partial_dir(target: str | os.PathLike) -> Path:
    """A new empty directory beside ``target`` to build it in (``.NAME.partial-<pid>-...``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=partial_prefix(target.name), dir=target.parent))


def commit_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Give the tree at ``tmp`` ordinary permissions and rename it to ``out``, replacing what is there
    (the caller has checked that ``out`` holds only talksplat's files: see talksplat.core.outputs)."""
    tmp, out = Path(tmp), Path(out)
    for p in tmp.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return replace_dir(tmp, out)


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Rename the directory ``tmp`` to ``out``, replacing what is there (as :func:`commit_dir`, but the
    files' permissions are left alone: some may be hard links to files that are not ours)."""
    tmp, out = Path(tmp), Path(out)
    os.chmod(tmp, 0o755)
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        os.replace(out, trash / "old")
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def clean_stale_partials(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files and directories in ``folder`` left by talksplat processes that are
    gone (see the module doc); with ``name``, only those of that target.  Returns what was removed.

    Call it while holding the lock of the output they belong to (talksplat.core.outputs)."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _PARTIAL.match(p.name)
        if m is None or (name is not None and m.group("name") != name) or pid_alive(int(m.group("pid"))):
            continue
        _remove(p)
        removed.append(p)
    return removed


def scratch_dir(what: str) -> tempfile.TemporaryDirectory:
    """A temporary directory in the system temp folder (``talksplat-<what>-<pid>-...``), removed when
    its ``with`` block ends; those of dead talksplat processes are removed first."""
    tmp = Path(tempfile.gettempdir())
    try:
        for p in tmp.iterdir():
            m = _SCRATCH.match(p.name)
            if m is not None and not pid_alive(int(m.group("pid"))):
                _remove(p)
    except OSError:
        pass
    return tempfile.TemporaryDirectory(prefix=f"talksplat-{what}-{os.getpid()}-")
