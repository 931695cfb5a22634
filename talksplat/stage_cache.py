"""The stage cache: where finished prep, fit and predictor results lie, by what made them, so that
`talksplat run` reuses a result that `talksplat prep`, `talksplat fit` or another run already computed.

The index holds one small JSON file per result, ``INDEX/KEY.json``; INDEX is ``$TALKSPLAT_STAGE_CACHE``,
else ``stages/`` in talksplat's cache folder (:func:`talksplat.core.cache.cache_root`).  Only the index
lives there: each result stays where it was written.  KEY hashes the stage's name, its effective config
(what changes its output: no paths, display, device or threads), its input files' contents and the
contents of what the stages before it left (their :func:`identity`, not where they lie).  An entry names
the folder, each file the stage wrote there (sha256 apart from where it was made, size in bytes), the
digest of its share of a file it shares with later stages (a fit folder's metrics.json), its summary and
how long it took, in seconds (format: docs/formats.md).

Adopting an entry (:meth:`StageCache.adopt`) hard-links (or copies) those files into the stage's own
folder, rewrites what says where they were made (:attr:`Product.place`) and checks that the result holds
exactly the recorded contents: a folder changed or deleted since is not reused, and its entry is dropped.
The source is only ever read.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from talksplat.core.config import ProcessOptions
from talksplat.core.files import file_digest, link_or_copy, make_partial_dir, replace_dir, write_json

if TYPE_CHECKING:
    from talksplat.stages import Stage

#: Bump when what a key covers or what an entry means changes.
CACHE_VERSION = 2  # 2: datasets hold the plate, fits train over it
FORMAT = "talksplat-stage-cache"
#: Settings of the process, not of the job (talksplat.core.config.ProcessOptions): never part of a key.
_PROCESS_OPTIONS = tuple(f.name for f in dataclasses.fields(ProcessOptions))


def index_dir() -> Path:
    """The index folder: ``$TALKSPLAT_STAGE_CACHE``, else ``stages/`` in talksplat's cache folder."""
    env = os.environ.get("TALKSPLAT_STAGE_CACHE")
    if env:
        return Path(env)
    from talksplat.core.cache import cache_root

    return cache_root() / "stages"


@dataclass
class Product:
    """What a finished stage leaves in ``folder``.

    ``patterns``: the files it writes (relative paths, ``*`` within one segment; names starting with a dot,
    talksplat's markers and temporary files, never count); ``whole``: it owns the whole folder (adopted by
    building a new folder beside it and swapping it in); ``file_digest``: a file's sha256 apart from where it
    was made; ``share`` / ``put_share``: read a folder's / merge into a folder the stage's share of a JSON
    file it shares with later stages; ``prepare``: check and clear ``folder`` as the stage does before
    writing; ``place``: after its files were copied into a folder, rewrite what says where they were made.
    """

    folder: Path
    patterns: tuple[str, ...]
    whole: bool = False
    file_digest: Callable[[Path], str] = file_digest
    share: Callable[[Path], Any] | None = None
    put_share: Callable[[Path, Any], None] | None = None
    prepare: Callable[[], None] | None = None
    place: Callable[[Path], None] | None = None

    def files(self, folder: str | os.PathLike | None = None) -> list[str]:
        """The stage's files in ``folder`` (default: its own), as sorted relative POSIX paths."""
        from talksplat.core.outputs import matches

        root = Path(self.folder if folder is None else folder)
        found = []
        for p in root.rglob("*"):
            rel = p.relative_to(root).as_posix()
            if (not any(part.startswith(".") for part in rel.split("/")) and p.is_file()
                    and any(matches(rel, pattern) for pattern in self.patterns)):
                found.append(rel)
        return sorted(found)

    def manifest(self, folder: str | os.PathLike | None = None) -> dict:
        """What the stage left in ``folder`` (default: its own): ``{"files": {rel: {"sha256", "bytes"}},
        "share": digest of its share or None}``."""
        from talksplat.stages import digest

        root = Path(self.folder if folder is None else folder)
        files = {rel: {"sha256": self.file_digest(root / rel), "bytes": (root / rel).stat().st_size}
                 for rel in self.files(root)}
        return {"files": files, "share": None if self.share is None else digest(self.share(root))}

    def identity(self, folder: str | os.PathLike | None = None) -> str:
        """:func:`identity` of what the stage left in ``folder`` (default: its own)."""
        return identity(self.manifest(folder))


def identity(manifest: dict) -> str:
    """What a stage left, as one digest: its files' contents and its share (not where they lie)."""
    from talksplat.stages import digest

    return digest({"files": {rel: f["sha256"] for rel, f in manifest["files"].items()}, "share": manifest["share"]})


