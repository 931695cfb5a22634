"""Clean kills, one writer per output, no mixed fit folders, a NaN loss that stops the fit.

Real processes: the commands run as `python -m talksplat.cli` children that the tests signal
(SIGTERM, SIGINT, SIGKILL) while they write; what must hold afterwards is checked on disk and in
/proc (no ffmpeg left running, no temporary files left once the next run has started).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import Inputs

from talksplat.cli import main

pytestmark = pytest.mark.e2e  # whole commands on real media (docs/architecture.md: tests)


def _start(args: list[str], tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "talksplat.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(predicate, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting for the command to get going")
        time.sleep(0.05)


def _children_alive(marker: str) -> list[int]:
    """PIDs of processes whose command line mentions ``marker`` (e.g. a temporary folder)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _long_speech(path: Path, seconds: float) -> Path:
    from talksplat.benchmarks.drive import speech_like
    from talksplat.driving.audio import write_wav

    return write_wav(path, speech_like(seconds))


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_drive_killed_leaves_nothing(small_inputs: Inputs, tmp_path, sig):
    """SIGTERM (or Ctrl-C) while drive encodes: exit 130 with one line, no partial MP4, no temp folder,
    no ffmpeg still writing."""
    out = tmp_path / "out"
    out.mkdir()
    audio = _long_speech(tmp_path / "long.wav", 60.0)
    proc = _start(["drive", str(small_inputs.fit), "--audio", str(audio), "--out", str(out / "talk.mp4"),
                   "--resolution", "64", "--quiet"], tmp_path)
    _wait_for(lambda: any(".talk.mp4.partial-" in n for n in _hidden(out)))
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["talksplat: interrupted"]
    assert list(out.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("talksplat-")]
    time.sleep(0.2)
    assert _children_alive(str(out)) == []


def test_kill_9_leftovers_are_removed_by_the_next_run(small_inputs: Inputs, tmp_path):
    """SIGKILL cannot be handled: ffmpeg dies with drive (parent-death signal) and the next drive to the
    same output removes the dead writer's partial file and temp folder."""
    out = tmp_path / "out"
    out.mkdir()
    audio = _long_speech(tmp_path / "long.wav", 60.0)
    args = ["drive", str(small_inputs.fit), "--audio", str(audio), "--out", str(out / "talk.mp4"),
            "--resolution", "64", "--quiet"]
    proc = _start(args, tmp_path)
    _wait_for(lambda: any(".talk.mp4.partial-" in n for n in _hidden(out)))
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    time.sleep(0.3)
    assert _children_alive(str(out)) == [], "ffmpeg outlived a kill -9 of its parent"
    left = _hidden(out) + [p.name for p in tmp_path.iterdir() if p.name.startswith("talksplat-")]
    assert any(f"-{proc.pid}-" in n for n in left), left  # the kill left something: the next run must clean it
    short = _long_speech(tmp_path / "short.wav", 1.0)
    done = _start(args[:3] + [str(short)] + args[4:], tmp_path)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["talk.mp4", "talk.npz", "talk.wav"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("talksplat-")]


def test_prep_interrupted_leaves_no_partial_dataset(small_inputs: Inputs, tmp_path):
    """Ctrl-C during prep's landmark pass: exit 130, one line, no `.ds.partial-*` folder, no dataset."""
    from talksplat.core.ffmpeg import ffmpeg_exe

    video = tmp_path / "long.mp4"  # no face in it: FaceMesh finds none at about 1 ms a frame, so make it long
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-f", "lavfi",
                    "-i", "sine", "-t", "600", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(video)], check=True)
    out = tmp_path / "work"
    out.mkdir()
    proc = _start(["prep", str(video), "--out", str(out / "ds"), "--quiet"], tmp_path)
    _wait_for(lambda: any(".ds.partial-" in n for n in _hidden(out)))
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5, "prep took more than a few seconds to honour Ctrl-C"
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["talksplat: interrupted"]
    assert list(out.iterdir()) == []


def test_predictor_training_stops_within_a_second_of_ctrl_c(small_inputs: Inputs, tmp_path):
    out = tmp_path / "fit"
    proc = _start(["fit", str(small_inputs.dataset), "--out", str(out), "--driver-only", "--driver.steps", "100000",
                   "--quiet"], tmp_path)
    _wait_for(lambda: (out / ".talksplat").is_file())
    time.sleep(3.0)  # well into the training loop
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 1.5
    assert not (out / "driver.safetensors").exists()


def test_second_writer_is_refused_naming_the_first(small_inputs: Inputs, tmp_path, capfd):
    """Two fits into one folder: the second fails at once, naming the first's PID; nothing interleaves."""
    out = tmp_path / "fit"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from talksplat.core.outputs import output_lock\n"
                               f"with output_lock({str(out)!r}):\n"
                               "    print('locked', flush=True)\n"
                               "    sys.stdin.read()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (["fit", str(small_inputs.dataset), "--out", str(out), "--steps", "2", "--quiet"],
                     ["prep", str(small_inputs.clip), "--out", str(out)],
                     ["fit", str(small_inputs.dataset), "--out", str(out), "--driver-only", "--quiet"]):
            capfd.readouterr()
            assert main(argv) == 1
            err = capfd.readouterr().err.strip().splitlines()
            assert err == [f"talksplat: error: {out}: in use by another talksplat process (PID {holder.pid}); "
                           "wait for it to finish or stop it"]
            assert not out.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not list(tmp_path.iterdir()), "the lock file stays only while its holder runs"


