"""Output folders and files: what talksplat may replace, and one writer at a time.

Rules (every command that writes follows them):

- An output never overwrites an input: a folder that contains an input, or a file that is an input
  (same resolved path or same inode), is refused whatever the options.
- An existing, non-empty output is refused unless ``--overwrite``; with it, a folder is replaced
  only when it is a talksplat output of the same kind (its marker file ``.talksplat``, or the files
  an older talksplat wrote) and holds nothing else: one foreign file and it is refused, naming that
  file.  A single output file is replaced only when talksplat wrote it (see ``is_own`` callers).
- While a command writes an output it holds that output's lock (``.NAME.lock`` beside it); a second
  command on the same output fails at once, naming the holder's PID.  Holding the lock, it removes
  the temporary files of killed talksplat processes (talksplat.core.files).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from .errors import OutputError
from .files import _PARTIAL, clean_stale_partials

MARKER = ".talksplat"

#: What each kind of output folder may hold: file patterns (``*`` within one path segment) and
#: sub-folders of another kind (``"name/": kind``).
KINDS: dict[str, dict] = {
    "dataset": {"files": ("meta.json", "transforms.json", "rig_params.npz", "landmarks.npz", "audio.wav",
                          "images/*/*.png", "masks/*/*.png", "plate.png", "plate_observed.png",
                          "plate_background.png", "plate_background_observed.png", "frames/*/*.png",
                          "frame_masks/*/*.png"),
                "describe": "dataset", "signature": "meta.json"},
    "fit": {"files": ("avatar.safetensors", "avatar.ply", "tuned_params.npz", "driver.safetensors", "metrics.json",
                      "checkpoint.safetensors", "heldout/*.png", "plate.png", "source_frame.json",
                      "tb/events.out.tfevents.*"),
            "describe": "fit", "signature": ("avatar.safetensors", "checkpoint.safetensors", "driver.safetensors")},
    "run": {"files": ("talk.mp4", "talk.npz", "talk.wav", "metrics.json", "run.log", "stages/*.json"),
            "folders": {"dataset": "dataset", "avatar": "fit"},
            "describe": "run work directory", "signature": "stages"},
    "nerf": {"files": ("transforms.json", "transforms_train.json", "transforms_val.json", "transforms_test.json",
                       "canonical_flame_param.npz", "images/*.png", "fg_masks/*.png", "flame_param/*.npz"),
             "describe": "NeRF-style export", "signature": "transforms_train.json"},
    "sync_eval": {"files": ("metrics.json", "*.png"), "describe": "lip-sync evaluation", "signature": "metrics.json"},
}


def _is_ours_by_name(name: str) -> bool:
    """Our marker, lock files and temporary partials, wherever they are."""
    return name == MARKER or _PARTIAL.match(name) is not None or (name.startswith(".") and name.endswith(".lock"))


def _matches(rel: tuple[str, ...], pattern: str) -> bool:
    parts = pattern.split("/")
    return len(parts) == len(rel) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel, parts))


def matches(rel: str, pattern: str) -> bool:
    """Whether the relative path ``rel`` ("images/cam0/00001.png") fits ``pattern`` (``*`` within one
    path segment, as in :data:`KINDS`)."""
    return _matches(tuple(rel.split("/")), pattern)


def _is_prefix(rel: tuple[str, ...], pattern: str) -> bool:
    parts = pattern.split("/")
    return len(rel) < len(parts) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel, parts))


def foreign_files(folder: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Paths in ``folder`` (recursively) that a talksplat output of ``kind`` does not hold."""
    spec = KINDS[kind]
    folder = Path(folder)
    stack: list[tuple[str, ...]] = [()]
    while stack:
        rel = stack.pop()
        here = folder.joinpath(*rel)
        for entry in sorted(here.iterdir()):
            r = rel + (entry.name,)
            if _is_ours_by_name(entry.name):
                continue
            if len(r) == 1 and entry.name in spec.get("folders", {}) and entry.is_dir() and not entry.is_symlink():
                yield from foreign_files(entry, spec["folders"][entry.name])
            elif entry.is_dir() and not entry.is_symlink():
                if any(_is_prefix(r, p) for p in spec["files"]):
                    stack.append(r)
                else:
                    yield entry
            elif not any(_matches(r, p) for p in spec["files"]):
                yield entry


def is_output_of(folder: str | os.PathLike, kind: str) -> bool:
    """Whether ``folder`` carries the marker of ``kind``, or (written by an older talksplat) its
    signature file; says nothing about foreign files (see :func:`foreign_files`)."""
    folder = Path(folder)
    try:
        if json.loads((folder / MARKER).read_text()).get("kind") == kind:
            return True
    except (OSError, ValueError, AttributeError):
        pass
    sig = KINDS[kind]["signature"]
    if kind == "dataset":
        try:
            return json.loads((folder / sig).read_text()).get("format") == "talksplat-dataset"
        except (OSError, ValueError, AttributeError):
            return False
    return any((folder / s).exists() for s in ((sig,) if isinstance(sig, str) else sig))


