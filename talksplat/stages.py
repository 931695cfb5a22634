"""Stage records for `talksplat run`: which inputs and config made each stage's output.

A stage is up to date when its record exists, its key (a hash over the stage's input files' contents,
its config and the run ids of the stages it depends on) is unchanged and its outputs exist.  Each
finished run of a stage gets a new run id, so whatever reruns a stage also reruns the stages after it.  The record
is removed before a stage runs and written (atomically) only after it finished, so a killed stage is
never mistaken for a finished one.  Records live in ``WORKDIR/stages/NAME.json``; while a stage runs,
``NAME.started.json`` holds its key, so a rerun after a kill with the same key can resume it (fit
continues from its checkpoint).

With a :class:`~talksplat.stage_cache.StageCache`, a stage that is not up to date here but was computed with
the same inputs and effective config elsewhere (`talksplat prep`, `talksplat fit`, another run) is adopted
from there instead of run, and each stage that runs is recorded there (see :mod:`talksplat.stage_cache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from talksplat.core.files import file_digest, write_json

if TYPE_CHECKING:
    from talksplat.stage_cache import Product, StageCache

#: Bump when a stage's outputs change meaning (it is part of every key).
RECORD_VERSION = 2  # 2: datasets hold the plate, fits train over it


def jsonable(value: Any) -> Any:
    """Config values -> JSON (dataclasses as dicts, paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def digest(obj: Any) -> str:
    """sha256 (hex) of ``obj`` as JSON with sorted keys (:func:`jsonable`)."""
    return hashlib.sha256(json.dumps(jsonable(obj), sort_keys=True).encode()).hexdigest()


@dataclass
class Stage:
    """One step of the pipeline.

    ``inputs``: name -> file whose contents key the stage; ``config``: the settings that change its
    output; ``depends``: names of earlier stages; ``outputs``: what must exist for it to count as done;
    ``run``: does the work and returns a JSON-able summary (kept in the record and in metrics.json);
    ``resume``: used instead of ``run`` when the previous run with the same key was interrupted;
    ``product``: what it leaves, for the stage cache (None: never cached); ``cache_parts``: more key parts
    for the stage cache only (e.g. where the inputs lie, when the output records it).
    """

    name: str
    inputs: dict[str, Path | None]
    config: dict[str, Any]
    outputs: list[Path]
    run: Callable[[], dict]
    depends: tuple[str, ...] = ()
    location: Path | None = None  # what to name in messages (default: the first output)
    resume: Callable[[], dict] | None = None  # continues an interrupted run with the same key
    product: Product | None = None
    cache_parts: Callable[[], dict[str, str]] | None = None


def unrunnable() -> dict:
    """The ``run`` of a stage that is only described (to compute its stage-cache key or record it)."""
    raise RuntimeError("this stage is described, not run, here")


def input_parts(stage: Stage) -> dict[str, str]:
    """``input:NAME`` -> sha256 of each input file's contents ("none" for an absent optional input)."""
    return {f"input:{name}": "none" if path is None else file_digest(path) for name, path in stage.inputs.items()}


class StageRunner:
    """Runs stages in order, skipping the up-to-date ones; logs decisions to WORKDIR/run.log (and to ``echo``)."""

    def __init__(self, workdir: Path, force: tuple[str, ...] = (), echo: Callable[[str], None] | None = None,
                 cache: StageCache | None = None):
        self.workdir = Path(workdir)
        self.dir = self.workdir / "stages"
        self.force = set(force)  # run, neither reused here nor adopted from the cache
        self.echo = echo or (lambda line: None)
        self.cache = cache
        self.records: dict[str, dict] = {}
        self.status: dict[str, str] = {}
        self.stages: dict[str, Stage] = {}
        self._identity: dict[str, str] = {}  # stage -> what it left (talksplat.stage_cache.identity)
        self._cache_keys: dict[str, tuple[str, dict]] = {}

    def record_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def read_record(self, name: str) -> dict | None:
        p = self.record_path(name)
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        valid = (isinstance(rec, dict) and rec.get("version") == RECORD_VERSION
                 and all(isinstance(rec.get(k), str) for k in ("key", "run_id")))
        return rec if valid else None  # anything else: as if never run

    def key_parts(self, stage: Stage) -> dict[str, str]:
        parts = {"version": str(RECORD_VERSION), "config": digest(stage.config), **input_parts(stage)}
        for dep in stage.depends:
            parts[f"stage:{dep}"] = self.records[dep]["run_id"]  # any rerun upstream reruns this one
        return parts

    def _log(self, line: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "run.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self.echo(line)

    def run(self, stage: Stage) -> dict:
        """Run ``stage`` unless up to date here or adopted from the stage cache; returns its record (key,
        run_id, parts, summary, seconds)."""
        self.stages[stage.name] = stage
        parts = self.key_parts(stage)
        key = digest(parts)
        old = self.read_record(stage.name)
        missing = [p for p in stage.outputs if not p.exists()]
        if old is not None and old.get("key") == key and not missing and stage.name not in self.force:
            self.records[stage.name] = old
            self.status[stage.name] = "reused"
            self._log(f"{stage.name}: up to date (inputs and config unchanged), reusing "
                      f"{_rel(stage.location or stage.outputs[0], self.workdir)}")
            return old
        if self._cached(stage) and stage.name not in self.force:
            rec = self._adopt(stage, key, parts)
            if rec is not None:
                return rec
        if stage.name in self.force:
            reason = "forced (--force)"
        elif old is None:
            reason = "no finished run recorded"
        elif old.get("key") != key:
            changed = sorted(k for k in set(parts) | set(old.get("parts", {}))
                             if parts.get(k) != old.get("parts", {}).get(k))
            reason = "changed: " + ", ".join(changed)
        else:
            reason = "output missing: " + ", ".join(str(p) for p in missing)
        started = self.dir / f"{stage.name}.started.json"
        interrupted = stage.resume is not None and stage.name not in self.force and _read_key(started) == key
        self._log(f"{stage.name}: {'resuming' if interrupted else 'running'} ({reason})")
        self.record_path(stage.name).unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        started.write_text(json.dumps({"key": key}))
        t0 = time.perf_counter()
        summary = stage.resume() if interrupted else stage.run()
        rec = self._finish(stage, key, parts, "ran", summary, round(time.perf_counter() - t0, 2))
        self._log(f"{stage.name}: done in {rec['seconds']:.1f} s")
        if self._cached(stage):
            self._record_in_cache(stage, rec)
        return rec

    def _finish(self, stage: Stage, key: str, parts: dict, status: str, summary: dict, seconds: float,
                **more) -> dict:
        """Write the record of a finished (``status`` "ran") or adopted ("reused") stage; returns it."""
        rec = {"version": RECORD_VERSION, "stage": stage.name, "key": key, "run_id": uuid.uuid4().hex, "parts": parts,
               "config": jsonable(stage.config), "inputs": {k: (None if v is None else os.fspath(v))
                                                            for k, v in stage.inputs.items()},
               "outputs": [os.fspath(p) for p in stage.outputs], "summary": jsonable(summary),
               "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **more}
        write_json(self.record_path(stage.name), rec, indent=2)
        (self.dir / f"{stage.name}.started.json").unlink(missing_ok=True)
        self.records[stage.name] = rec
        self.status[stage.name] = status
        return rec

    # ------------------------------------------------------------------ the stage cache
    def _cached(self, stage: Stage) -> bool:
        return self.cache is not None and stage.product is not None

    def identity(self, name: str) -> str:
        """What finished stage ``name`` left (:func:`talksplat.stage_cache.identity`), read once per runner."""
        if name not in self._identity:
            self._identity[name] = self.stages[name].product.identity()
        return self._identity[name]

    def cache_key(self, stage: Stage, parts: dict) -> tuple[str, dict]:
        """(key, parts) of ``stage`` in the stage cache (its upstream stages by what they left), from its
        :meth:`key_parts` ``parts``."""
        if stage.name not in self._cache_keys:
            inputs = {k: v for k, v in parts.items() if k.startswith("input:")}
            self._cache_keys[stage.name] = self.cache.key(stage, {d: self.identity(d) for d in stage.depends}, inputs)
        return self._cache_keys[stage.name]

    def _adopt(self, stage: Stage, key: str, parts: dict) -> dict | None:
        """Adopt ``stage``'s result from the stage cache, recording it here as if it had run; None when
        the cache has none that serves."""
        self.record_path(stage.name).unlink(missing_ok=True)  # what it records may be replaced now
        try:
            entry, why = self.cache.adopt(stage, self.cache_key(stage, parts)[0])
        except (OSError, ValueError) as e:  # an unreadable upstream folder or index: the stage runs
            entry, why = None, " ".join(str(e).split())[:200]
        if entry is None:
            if why is not None:
                self._log(f"{stage.name}: not reusing the stage cache's result ({why})")
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        rec = self._finish(stage, key, parts, "reused", entry["summary"], entry["seconds"],
                           adopted_from=entry["folder"])
        self._identity[stage.name] = entry["identity"]
        self._log(f"{stage.name}: reused {entry['folder']} (same inputs and config)")
        return rec

    def _record_in_cache(self, stage: Stage, rec: dict) -> None:
        """Record a stage that ran in the stage cache; a cache that cannot be written is only logged."""
        try:
            cache_key, cache_parts = self.cache_key(stage, rec["parts"])
            self._identity[stage.name] = self.cache.record(stage, cache_key, cache_parts, rec["summary"],
                                                           rec["seconds"])
        except (OSError, ValueError) as e:
            self._log(f"{stage.name}: not recorded in the stage cache ({' '.join(str(e).split())[:200]})")


def _read_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies below it (for messages)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
