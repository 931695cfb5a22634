"""`talksplat batch --ray`: each stage a Ray task (ray is an optional extra, imported only here).

A subject is three chained tasks, prep -> fit -> driver (each reuses the ones before it through the stage
records in OUT/subjects/NAME/stages/), and each render a drive task given its subject's driver task's object
ref, so Ray starts it once that finished.  Fit, driver and drive ask for one GPU when the cluster has GPUs, one
CPU otherwise; prep one CPU.  A task that crashed or raised an unexpected error runs again up to ``--retries``
times (Ray's ``max_retries``); an error in a job's input is reported at once.  Every node reads and writes OUT:
it must be on storage all of them see (a shared file system).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from talksplat.batch_command import SUBJECT_STAGES, BatchConfig, Ledger, Table, job_line, log_event, run_job
from talksplat.core.errors import OptionError


def import_ray():
    """The ray module, or a one-line :class:`OptionError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OptionError("--ray needs Ray, which is not installed: pip install 'talksplat[ray]'") from None
    return ray


def _task(spec: dict, upto: str, *upstream: dict) -> dict:
    """One stage as a Ray task: nothing when an upstream task failed; an unexpected error raises (Ray runs the
    task again, up to max_retries)."""
    from talksplat.core.process import configure_threads

    for u in upstream:
        if u["status"] != "done":  # the subject's earlier stage failed: reported there
            error = f"{spec['after']} failed" if spec["kind"] == "render" else u["error"]
            return {"status": "failed", "error": error, "retry": False}
    configure_threads(1)
    log_event(spec["out"], "attempt", spec["id"], stage=upto)
    result = run_job(spec, upto)
    if result["status"] != "done" and result.get("retry"):
        raise RuntimeError(result["error"])
    return result


def run_ray(cfg: BatchConfig, specs: list[dict], manifest: Path, say: Callable[[str], None]) -> Ledger:
    """Submit every stage as a Ray task and follow them to the end; Ctrl-C / SIGTERM cancels the unfinished ones
    and raises KeyboardInterrupt.  Uses the Ray connection of this process when there is one, else connects
    to ``cfg.ray`` (``local``: starts a Ray instance here) and disconnects at the end."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if cfg.ray == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=cfg.ray, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise OptionError(f"--ray {cfg.ray}: cannot connect ({' '.join(str(e).split())[:200]})") from None
    try:
        return _follow(ray, cfg, specs, manifest, say)
    finally:
        if started_here:
            ray.shutdown()


def _follow(ray, cfg: BatchConfig, specs: list[dict], manifest: Path, say) -> Ledger:
    gpus = 0 if cfg.device == "cpu" else ray.cluster_resources().get("GPU", 0)
    heavy = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    task = ray.remote(_task)
    out = Path(cfg.out)
    parallel = cfg.max_parallel or int(gpus or ray.cluster_resources().get("CPU", 1))
    ledger = Ledger(out, specs, f"ray ({cfg.ray or 'this process'})", parallel, manifest)
    refs: dict = {}  # ref -> (job id, stage)
    last: dict[str, object] = {}  # subject job -> its driver task's ref
    queue = list(specs)  # subjects first: a render is submitted after its subject
    waiting: list = []
    stages_of: dict[str, dict] = {s["id"]: {} for s in specs}
    total = {s["id"]: (len(SUBJECT_STAGES) if s["kind"] == "subject" else 1) for s in specs}

    def submit() -> None:
        """Submit queued jobs while fewer than --max-parallel are unfinished (all of them without it)."""
        while queue and (cfg.max_parallel is None or
                         sum(j["status"] == "running" for j in ledger.jobs.values()) < cfg.max_parallel):
            spec = queue.pop(0)
            prev = [last[spec["after"]]] if spec.get("after") else []
            for stage in SUBJECT_STAGES if spec["kind"] == "subject" else ("drive",):
                opts = heavy if stage != "prep" else {"num_cpus": 1}
                ref = task.options(max_retries=cfg.retries, retry_exceptions=True, name=f"{spec['id']}:{stage}",
                                   **opts).remote(spec, stage if stage != "drive" else "driver", *prev)
                refs[ref] = (spec["id"], stage)
                waiting.append(ref)
                prev = [ref]
            last[spec["id"]] = prev[0]
            ledger.start(spec["id"])  # with Ray, "running" is "submitted": Ray starts it when its inputs are ready

    try:
        with Table(ledger, parallel, cfg.quiet, say) as table:
            submit()
            while waiting:
                ready, waiting[:] = ray.wait(waiting, num_returns=1, timeout=0.5)
                for ref in ready:
                    job, stage = refs[ref]
                    j = ledger.jobs[job]
                    if j["status"] in ("done", "failed"):
                        continue
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - RayTaskError (retries spent), a lost worker
                        result = {"status": "failed", "error": _cause(e)}
                    if result["status"] == "done":
                        stages_of[job][stage] = result["stages"][stage]  # (the earlier ones: reused by it)
                        result = {**result, "stages": dict(stages_of[job])}
                        if len(stages_of[job]) < total[job]:
                            continue  # the subject's next stage follows
                    ledger.finish(job, result)
                    table.update(job_line(job, j))
                submit()
                table.update()
    except KeyboardInterrupt:
        for ref in waiting:
            ray.cancel(ref)
        for job, j in ledger.jobs.items():
            if j["status"] in ("pending", "running"):
                j["status"] = "interrupted"
        ledger.event("batch-interrupted")
        ledger.save(finished=True)
        raise
    ledger.event("batch-end", counts=ledger.counts())
    ledger.save(finished=True)
    return ledger


def _cause(e: Exception) -> str:
    """The one-line message of a task's error (a RayTaskError wraps the task's own exception)."""
    cause = getattr(e, "cause", None)
    text = str(cause) if cause is not None else str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return " ".join(text.split())[:500]