def write_marker(folder: str | os.PathLike, kind: str) -> None:
    """Mark ``folder`` as a talksplat output of ``kind`` (what ``--overwrite`` looks for)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"kind": kind, "written_by": "talksplat"}) + "\n")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(out: str | os.PathLike, kind: str, overwrite: bool, inputs: Iterable = (),
                     allow_existing: bool = False) -> None:
    """Refuse an output folder that cannot be used (see the module doc); call before any work.

    ``inputs``: files and folders the command reads (none may lie inside ``out``).
    ``allow_existing``: the command adds to a folder of its kind (``fit --resume``, ``--driver-only``,
    ``run``): an existing folder is accepted without ``--overwrite`` when it is of ``kind`` or empty."""
    out = Path(out)
    desc = KINDS[kind]["describe"]
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    real = out.resolve()
    for p in inputs:
        if p is not None and _inside(Path(p).resolve(), real):
            raise OutputError(f"{out}: holds the input {p}; choose another output folder (talksplat never "
                              "replaces its inputs)")
    if not out.exists() or not any(out.iterdir()):
        return
    ours = is_output_of(out, kind)
    if not overwrite and not (allow_existing and ours):
        if ours:
            raise OutputError(f"{out}: already holds a {desc} (pass --overwrite to replace it)")
        raise OutputError(f"{out}: exists and is not empty (give a new or empty folder)")
    foreign = next(foreign_files(out, kind), None)
    if foreign is not None:
        raise OutputError(f"{out}: holds {foreign.relative_to(out)}, which is not part of a talksplat {desc}; "
                          "nothing was replaced (--overwrite replaces only talksplat's own files)")
    if not ours:
        raise OutputError(f"{out}: not a talksplat {desc} (no {MARKER} marker); nothing was replaced")


def clear_output_dir(out: str | os.PathLike, kind: str) -> None:
    """Remove what a talksplat output of ``kind`` holds in ``out`` (after :func:`check_output_dir`
    accepted it): the files of its kind, its marker, its empty folders.  Anything else stays."""
    out = Path(out)
    if not out.is_dir():
        return
    foreign = {p for p in foreign_files(out, kind)}
    for p in sorted(out.rglob("*"), key=lambda p: -len(p.parts)):
        if any(_inside(f, p) for f in foreign) or p.name.endswith(".lock"):
            continue
        if p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.rmdir()
        else:
            p.unlink(missing_ok=True)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same resolved path, or the same inode (hard links)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str | os.PathLike, overwrite: bool, inputs: Iterable = (), is_own=None,
                      option: str = "--out") -> None:
    """Refuse an output file that is an input, or exists without ``overwrite``, or exists and was not
    written by talksplat (``is_own(path) -> bool``; None accepts any existing file with ``overwrite``)."""
    path = Path(path)
    for p in inputs:
        if p is not None and Path(p).exists() and same_file(path, p):
            raise OutputError(f"{option} {path}: is the input {p}; choose another output name "
                              "(talksplat never replaces its inputs)")
        if p is not None and _inside(path.resolve(), Path(p).resolve()) and Path(p).is_file():
            raise OutputError(f"{option} {path}: lies under the input file {p}")
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a directory")
    if not path.exists():
        return
    if not overwrite:
        raise OutputError(f"{path}: already exists (pass --overwrite to replace it)")
    if is_own is not None and not is_own(path):
        raise OutputError(f"{path}: exists and was not written by talksplat; not replacing it")


# ------------------------------------------------------------------------------------------ locks
_held: dict[str, list] = {}  # lock file path -> [fd, depth]


def lock_path(target: str | os.PathLike) -> Path:
    """``.NAME.lock`` beside the output ``target`` (one name per output however it is spelled)."""
    target = Path(target).resolve()
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of output ``target`` (a file or folder) for the ``with`` block; re-entrant within
    a process.  Raises :class:`OutputError` naming the holder's PID when another process has it.
    On entry, removes temporary files left beside (and inside) ``target`` by dead talksplat processes."""
    target = Path(target)
    lp = lock_path(target)
    key = str(lp)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    created = _make_parents(target, lp.parent)
    try:
        with _locked(target, lp, key):
            yield
    except BaseException:
        for d in created:  # folders made for an output that never came: remove them again (when empty)
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _make_parents(target: Path, folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those this call created, deepest first.

    Safe against other processes making (or, after a failure, removing) the same parents at the same
    time, as the jobs of ``talksplat batch`` do with ``OUT/renders/``."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise OutputError(f"{target}: cannot be created: {p} is a file, not a folder")
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
            created.append(d)
        except FileExistsError:  # another process made it first: it is not ours to remove
            if not d.is_dir():
                raise OutputError(f"{target}: cannot be created: {d} is a file, not a folder") from None
        except FileNotFoundError:  # a parent another process made was removed again (its job failed)
            d.mkdir(parents=True, exist_ok=True)
    return created[::-1]


@contextlib.contextmanager
def _locked(target: Path, lp: Path, key: str) -> Iterator[None]:
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # another writer's failed job removed the (empty) parent just now
            lp.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{target}: in use by another talksplat process (PID {holder}); wait for it "
                                  f"to finish or stop it") from None
            raise
        try:  # the holder before us may have removed the file after we opened it: lock the new one
            if os.fstat(fd).st_ino == os.stat(lp).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = [fd, 1]
    try:
        clean_stale_partials(target.absolute().parent, target.name)
        if target.is_dir():
            for folder in [target] + [p for p in target.iterdir() if p.is_dir() and not p.is_symlink()]:
                clean_stale_partials(folder)
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(lp)
        os.close(fd)