def test_a_kill_9_holder_does_not_block_the_next_writer(small_inputs: Inputs, tmp_path):
    out = tmp_path / "avatar"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from talksplat.core.outputs import output_lock\n"
                               f"with output_lock({str(out)!r}):\n"
                               "    print('locked', flush=True)\n"
                               "    time.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert main(["fit", str(small_inputs.dataset), "--out", str(out), "--steps", "2", "--quiet",
                 "--driver.no-enabled", "--eval-frames", "1"]) == 0
    assert (out / "avatar.safetensors").is_file()


def test_overwrite_never_mixes_two_fits(small_inputs: Inputs, tmp_path, capfd):
    """`fit --overwrite --driver.no-enabled` over a fit with a predictor removes that predictor (it belongs
    to the old avatar); a predictor left behind by other means is refused by drive, naming it."""
    import shutil

    fit = tmp_path / "fit"
    shutil.copytree(small_inputs.fit, fit)
    old_driver = (fit / "driver.safetensors").read_bytes()
    assert main(["fit", str(small_inputs.dataset), "--out", str(fit), "--overwrite", "--steps", "2",
                 "--driver.no-enabled", "--quiet", "--seed", "1", "--eval-frames", "1"]) == 0
    assert not (fit / "driver.safetensors").exists()
    assert json.loads((fit / "metrics.json").read_text()).get("driver") is None
    (fit / "driver.safetensors").write_bytes(old_driver)  # as if copied back by hand
    capfd.readouterr()
    assert main(["drive", str(fit), "--audio", str(small_inputs.wav), "--out", str(tmp_path / "t.mp4"),
                 "--resolution", "32", "--quiet"]) == 1
    assert "driver.safetensors: trained for another avatar" in capfd.readouterr().err
    assert not (tmp_path / "t.mp4").exists()


def test_drive_overwrite_replaces_its_own_outputs_only(small_inputs: Inputs, tmp_path, capfd):
    from talksplat.core.ffmpeg import has_own_tag

    out = tmp_path / "talk.mp4"
    args = ["drive", str(small_inputs.fit), "--audio", str(small_inputs.wav), "--out", str(out), "--resolution",
            "32", "--quiet"]
    assert main(args) == 0
    assert has_own_tag(out) and has_own_tag(out.with_suffix(".wav"))
    first = out.stat().st_mtime_ns
    assert main(args) == 1 and "already exists (pass --overwrite" in capfd.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert out.stat().st_mtime_ns != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "talk.npz", "talk.wav"]


def test_a_nan_loss_stops_the_fit_and_keeps_the_last_checkpoint(small_inputs: Inputs, tmp_path, capfd,
                                                                 monkeypatch):
    """Fault injection into our own loss: from step 7 on it is NaN.  The fit stops with one line naming
    the step; the checkpoint of step 5 stays, and no avatar or metrics are written."""
    from safetensors import safe_open

    import talksplat.fitting.losses as losses

    real = losses.photometric_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] >= 7 else loss

    monkeypatch.setattr(losses, "photometric_loss", poisoned)
    out = tmp_path / "fit"
    rc = main(["fit", str(small_inputs.dataset), "--out", str(out), "--steps", "12", "--checkpoint-every", "5",
               "--log-every", "4", "--quiet", "--driver.no-enabled"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "the training loss became non-finite (NaN or Inf) at step 7" in err[0]
    assert "step 5) is kept" in err[0]
    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["talksplat"])["step"] == 5
        assert all(bool(np.isfinite(f.get_tensor(k).numpy()).all()) for k in f.keys() if k.startswith("avatar."))
    assert not (out / "avatar.safetensors").exists() and not (out / "metrics.json").exists()


def test_stale_partials_of_dead_writers_are_removed(small_inputs: Inputs, tmp_path, capfd):
    """What a `kill -9`ed prep left beside its output (`.NAME.partial-<pid>-*`) goes when the next prep to
    that output takes its lock, even one that then fails on its input; a live writer's partial stays."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ds.partial-{dead.pid}-x1y2"
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "a.png").write_bytes(b"half")
    stale_old = tmp_path / f".ds.old-{dead.pid}-z3"
    stale_old.mkdir()
    live = tmp_path / f".ds.partial-{os.getpid()}-w4"
    live.mkdir()
    other = tmp_path / f".other.partial-{dead.pid}-q5"  # another output's: not this prep's business
    other.mkdir()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert main(["prep", str(bad), "--out", str(tmp_path / "ds"), "--quiet"]) == 1
    assert "not a video file" in capfd.readouterr().err
    assert not stale.exists() and not stale_old.exists()
    assert live.exists() and other.exists()


_RACE = """import sys, time
from pathlib import Path
from talksplat.core.outputs import output_lock
root, i, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
while time.time() < start:
    pass
for k in range(20):  # a fresh missing parent each round: every writer tries to make it at once
    with output_lock(root / f"round{k}" / "renders" / f"r{i}"):
        (root / f"round{k}" / "renders" / f"r{i}.done").write_text("ok")
"""


def test_writers_racing_to_make_one_parent_folder_all_succeed(tmp_path):
    """`talksplat batch` renders make OUT/renders/ at the same moment: none may fail with 'File exists'
    (CI saw exactly that once), and none may remove a parent folder another writer is using."""
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(tmp_path), str(i), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    for k in range(20):
        assert sorted(f.name for f in (tmp_path / f"round{k}" / "renders").glob("*.done")) == \
            [f"r{i}.done" for i in range(6)]
