"""`talksplat batch`: the manifest checked whole before any work, the local pool on two GRID subjects at tiny
settings (outputs, batch.json, reruns), the Ray path on a local Ray instance (the same manifest, a task failing
on purpose retried and reported), and a batch killed half-way (SIGINT, SIGTERM) then finished by a rerun without
repeating a finished stage."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talksplat.cli import main

REPO = Path(__file__).resolve().parents[1]
#: tiny settings: 25 frames at 64 px, 20 fit steps, 10 predictor steps, 64 px output
TINY = {"preset": "fast", "resolution": 64, "max_frames": 25, "steps": 20, "driver": {"steps": 10}}


def _wav(path: Path, seconds: float, seed: int = 0) -> Path:
    import numpy as np

    from talksplat.benchmarks.drive import speech_like
    from talksplat.driving.audio import write_wav

    return write_wav(path, speech_like(seconds) * (1.0 - 0.1 * np.random.default_rng(seed).random()))


def _manifest(root: Path, grid: Path) -> Path:
    """Two GRID subjects, three renders (r1, r3 of s1; r2 of s2), each render its own audio."""
    import yaml

    for name, secs in (("a", 1.0), ("b", 1.2), ("c", 0.8)):
        _wav(root / f"{name}.wav", secs)
    doc = {"subjects": [{"name": "s1", "video": str(grid / "bbaf2n.mpg"), **TINY},
                        {"name": "s2", "videos": [str(grid / "lbbc2a.mpg")], **TINY}],
           "renders": [{"name": "r1", "subject": "s1", "audio": "a.wav", "resolution": 64},
                       {"name": "r2", "subject": "s2", "audio": "b.wav", "resolution": 64, "camera": "10,0"},
                       {"name": "r3", "subject": "s1", "audio": "c.wav", "resolution": 64, "frame": "head",
                        "background": "black"}]}
    path = root / "jobs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _jobs(out: Path) -> dict:
    return json.loads((out / "batch.json").read_text())["jobs"]


def _statuses(out: Path) -> dict[str, dict[str, str]]:
    return {job: {k: v["status"] for k, v in j["stages"].items()} for job, j in _jobs(out).items()}


def _done_counts(out: Path) -> dict[str, int]:
    """How many times each stage of each work folder finished (its run.log), over every run of the batch."""
    counts: dict[str, int] = {}
    for log in sorted(out.glob("*/*/run.log")):
        for m in re.finditer(r"^\S+ \S+ (\w+): done in", log.read_text(), re.M):
            key = f"{log.parent.name}:{m.group(1)}"
            counts[key] = counts.get(key, 0) + 1
    return counts


# ------------------------------------------------------------------ the manifest, checked whole (no real work)
def test_a_bad_manifest_is_refused_whole_one_line_each(tmp_path, capsys):
    (tmp_path / "v.mp4").write_bytes(b"x")
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "bad.yaml").write_text("""
subjects:
  - {name: s1, video: v.mp4, colour: red}
  - {name: s1, video: v.mp4}
  - {name: s2, video: missing.mp4, steps: 0}
  - {name: "bad name", video: v.mp4}
renders:
  - {name: r1, subject: nobody, audio: a.wav}
  - {name: r2, subject: s1, audio: gone.wav}
  - {name: r3, subject: s1}
  - {name: r1, subject: s1, audio: a.wav}
  - {name: r4, subject: s1, audio: a.wav, camera: "x,y"}