class StageCache:
    """The index (:func:`index_dir`, or ``root``): records finished stages, adopts recorded ones."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else index_dir()

    def key(self, stage: Stage, upstream: dict[str, str], inputs: dict[str, str] | None = None) -> tuple[str, dict]:
        """(key, the parts it hashes) of ``stage``, the stages it depends on having left ``upstream`` (name ->
        :func:`identity`); ``inputs``: its input files' parts when already computed
        (:func:`talksplat.stages.input_parts`)."""
        from talksplat.stages import digest, input_parts

        config = {k: v for k, v in stage.config.items() if k not in _PROCESS_OPTIONS}  # e.g. --threads
        parts = {"version": str(CACHE_VERSION), "stage": stage.name, "config": digest(config),
                 **(input_parts(stage) if inputs is None else inputs),
                 **(stage.cache_parts() if stage.cache_parts is not None else {}),
                 **{f"upstream:{dep}": upstream[dep] for dep in stage.depends}}
        return digest(parts), parts

    def entry_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def record(self, stage: Stage, key: str, parts: dict, summary: dict, seconds: float) -> str:
        """Record ``stage``'s finished result in ``stage.product.folder`` under ``key``; returns its
        :func:`identity`.  Replaces the entry under ``key`` and drops the stage's other entries for that folder
        (it no longer holds what they recorded), so the index holds at most one entry per stage and folder."""
        from talksplat.stages import jsonable

        manifest = stage.product.manifest()
        folder = str(Path(stage.product.folder).resolve())
        entry = {"format": FORMAT, "version": CACHE_VERSION, "stage": stage.name, "key": key, "parts": parts,
                 "folder": folder, **manifest, "summary": jsonable(summary), "seconds": seconds,
                 "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.entry_path(key), entry)
        for other in self.root.glob("*.json"):
            old = self.read(stage.name, other.stem)
            if old is not None and other.stem != key and old["folder"] == folder:
                self.drop(other.stem, old)
        return identity(manifest)

    def read(self, name: str, key: str) -> dict | None:
        """The entry of stage ``name`` under ``key``, or None (none, or not one this talksplat wrote)."""
        import json

        try:
            entry = json.loads(self.entry_path(key).read_text())
        except (OSError, ValueError):
            return None
        ok = (isinstance(entry, dict) and entry.get("format") == FORMAT and entry.get("version") == CACHE_VERSION
              and entry.get("stage") == name and entry.get("key") == key and isinstance(entry.get("folder"), str)
              and isinstance(entry.get("files"), dict) and isinstance(entry.get("summary"), dict)
              and all(isinstance(f, dict) and isinstance(f.get("sha256"), str) and isinstance(f.get("bytes"), int)
                      for f in entry["files"].values()))
        return entry if ok else None

    def drop(self, key: str, entry: dict) -> None:
        """Remove the entry under ``key`` if it is still ``entry`` (another process may have replaced it)."""
        name = entry.get("stage", "")
        if self.read(name, key) == entry:
            self.entry_path(key).unlink(missing_ok=True)

    def adopt(self, stage: Stage, key: str) -> tuple[dict | None, str | None]:
        """Put the result recorded under ``key`` into ``stage.product.folder``.

        Returns (the entry, None) when adopted, the entry's ``identity`` added; (None, why) when an entry
        exists but cannot serve (changed or gone since: the entry is dropped); (None, None) when there is none.
        A ``prepare`` that refuses the destination (talksplat.core.outputs) raises as the stage would."""
        from talksplat.core.outputs import output_lock

        entry = self.read(stage.name, key)
        if entry is None:
            return None, None
        product = stage.product
        src, dst = Path(entry["folder"]), Path(product.folder)
        why = _changed(product, entry, src)
        if why is not None:
            self.drop(key, entry)
            return None, why
        s, d = src.resolve(), dst.resolve()
        if s != d and (s in d.parents or d in s.parents):
            return None, f"{'it holds' if s in d.parents else 'it lies in'} {dst}"
        with output_lock(dst):
            if s == d:  # the result is already here (recorded where this stage writes): checked, not copied
                return self._check(product, entry, key, dst, placed=[])
            if product.prepare is not None:
                product.prepare()
            target = make_partial_dir(dst) if product.whole else dst
            placed: list[Path] = []
            try:
                for rel in entry["files"]:
                    placed.append(target / rel)
                    link_or_copy(src / rel, target / rel)
                if product.share is not None and product.put_share is not None:
                    product.put_share(target, product.share(src))
            except OSError as e:  # a file gone or unreadable since the check above: not reused, the stage runs
                adopted, why = None, _unreadable(e)
                for p in placed:
                    p.unlink(missing_ok=True)
            else:
                adopted, why = self._check(product, entry, key, target, placed)
            if adopted is not None and product.whole:
                replace_dir(target, dst)
            elif product.whole:
                shutil.rmtree(target, ignore_errors=True)  # hard links to the source: only the links go
            return adopted, why

    def _check(self, product: Product, entry: dict, key: str, folder: Path,
               placed: list[Path]) -> tuple[dict | None, str | None]:
        """Rewrite where the copy in ``folder`` was made, then compare it with ``entry``; on a difference, remove
        the ``placed`` files and drop the entry."""
        try:
            if product.place is not None:
                product.place(folder)
            manifest = product.manifest(folder)
        except Exception as e:  # noqa: BLE001 - a damaged source file: not reused, the stage runs
            why = _unreadable(e)
        else:
            if identity(manifest) == identity({"files": entry["files"], "share": entry.get("share")}):
                return {**entry, "identity": identity(manifest)}, None  # (sizes may differ: where it was made)
            diff = sorted(rel for rel in set(manifest["files"]) | set(entry["files"])
                          if manifest["files"].get(rel, {}).get("sha256") != entry["files"].get(rel, {}).get("sha256"))
            why = "changed since it was recorded: " + (", ".join(diff[:3]) if diff else "its share of metrics.json")
        for p in placed:
            p.unlink(missing_ok=True)
        self.drop(key, entry)
        return None, why


def _changed(product: Product, entry: dict, src: Path) -> str | None:
    """Why the recorded folder no longer holds the entry's files (by name and size), or None."""
    if not src.is_dir():
        return "gone"
    present = product.files(src)
    if set(present) != set(entry["files"]):
        diff = sorted(set(present) ^ set(entry["files"]))
        return "changed since it was recorded: " + ", ".join(diff[:3])
    for rel in present:
        if (src / rel).stat().st_size != entry["files"][rel]["bytes"]:
            return f"changed since it was recorded: {rel}"
    return None


def _unreadable(e: Exception) -> str:
    return f"could not be read: {' '.join(str(e).split())[:200]}"
