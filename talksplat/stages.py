"""Stage records for `talksplat run`: which inputs and config made each stage's output.

A stage is up to date when its record exists, its key (a hash over the stage's input files' contents,
its config and the run ids of the stages it depends on) is unchanged and its outputs exist.  Each
finished run of a stage gets a new run id, so whatever reruns a stage also reruns the stages after it.  The record
is removed before a stage runs and written (atomically) only after it finished, so a killed stage is
never mistaken for a finished one.  Records live in ``WORKDIR/stages/NAME.json``; while a stage runs,
``NAME.started.json`` holds its key, so a rerun after a kill with the same key can resume it (fit
continues from its checkpoint).
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
from typing import Any, Callable

from talksplat.core.files import file_digest, write_json

#: Bump when a stage's outputs change meaning (it is part of every key).
RECORD_VERSION = 1


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
    return hashlib.sha256(json.dumps(jsonable(obj), sort_keys=True).encode()).hexdigest()


@dataclass
class Stage:
    """One step of the pipeline.

    ``inputs``: name -> file whose contents key the stage; ``config``: the settings that change its
    output; ``depends``: names of earlier stages; ``outputs``: what must exist for it to count as done;
    ``run``: does the work and returns a JSON-able summary (kept in the record and in metrics.json);
    ``resume``: used instead of ``run`` when the previous run with the same key was interrupted.
    """

    name: str
    inputs: dict[str, Path | None]
    config: dict[str, Any]
    outputs: list[Path]
    run: Callable[[], dict]
    depends: tuple[str, ...] = ()
    location: Path | None = None  # what to name in messages (default: the first output)
    resume: Callable[[], dict] | None = None  # continues an interrupted run with the same key


class StageRunner:
    """Runs stages in order, skipping the up-to-date ones; logs decisions to WORKDIR/run.log (and to ``echo``)."""

    def __init__(self, workdir: Path, force: tuple[str, ...] = (), echo: Callable[[str], None] | None = None):
        self.workdir = Path(workdir)
        self.dir = self.workdir / "stages"
        self.force = set(force)
        self.echo = echo or (lambda line: None)
        self.records: dict[str, dict] = {}
        self.status: dict[str, str] = {}

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
        parts = {"version": str(RECORD_VERSION), "config": digest(stage.config)}
        for name, path in stage.inputs.items():
            parts[f"input:{name}"] = "none" if path is None else file_digest(path)
        for dep in stage.depends:
            parts[f"stage:{dep}"] = self.records[dep]["run_id"]  # any rerun upstream reruns this one
        return parts

    def _log(self, line: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "run.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self.echo(line)

    def run(self, stage: Stage) -> dict:
        """Run ``stage`` unless up to date; returns its record (key, run_id, parts, summary, seconds)."""
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
        rec = {"version": RECORD_VERSION, "stage": stage.name, "key": key, "run_id": uuid.uuid4().hex, "parts": parts,
               "config": jsonable(stage.config), "inputs": {k: (None if v is None else os.fspath(v))
                                                            for k, v in stage.inputs.items()},
               "outputs": [os.fspath(p) for p in stage.outputs], "summary": jsonable(summary),
               "seconds": round(time.perf_counter() - t0, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.record_path(stage.name), rec, indent=2)
        started.unlink(missing_ok=True)
        self.records[stage.name] = rec
        self.status[stage.name] = "ran"
        self._log(f"{stage.name}: done in {rec['seconds']:.1f} s")
        return rec


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