""")
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "bad.yaml"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("talksplat: error: ") for line in err)
    expected = ["unknown key 'colour'", "duplicate subject name 's1'", "missing.mp4: no such file", "`name` must be",
                "unknown subject 'nobody'", "gone.wav: no such file", "give `audio: FILE` or `text:",
                "duplicate render name 'r1'"]
    for text in expected:
        assert sum(text in line for line in err) == 1, (text, err)
    assert len(err) == len(expected)
    assert not out.exists()  # nothing written
    # a render's options checked as `talksplat drive` checks them, once the entries are sound
    (tmp_path / "cam.jsonl").write_text('{"subject": {"name": "s1", "video": "v.mp4"}}\n'
                                        '{"render": {"name": "r4", "subject": "s1", "audio": "a.wav", "camera": "x"}}\n')
    assert main(["batch", str(tmp_path / "cam.jsonl"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "render r4" in err[0] and "--camera x" in err[0]
    (tmp_path / "rng.jsonl").write_text('{"subject": {"name": "s1", "video": "v.mp4", "resolution": 8}}\n'
                                        '{"oops": {}}\n')
    assert main(["batch", str(tmp_path / "rng.jsonl"), "--out", str(out)]) == 1
    assert "rng.jsonl:2: expected" in capsys.readouterr().err
    assert not out.exists()


def test_ray_asked_for_but_not_installed(tmp_path, capsys, monkeypatch):
    (tmp_path / "v.mp4").write_bytes(b"x")
    (tmp_path / "j.jsonl").write_text('{"subject": {"name": "s1", "video": "v.mp4"}}\n')
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["batch", str(tmp_path / "j.jsonl"), "--out", str(tmp_path / "o"), "--ray", "auto"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["talksplat: error: --ray needs Ray, which is not installed: pip install 'talksplat[ray]'"]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the local pool
@pytest.fixture(scope="module")
def batch(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    jobs = _manifest(root, shared_data / "grid")
    out = root / "out"
    t0 = time.perf_counter()
    assert main(["batch", str(jobs), "--out", str(out), "--quiet", "--max-parallel", "2"]) == 0
    return {"root": root, "jobs": jobs, "out": out, "seconds": time.perf_counter() - t0}


def _check_outputs(out: Path, root: Path) -> None:
    from talksplat.driving.audio import decode_audio
    from talksplat.render.video import read_video

    jobs = _jobs(out)
    assert set(jobs) == {"subject:s1", "subject:s2", "render:r1", "render:r2", "render:r3"}
    assert all(j["status"] == "done" and j["error"] is None for j in jobs.values())
    for name, wav in (("r1", "a"), ("r2", "b"), ("r3", "c")):
        seconds = len(decode_audio(root / f"{wav}.wav")) / 16_000
        j = jobs[f"render:{name}"]
        assert j["outputs"]["video"] == str(out / "renders" / name / f"{name}.mp4")
        frames, fps = read_video(Path(j["outputs"]["video"]))
        # r1: the subject's whole 360x288 frame, its longer side at most 64 px; r2 (a camera) and r3: head crops
        assert frames.shape[1:] == ((52, 64, 3) if name == "r1" else (64, 64, 3)) and len(frames) == round(seconds * 25)
        assert j["metrics"]["drive"]["frames"] == len(frames)
        assert Path(j["outputs"]["params"]).is_file() and Path(j["outputs"]["audio"]).is_file()
    for s in ("s1", "s2"):
        j = jobs[f"subject:{s}"]
        assert j["metrics"]["prep"]["timesteps"] == 25 and j["metrics"]["fit"]["step"] == 20
        assert j["metrics"]["driver"]["steps"] == 10
        assert (Path(j["outputs"]["avatar"]) / "driver.safetensors").is_file()


def test_local_pool_runs_every_job(batch):
    out = batch["out"]
    _check_outputs(out, batch["root"])
    assert _statuses(out) == {"subject:s1": {"prep": "ran", "fit": "ran", "driver": "ran"},
                              "subject:s2": {"prep": "ran", "fit": "ran", "driver": "ran"},
                              **{f"render:r{i}": {"drive": "ran"} for i in (1, 2, 3)}}
    doc = json.loads((out / "batch.json").read_text())
    assert doc["finished"] and doc["executor"] == "local" and doc["parallel"] == 2
    assert doc["counts"]["done"] == 5 and doc["counts"]["failed"] == 0
    events = [json.loads(line) for line in (out / "batch.log.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "batch-start" and events[-1]["event"] == "batch-end"
    assert sorted(e["job"] for e in events if e["event"] == "done") == sorted(doc["jobs"])


def test_rerun_does_nothing_and_new_audio_reruns_only_its_drive(batch):
    out, jobs = batch["out"], batch["jobs"]
    assert main(["batch", str(jobs), "--out", str(out), "--quiet"]) == 0
    assert all(st == "reused" for j in _statuses(out).values() for st in j.values())
    _wav(batch["root"] / "b.wav", 0.6, seed=1)  # r2's audio changes
    assert main(["batch", str(jobs), "--out", str(out), "--quiet"]) == 0
    ran = [f"{job}/{k}" for job, j in _statuses(out).items() for k, st in j.items() if st == "ran"]
    assert ran == ["render:r2/drive"]
    assert _jobs(out)["render:r2"]["metrics"]["drive"]["frames"] == 15
    assert "drive: running (changed: input:audio)" in (out / "renders" / "r2" / "run.log").read_text()


# ------------------------------------------------------------------ the Ray path
@pytest.fixture
def ray_local():  # one test uses it: shut down right after it
    ray = pytest.importorskip("ray", reason="ray not installed (pip install 'talksplat[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # started here: loopback only
    yield ray
    ray.shutdown()


def test_ray_same_manifest_retries_then_reports_a_failing_task(batch, ray_local, tmp_path, monkeypatch):
    from talksplat.batch_command import BatchConfig, BatchFailed, run_batch

    out = tmp_path / "ray"
    monkeypatch.setenv("TALKSPLAT_BATCH_FAIL", "render:r3")
    with pytest.raises(BatchFailed) as failed:
        run_batch(BatchConfig(batch["jobs"], out=out, ray="auto", retries=1, quiet=True))
    jobs = _jobs(out)
    events = [json.loads(line) for line in (out / "batch.log.jsonl").read_text().splitlines()]
    why = json.dumps({"error": str(failed.value), "jobs": jobs, "events": events}, indent=1)
    assert "1 of 5 jobs failed (render:r3)" in str(failed.value), why
    assert jobs["render:r3"]["status"] == "failed" and "failing on purpose" in jobs["render:r3"]["error"], why
    assert [j["status"] for k, j in jobs.items() if k != "render:r3"] == ["done"] * 4, why
    assert sum(e["event"] == "attempt" and e["job"] == "render:r3" for e in events) == 2, why  # 1 retry
    assert sum(e["event"] == "attempt" and e["job"] == "render:r1" for e in events) == 1, why
    # the same manifest, nothing failing: r3 is drawn now, the rest is reused
    monkeypatch.delenv("TALKSPLAT_BATCH_FAIL")
    doc = run_batch(BatchConfig(batch["jobs"], out=out, ray="auto", quiet=True))
    assert doc["executor"].startswith("ray")
    _check_outputs(out, batch["root"])
    ran = [f"{job}/{k}" for job, j in _statuses(out).items() for k, st in j.items() if st == "ran"]
    assert ran == ["render:r3/drive"]


# ------------------------------------------------------------------ killed half-way, then rerun
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_killed_batch_resumes_without_repeating_finished_stages(batch, sig, tmp_path, monkeypatch):
    out = tmp_path / "out"
    if sig == signal.SIGINT:  # a stage cache of its own: the subjects are fitted, and killed during that
        monkeypatch.setenv("TALKSPLAT_STAGE_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "talksplat.cli", "batch", str(batch["jobs"]), "--out", str(out),
                             "--quiet", "--max-parallel", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "batch.log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and '"event": "done"' in log.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the batch ended before it could be killed"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "talksplat: interrupted" in err
    doc = json.loads((out / "batch.json").read_text())
    assert doc["finished"] and doc["counts"]["done"] >= 1 and doc["counts"]["done"] < 5
    assert doc["counts"]["interrupted"] <= 1
    assert '"event": "batch-interrupted"' in log.read_text()
    before = _done_counts(out)
    assert main(["batch", str(batch["jobs"]), "--out", str(out), "--quiet"]) == 0
    _check_outputs(out, batch["root"])
    after = _done_counts(out)
    assert all(n == 1 for n in after.values()), after  # no stage finished twice
    assert set(before) < set(after)
    for job, j in _jobs(out).items():  # what had finished was reused
        for stage, st in j["stages"].items():
            folder = job.split(":")[1]
            if f"{folder}:{stage}" in before:
                assert st["status"] == "reused", (job, stage)


def test_a_failed_subject_fails_its_renders_only(batch, shared_data, tmp_path, capsys):
    """A video that exists but is not one passes the manifest check and fails prep: reported at once (an input
    error is not retried), its render is reported failed, the other subject and its render finish."""
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    s1 = {"name": "s1", "video": str(shared_data / "grid" / "bbaf2n.mpg"), **TINY}  # from the stage cache
    lines = [{"subject": s1}, {"subject": {"name": "bad", "video": "broken.mp4", **TINY}},
             {"render": {"name": "r1", "subject": "s1", "audio": str(batch["root"] / "a.wav"), "resolution": 64}},
             {"render": {"name": "rb", "subject": "bad", "audio": str(batch["root"] / "a.wav"), "resolution": 64}}]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "jobs.jsonl"), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "talksplat: error: 2 of 4 jobs failed (subject:bad, render:rb)" in err
    jobs = _jobs(out)
    assert jobs["subject:s1"]["status"] == jobs["render:r1"]["status"] == "done"
    assert jobs["subject:bad"]["status"] == "failed" and "broken.mp4" in jobs["subject:bad"]["error"]
    assert jobs["subject:bad"]["attempts"] == 1
    assert jobs["render:rb"] == {**jobs["render:rb"], "status": "failed", "error": "subject:bad failed", "attempts": 0}
