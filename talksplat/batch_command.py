"""`talksplat batch`: many subjects and renders from one manifest, on this machine or on a Ray cluster.

Each subject is a `talksplat run` work folder, OUT/subjects/NAME/ (dataset/, avatar/, stages/, run.log): its
prep, fit and predictor run through the stage records of `talksplat run` (:mod:`talksplat.stages`, the stage
cache of :mod:`talksplat.stage_cache`), so a rerun repeats only what changed and a killed fit continues from
its checkpoint.  Each render is a drive stage in OUT/renders/NAME/ (NAME.mp4, .npz, .wav, stages/, run.log)
keyed on its subject's fit and predictor records.  OUT/batch.log.jsonl logs every event; OUT/batch.json
holds each job's status, outputs, metrics and error line (docs/batch.md).

Without ``--ray`` the jobs run in a pool of processes on this machine (:func:`run_local`); with ``--ray``
each stage is a Ray task (:mod:`talksplat.batch_ray`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

import tyro

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.core.errors import TalksplatError

SUBJECT_STAGES = ("prep", "fit", "driver")
#: Memory a local job is given when sizing the pool (a tiny job needs ~0.7 GB, a 512 px fit more).
JOB_MEMORY_GB = 2.0
#: Job ids in this environment variable (comma-separated, e.g. ``render:hello``) fail on purpose before any work,
#: with an error that is retried (tests of the retries and the report).
FAIL_ENV = "TALKSPLAT_BATCH_FAIL"


@dataclass
class BatchConfig(ProcessOptions):
    """Fit many avatars and render many clips from one manifest (YAML or JSON lines, see docs/batch.md).

    Each subject runs prep -> fit -> predictor once and each render runs drive, with the stage records of
    `talksplat run`: a rerun repeats only what changed and a killed batch resumes.  Jobs run in a pool of
    processes on this machine, or as Ray tasks with --ray (OUT must then be on storage every node sees).
    """

    threads: Annotated[int | None, Range(1, 1024)] = field(default=None, kw_only=True)
    """CPU threads of each job (default: 1 on a CPU-only machine; the cores over the GPUs with GPUs) (1 to 1024)."""

    jobs: tyro.conf.Positional[Path]
    """The manifest: subjects (name, videos, optional calibration, rig, preset) and renders (name, subject, audio
    or text, camera and background options)."""
    out: Path = Path("talksplat-batch")
    """Output folder: subjects/NAME/, renders/NAME/NAME.mp4, batch.json, batch.log.jsonl."""
    ray: str | None = None
    """Run each stage as a Ray task: a cluster address (`ray://host:10001`, `host:6379`), `auto` (the cluster this
    machine is part of) or `local` (a Ray instance started here).  Needs `pip install 'talksplat[ray]'`."""
    max_parallel: Annotated[int | None, Range(1, 4096)] = None
    """At most this many jobs at once (default: on this machine as many as the cores, memory and GPUs allow; with
    --ray as many as the cluster schedules) (1 to 4096)."""
    retries: Annotated[int, Range(0, 10)] = 2
    """Run a job (a Ray task) again this many times after a crash or an unexpected error; an error in its input
    (a bad video, say) is reported at once (0 to 10)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when available, else the CPU."""
    quiet: bool = False
    """No live table (the log and the summary are still written)."""


# ------------------------------------------------------------------ the jobs
def job_specs(manifest, out: Path, device: str) -> list[dict]:
    """The jobs of a checked manifest, subjects first, as JSON-able specs (what a worker process or a Ray task
    is given)."""
    from talksplat.stages import jsonable

    fail = {j for j in os.environ.get(FAIL_ENV, "").split(",") if j}
    specs = []
    for s in manifest.subjects.values():
        specs.append({"id": f"subject:{s.name}", "kind": "subject", "name": s.name, "out": str(out),
                      "device": device, "subject": jsonable({"name": s.name, "videos": s.videos, "options": s.options}),
                      "fail": f"subject:{s.name}" in fail})
    for r in manifest.renders.values():
        s = manifest.subjects[r.subject]
        specs.append({"id": f"render:{r.name}", "kind": "render", "name": r.name, "out": str(out), "device": device,
                      "after": f"subject:{s.name}",
                      "subject": jsonable({"name": s.name, "videos": s.videos, "options": s.options}),
                      "render": jsonable({"name": r.name, "subject": r.subject, "options": r.options}),
                      "fail": f"render:{r.name}" in fail})
    return specs


def _subject_of(d: dict):
    from talksplat.batch_manifest import Subject

    opts = dict(d["options"])
    for k in ("calibration", "lpips_weights"):
        if opts.get(k) is not None:
            opts[k] = Path(opts[k])
    return Subject(d["name"], tuple(Path(v) for v in d["videos"]), opts)


def _render_of(d: dict):
    from talksplat.batch_manifest import Render

    opts = dict(d["options"])
    if opts.get("audio") is not None:
        opts["audio"] = Path(opts["audio"])
    return Render(d["name"], d["subject"], opts)


def subject_dir(out: str | Path, name: str) -> Path:
    return Path(out) / "subjects" / name


def render_dir(out: str | Path, name: str) -> Path:
    return Path(out) / "renders" / name


class FailingOnPurpose(RuntimeError):
    """The error of a job named in $TALKSPLAT_BATCH_FAIL."""


def run_job(spec: dict, upto: str = "driver", say: Callable[[str], None] | None = None) -> dict:
    """Do one job in this process: a subject's stages up to ``upto`` (the earlier ones reused when up to date), or
    a render's drive.  Returns ``{"status": "done" | "failed", "stages", "outputs", "metrics", "error", "retry"}``
    (``retry``: the error was not one in the job's input: worth running again)."""
    say = say or (lambda line: None)
    try:
        if spec.get("fail"):
            raise FailingOnPurpose(f"failing on purpose (${FAIL_ENV})")
        res = _subject_job(spec, upto, say) if spec["kind"] == "subject" else _render_job(spec, say)
        return {"status": "done", **res, "error": None, "retry": False}
    except TalksplatError as e:
        return {"status": "failed", "error": " ".join(str(e).split()), "retry": False}
    except OSError as e:  # the machine's answer about a path (permissions, disk full)
        text = f"{e.filename}: {e.strerror}" if e.filename is not None and e.strerror else str(e)
        return {"status": "failed", "error": " ".join(text.split()), "retry": False}
    except Exception as e:  # noqa: BLE001 - a crash of the job: reported (and retried), never the batch's end
        return {"status": "failed", "error": f"{type(e).__name__}: {' '.join(str(e).split())}"[:500], "retry": True}


def _records(runner, names) -> tuple[dict, dict]:
    stages = {n: {"status": runner.status[n], "seconds": runner.records[n]["seconds"]} for n in names}
    return stages, {n: runner.records[n]["summary"] for n in names}


def _subject_job(spec: dict, upto: str, say) -> dict:
    from talksplat.batch_manifest import run_config
    from talksplat.core.outputs import output_lock
    from talksplat.run_command import build_stages
    from talksplat.stage_cache import StageCache
    from talksplat.stages import StageRunner

    subject = _subject_of(spec["subject"])
    work = subject_dir(spec["out"], subject.name)
    cfg = run_config(subject, work, device=spec["device"])
    stages = build_stages(cfg, say)[: SUBJECT_STAGES.index(upto) + 1]
    with output_lock(work):
        runner = StageRunner(work, echo=say, cache=StageCache())
        for stage in stages:
            runner.run(stage)
    stage_info, metrics = _records(runner, [s.name for s in stages])
    return {"stages": stage_info, "metrics": metrics,
            "outputs": {"workdir": str(work), "dataset": str(work / "dataset"), "avatar": str(work / "avatar")}}


def _render_job(spec: dict, say) -> dict:
    from talksplat.batch_manifest import drive_config
    from talksplat.core.errors import InputError
    from talksplat.core.outputs import output_lock
    from talksplat.run_command import drive_stage
    from talksplat.stages import StageRunner

    subject, render = _subject_of(spec["subject"]), _render_of(spec["render"])
    sdir, rdir = subject_dir(spec["out"], subject.name), render_dir(spec["out"], render.name)
    upstream = StageRunner(sdir)
    records = {name: upstream.read_record(name) for name in ("fit", "driver")}
    if any(r is None for r in records.values()):
        raise InputError(f"subject {subject.name}: no finished fit and audio predictor in {sdir}")
    drive = drive_config(subject, render, sdir, rdir / f"{render.name}.mp4", device=spec["device"])
    with output_lock(rdir):
        runner = StageRunner(rdir, echo=say)
        runner.records.update(records)  # the drive stage is keyed on their run ids: a refit redrives
        rec = runner.run(drive_stage(drive, say))
    stage_info, metrics = _records(runner, ["drive"])
    summary = rec["summary"]
    outputs = {k: summary[k] for k in ("video", "params", "audio", "arkit_csv") if summary.get(k)}
    metrics = {k: v for k, v in summary.items() if k not in ("video", "params", "audio", "arkit_csv")}
    return {"stages": stage_info, "metrics": {"drive": metrics},
            "outputs": outputs}


# ------------------------------------------------------------------ the record: batch.json and batch.log.jsonl
class Ledger:
    """The batch's state: each job's entry (OUT/batch.json, rewritten on each change) and the event log
    (OUT/batch.log.jsonl, appended)."""

    def __init__(self, out: Path, specs: list[dict], executor: str, parallel: int | None, manifest: Path):
        self.out = out
        self.t0 = time.time()
        self.jobs = {s["id"]: {"kind": s["kind"], "name": s["name"], "status": "pending", "attempts": 0,
                               "seconds": None, "stages": {}, "outputs": {}, "metrics": {}, "error": None}
                     for s in specs}
        self.head = {"manifest": str(manifest), "out": str(out), "executor": executor, "parallel": parallel,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.started: dict[str, float] = {}
        self.event("batch-start", executor=executor, parallel=parallel, jobs=len(specs))
        self.save()

    def event(self, name: str, job: str | None = None, **fields) -> None:
        log_event(self.out, name, job, **fields)

    def start(self, job: str, **fields) -> None:
        j = self.jobs[job]
        j["status"], j["attempts"] = "running", j["attempts"] + 1
        self.started[job] = time.time()
        self.event("start", job, attempt=j["attempts"], **fields)
        self.save()

    def finish(self, job: str, result: dict, final: bool = True) -> None:
        j = self.jobs[job]
        seconds = round(time.time() - self.started.get(job, time.time()), 2)
        if result["status"] == "done" or final:
            j.update(status=result["status"], seconds=seconds, error=result.get("error"))
            for k in ("stages", "outputs", "metrics"):
                j[k] = result.get(k) or j[k]
        self.event(result["status"] if final or result["status"] == "done" else "retry", job, seconds=seconds,
                   error=result.get("error"), stages={k: v["status"] for k, v in (result.get("stages") or {}).items()})
        self.save()

    def counts(self) -> dict[str, int]:
        c = {k: 0 for k in ("done", "running", "failed", "pending", "interrupted")}
        for j in self.jobs.values():
            c[j["status"]] = c.get(j["status"], 0) + 1
        return c

    def save(self, finished: bool = False) -> None:
        doc = {**self.head, "seconds": round(time.time() - self.t0, 2), "finished": finished,
               "counts": self.counts(), "jobs": self.jobs}
        from talksplat.core.files import write_json

        write_json(self.out / "batch.json", doc, indent=2)

    def eta(self, parallel: int) -> float | None:
        """Seconds left: the mean time of the finished jobs of each kind times those left, over ``parallel``."""
        left = 0.0
        for kind in ("subject", "render"):
            done = [j["seconds"] for j in self.jobs.values() if j["kind"] == kind and j["status"] == "done"
                    and j["seconds"] is not None]
            todo = sum(1 for j in self.jobs.values() if j["kind"] == kind and j["status"] in ("pending", "running"))
            if todo and not done:
                return None
            left += (sum(done) / len(done) * todo) if todo else 0.0
        return left / max(1, parallel)


def log_event(out: str | Path, name: str, job: str | None = None, **fields) -> None:
    """Append one event to OUT/batch.log.jsonl (one line, written at once: safe beside other writers)."""
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": name, **({"job": job} if job else {}),
           **{k: v for k, v in fields.items() if v is not None}}
    line = (json.dumps(rec) + "\n").encode()
    fd = os.open(Path(out) / "batch.log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class Table:
    """The live table on stderr (a terminal, not --quiet): counts, ETA, the running jobs and the last failures;
    else plain lines for each finished job."""

    def __init__(self, ledger: Ledger, parallel: int, quiet: bool, say: Callable[[str], None]):
        from talksplat.core.progress import show_progress

        self.ledger, self.parallel, self.say = ledger, parallel, say
        self.live = None
        if show_progress(quiet):
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self.render(), console=Console(stderr=True), refresh_per_second=2, transient=False)

    def __enter__(self) -> "Table":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def render(self):
        from rich.table import Table as RichTable

        c = self.ledger.counts()
        eta = self.ledger.eta(self.parallel)
        t = RichTable(title=(f"talksplat batch: {c['done']} done, {c['running']} running, {c['failed']} failed, "
                             f"{c['pending']} waiting" + (f"; ETA {_duration(eta)}" if eta is not None else "")))
        for col in ("job", "status", "attempt", "time", "error"):
            t.add_column(col)
        now = time.time()
        running = [(k, j) for k, j in self.ledger.jobs.items() if j["status"] == "running"]
        failed = [(k, j) for k, j in self.ledger.jobs.items() if j["status"] == "failed"][-5:]
        for k, j in running + failed:
            secs = now - self.ledger.started.get(k, now) if j["status"] == "running" else (j["seconds"] or 0)
            t.add_row(k, j["status"], str(j["attempts"]), _duration(secs), (j["error"] or "")[:60])
        return t

    def update(self, line: str | None = None) -> None:
        if self.live is not None:
            self.live.update(self.render())
        elif line is not None:
            self.say(line)


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def job_line(job: str, entry: dict) -> str:
    """One finished job as a line: "render:hello: done in 3.2 s (drive ran)"."""
    if entry["status"] == "done":
        ran = ", ".join(f"{k} {v['status']}" for k, v in entry["stages"].items())
        return f"{job}: done in {entry['seconds']:.1f} s ({ran})"
    return f"{job}: {entry['status']}" + (f": {entry['error']}" if entry.get("error") else "")


# ------------------------------------------------------------------ the command
def run_batch(cfg: BatchConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """Do the work of `talksplat batch`: check the manifest whole (nothing is written when it has errors), run
    every job, write OUT/batch.json.  Returns its contents; raises :class:`BatchFailed` (after writing it) when a
    job failed."""
    from talksplat.batch_manifest import load_manifest
    from talksplat.core.errors import OptionError, OutputError
    from talksplat.core.outputs import output_lock

    say = on_stage or (lambda line: None)
    manifest = load_manifest(cfg.jobs)
    if cfg.ray is not None:
        from talksplat.batch_ray import import_ray

        import_ray()  # a clear error before anything is written
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if cfg.device == "cuda" and not _cuda_count():
        raise OptionError("--device cuda: no CUDA GPU found")
    specs = job_specs(manifest, out, cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        if cfg.ray is not None:
            from talksplat.batch_ray import run_ray

            ledger = run_ray(cfg, specs, manifest.path, say)
        else:
            ledger = run_local(cfg, specs, manifest.path, say)
    doc = json.loads((out / "batch.json").read_text())
    failed = [k for k, j in ledger.jobs.items() if j["status"] != "done"]
    if failed:
        say(summary_text(doc))
        raise BatchFailed(f"{len(failed)} of {len(ledger.jobs)} jobs failed ({', '.join(failed[:5])}"
                          f"{', ...' if len(failed) > 5 else ''}): see {out / 'batch.json'}")
    return doc


class BatchFailed(TalksplatError):
    """Some jobs failed (each one's error line is in OUT/batch.json)."""


def summary_text(doc: dict) -> str:
    """batch.json as text: the counts, then each job's line."""
    c = doc["counts"]
    lines = [f"talksplat batch: {doc['out']}: {c['done']} done, {c['failed']} failed"
             + (f", {c['interrupted']} interrupted" if c.get("interrupted") else "")
             + f" in {doc['seconds']:.1f} s ({doc['executor']}"
             + (f", {doc['parallel']} at once" if doc.get("parallel") else "") + ")"]
    for job, entry in doc["jobs"].items():
        lines.append("  " + job_line(job, entry))
        if entry["status"] == "done" and entry["outputs"].get("video"):
            lines.append(f"    {entry['outputs']['video']}")
    lines.append(f"  summary  {Path(doc['out']) / 'batch.json'}")
    return "\n".join(lines)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_slots(cfg: BatchConfig) -> tuple[int, list[int | None], int]:
    """(jobs at once, the GPU of each slot or None, threads per job) of the local pool: one job per GPU when
    there are GPUs (and --device is not cpu), else as many single-threaded jobs as the cores and the memory
    (:data:`JOB_MEMORY_GB` each) allow; --max-parallel caps it."""
    from talksplat.core.process import available_cores

    cores = available_cores()
    gpus = 0 if cfg.device == "cpu" else _cuda_count()
    if gpus:
        n = gpus
    else:
        n = max(1, min(cores, int(_available_memory_gb() // JOB_MEMORY_GB) or 1))
    if cfg.max_parallel is not None:
        n = min(n, cfg.max_parallel)
    threads = cfg.threads or (max(1, cores // n) if gpus else 1)
    return n, [i % gpus if gpus else None for i in range(n)], threads


def _available_memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2 ** 20
    except (OSError, ValueError, IndexError):
        pass
    return 8.0


def run_local(cfg: BatchConfig, specs: list[dict], manifest: Path, say: Callable[[str], None]) -> Ledger:
    """The local pool: :func:`local_slots` worker processes (``python -m talksplat.batch_command``), each running
    one job at a time, a render once its subject is done; a job whose worker crashed or that raised an unexpected
    error runs again up to ``--retries`` times.  Ctrl-C or SIGTERM stops the workers (the stages they finished
    stay recorded, a fit keeps its checkpoint) and raises KeyboardInterrupt."""
    out = Path(cfg.out)
    n, gpus, threads = local_slots(cfg)
    ledger = Ledger(out, specs, "local", n, manifest)
    jobs_dir = out / ".batch"
    jobs_dir.mkdir(exist_ok=True)
    workers = [Worker(jobs_dir, slot, gpus[slot], threads) for slot in range(n)]
    pending = list(specs)
    state = ledger.jobs
    try:
        with Table(ledger, n, cfg.quiet, say) as table:
            while pending or any(w.spec for w in workers):
                for spec in list(pending):
                    idle = [w for w in workers if w.spec is None]
                    if not idle:
                        break
                    after = spec.get("after")
                    if after and state[after]["status"] in ("pending", "running"):
                        continue
                    pending.remove(spec)
                    if after and state[after]["status"] != "done":
                        ledger.finish(spec["id"], {"status": "failed", "error": f"{after} failed"})
                        table.update(job_line(spec["id"], state[spec["id"]]))
                        continue
                    idle[0].submit(spec)
                    ledger.start(spec["id"], worker=idle[0].slot)
                    table.update()
                time.sleep(0.2)
                for w in workers:
                    spec, result = w.result()
                    if spec is None:
                        continue
                    job = spec["id"]
                    again = bool(result.get("retry")) and state[job]["attempts"] <= cfg.retries
                    ledger.finish(job, result, final=not again)
                    if again:
                        pending.insert(0, spec)
                    table.update(job_line(job, state[job]) if not again else
                                 f"{job}: failed ({result['error']}), running it again")
                table.update()
    except KeyboardInterrupt:
        busy = [w.spec["id"] for w in workers if w.spec is not None]
        _stop(workers)
        for job in busy:
            state[job]["status"] = "interrupted"
            ledger.event("interrupted", job)
        ledger.event("batch-interrupted")
        ledger.save(finished=True)
        raise
    _stop(workers)
    ledger.event("batch-end", counts=ledger.counts())
    ledger.save(finished=True)
    return ledger


class Worker:
    """One process of the local pool (started on its first job, again after a crash): reads a job a line on its
    stdin, writes each job's result to ``.batch/JOB.result.json`` and its lines to ``.batch/JOB.log``."""

    def __init__(self, jobs_dir: Path, slot: int, gpu: int | None, threads: int):
        self.jobs_dir, self.slot, self.gpu, self.threads = jobs_dir, slot, gpu, threads
        self.proc = None
        self.spec: dict | None = None

    def _start(self) -> None:
        import subprocess

        from talksplat.core.process import child_kwargs

        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        with open(self.jobs_dir / f"worker{self.slot}.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "talksplat.batch_command", str(self.threads)],
                                         stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         **child_kwargs())

    def submit(self, spec: dict) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.spec = spec
        result = _job_file(self.jobs_dir, spec, "result.json")
        result.unlink(missing_ok=True)
        line = json.dumps({"spec": spec, "result": str(result), "log": str(_job_file(self.jobs_dir, spec, "log"))})
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except OSError:  # the worker died just now: result() reports it
            pass

    def result(self) -> tuple[dict | None, dict | None]:
        """(the spec, its result) once the job is over, else (None, None)."""
        if self.spec is None:
            return None, None
        spec, path = self.spec, _job_file(self.jobs_dir, self.spec, "result.json")
        if path.exists():
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError):
                result = None
        elif self.proc.poll() is not None:
            result = None
        else:
            return None, None
        if result is None:
            code = self.proc.poll()
            result = {"status": "failed", "retry": True,
                      "error": f"the job's worker process ended (exit code {code}) without a result "
                               f"(see {self.jobs_dir / f'worker{self.slot}.log'})"}
        self.spec = None
        return spec, result


def _job_file(jobs_dir: Path, spec: dict, what: str) -> Path:
    return jobs_dir / f"{spec['id'].replace(':', '-')}.{what}"


def _stop(workers: list[Worker], grace: float = 20.0) -> None:
    """End each worker: its stdin closed (an idle one exits), SIGTERM to a busy one (it stops like `talksplat run`
    on Ctrl-C: what finished stays recorded); SIGKILL after ``grace`` seconds."""
    procs = [w.proc for w in workers if w.proc is not None]
    for w in workers:
        if w.proc is None or w.proc.poll() is not None:
            continue
        try:
            w.proc.stdin.close()
        except OSError:
            pass
        if w.spec is not None:
            w.proc.terminate()
    deadline = time.time() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            proc.kill()
            proc.wait()


def _serve(job: dict) -> None:
    """Run one job of a worker (:func:`_worker`): its lines to its log file, its result to its result file."""
    from talksplat.core.files import write_json

    spec = job["spec"]
    with open(job["log"], "a") as log:
        def say(text: str) -> None:
            log.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            log.flush()

        try:
            result = run_job(spec, "driver", say)
        except KeyboardInterrupt:
            say("interrupted")
            raise
        say(f"{spec['id']}: {result['status']}" + (f": {result['error']}" if result.get("error") else ""))
    write_json(job["result"], result)


def _worker(argv: list[str]) -> int:
    """A local worker process: ``THREADS``; runs each job read from stdin (one JSON line: spec, result file, log
    file) with :func:`run_job`, and writes its result."""
    from talksplat.core.process import configure_threads, handle_termination

    handle_termination()
    configure_threads(int(argv[0]))
    import torch  # noqa: F401 - loaded before the first job, while the pool starts

    try:
        for line in sys.stdin:
            if line.strip():
                _serve(json.loads(line))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
