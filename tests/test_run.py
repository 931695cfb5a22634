"""`talksplat run`: prep -> fit -> predictor -> drive in one command, with stage reuse."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from talksplat.cli import main
from talksplat.stages import Stage, StageRunner


# ------------------------------------------------------------------ the stage runner on its own

def _pipeline(tmp: Path, calls: list, a: str, b: int, fail: bool = False):
    src = tmp / "input.txt"

    def first():
        calls.append("first")
        (tmp / "first.out").write_text(src.read_text() + a)
        return {"n": 1}

    def second():
        calls.append("second")
        if fail:
            raise RuntimeError("killed")
        (tmp / "second.out").write_text((tmp / "first.out").read_text() * b)
        return {"n": 2}

    return [Stage("first", {"src": src}, {"a": a}, [tmp / "first.out"], first),
            Stage("second", {}, {"b": b}, [tmp / "second.out"], second, depends=("first",))]


def _run(tmp, calls, a="x", b=2, fail=False, force=()):
    runner = StageRunner(tmp, force=force, echo=lambda line: None)
    for st in _pipeline(tmp, calls, a, b, fail):
        runner.run(st)
    return runner


def test_stages_rerun_only_what_changed(tmp_path):
    (tmp_path / "input.txt").write_text("hello")
    calls: list = []
    assert _run(tmp_path, calls).status == {"first": "ran", "second": "ran"}
    assert _run(tmp_path, calls).status == {"first": "reused", "second": "reused"}
    assert calls == ["first", "second"]
    assert _run(tmp_path, calls, b=3).status == {"first": "reused", "second": "ran"}  # own config
    assert _run(tmp_path, calls, b=3, a="y").status == {"first": "ran", "second": "ran"}  # upstream config
    (tmp_path / "input.txt").write_text("other")  # an input file's contents
    assert _run(tmp_path, calls, b=3, a="y").status == {"first": "ran", "second": "ran"}
    (tmp_path / "second.out").unlink()  # a missing output
    assert _run(tmp_path, calls, b=3, a="y").status == {"first": "reused", "second": "ran"}
    assert _run(tmp_path, calls, b=3, a="y", force=("first",)).status == {"first": "ran", "second": "ran"}
    log = (tmp_path / "run.log").read_text()
    assert "second: running (changed: config)" in log and "changed: input:src" in log
    assert "second: running (output missing:" in log


def test_a_failed_stage_is_not_recorded_as_finished(tmp_path):
    (tmp_path / "input.txt").write_text("hello")
    calls: list = []
    _run(tmp_path, calls)
    with pytest.raises(RuntimeError):
        _run(tmp_path, calls, b=5, fail=True)
    assert not (tmp_path / "stages" / "second.json").exists()
    # the old output is still there, but without a record the next run redoes the stage
    assert _run(tmp_path, calls, b=2).status == {"first": "reused", "second": "ran"}
    # a damaged record (here: no run id) counts as no record
    rec = json.loads((tmp_path / "stages" / "first.json").read_text())
    del rec["run_id"]
    (tmp_path / "stages" / "first.json").write_text(json.dumps(rec))
    assert _run(tmp_path, calls, b=2).status == {"first": "ran", "second": "ran"}


def test_an_interrupted_stage_resumes_with_the_same_key(tmp_path):
    calls: list = []

    def stage(a, fail):
        def run():
            calls.append("run")
            if fail:
                raise KeyboardInterrupt
            (tmp_path / "out").write_text(a)
            return {}

        def resume():
            calls.append("resume")
            return run()

        return Stage("s", {}, {"a": a}, [tmp_path / "out"], run, resume=resume)

    runner = StageRunner(tmp_path, echo=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        runner.run(stage("x", fail=True))
    assert (tmp_path / "stages" / "s.started.json").is_file()
    runner.run(stage("x", fail=False))  # same key: resumed
    assert calls == ["run", "resume", "run"] and not (tmp_path / "stages" / "s.started.json").exists()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        runner.run(stage("y", fail=True))
    runner.run(stage("z", fail=False))  # another config: a fresh run, not a resume
    assert calls == ["run", "run"]
    assert "s: resuming" in (tmp_path / "run.log").read_text()


# ------------------------------------------------------------------ end to end on a GRID clip

def _audio_seconds(path: Path) -> float:
    from talksplat.driving.audio import decode_audio

    return len(decode_audio(path)) / 16_000


@pytest.fixture(scope="module")
def grid_run(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("run") / "work"
    args = ["run", str(shared_data / "grid" / "bbaf2n.mpg"), "--out", str(work), "--preset", "fast",
            "--resolution", "96", "--steps", "300", "--driver.steps", "150", "--drive-resolution", "128", "--frame", "head", "--quiet"]
    t0 = time.perf_counter()
    assert main(args + ["--audio", str(shared_data / "audio" / "cmu_arctic_awb_a0007.wav")]) == 0
    first = time.perf_counter() - t0
    return {"work": work, "args": args, "first_seconds": first, "shared": shared_data}


def _check_video(work: Path, audio: Path):
    from talksplat.data_prep.decode import probe_video
    from talksplat.render.video import read_video

    frames, fps = read_video(work / "talk.mp4")
    seconds = _audio_seconds(audio)
    assert frames.shape[1:] == (128, 128, 3) and fps == pytest.approx(25.0)
    assert len(frames) == round(seconds * 25)
    # the muxed audio track: decoded back from the MP4, as long as the driving speech (one frame)
    assert abs(_audio_seconds(work / "talk.mp4") - seconds) <= 1 / 25
    assert abs(probe_video(work / "talk.mp4").duration - seconds) <= 1 / 25


@pytest.mark.e2e
def test_run_makes_a_talking_video_with_metrics(grid_run):
    work = grid_run["work"]
    _check_video(work, grid_run["shared"] / "audio" / "cmu_arctic_awb_a0007.wav")
    m = json.loads((work / "metrics.json").read_text())
    assert {k: v["status"] for k, v in m["stages"].items()} == {"prep": "ran", "fit": "ran", "driver": "ran",
                                                                "drive": "ran"}
    # measured: 18.2 dB held-out PSNR (8 frames, 96 px, 300 steps); an untrained avatar scores ~11 dB
    assert m["fit"]["heldout"]["psnr"] > 16.0
    assert m["prep"]["tracking_error"]["mean_iod"] < 0.03
    assert m["driver"]["heldout"]["lve_mm2"] > 0 and m["drive"]["frames"] > 0
    for key in ("dataset", "avatar", "video", "params", "audio"):
        assert Path(m["outputs"][key]).exists(), key


@pytest.mark.e2e
def test_rerun_with_new_audio_only_drives(grid_run):
    work, shared = grid_run["work"], grid_run["shared"]
    new_audio = shared / "grid" / "lbbc2a.mpg"  # another speaker's video: its audio track
    t0 = time.perf_counter()
    assert main(grid_run["args"] + ["--audio", str(new_audio)]) == 0
    again = time.perf_counter() - t0
    m = json.loads((work / "metrics.json").read_text())
    assert {k: v["status"] for k, v in m["stages"].items()} == {"prep": "reused", "fit": "reused",
                                                                "driver": "reused", "drive": "ran"}
    assert again < 0.3 * grid_run["first_seconds"]
    _check_video(work, new_audio)
    assert "drive: running (changed: input:audio)" in (work / "run.log").read_text()
    # a predictor option reruns the predictor and drive, not prep or the avatar
    assert main(grid_run["args"] + ["--audio", str(new_audio), "--driver.steps", "60"]) == 0
    m = json.loads((work / "metrics.json").read_text())
    assert {k: v["status"] for k, v in m["stages"].items()} == {"prep": "reused", "fit": "reused",
                                                                "driver": "ran", "drive": "ran"}
    assert m["driver"]["steps"] == 60
    # text instead of audio (espeak-ng): only drive reruns; the video is as long as the spoken text
    from talksplat.driving.audio import espeak_exe

    if espeak_exe() is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng): --text not checked")
    args = [a for a in grid_run["args"]] + ["--driver.steps", "60", "--text", "Bin blue at F two now."]
    assert main(args) == 0
    m = json.loads((work / "metrics.json").read_text())
    assert [k for k, v in m["stages"].items() if v["status"] == "ran"] == ["drive"]
    _check_video(work, work / "talk.wav")


def test_run_refuses_bad_input_before_any_work(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.mp4"), "--audio", "x.wav", "--out", str(tmp_path / "w")]) == 1
    assert "missing.mp4: no such file" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "w")]) == 1
    assert "exactly one of --audio" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--audio", str(tmp_path), "--driver.no-enabled", "--out", str(tmp_path / "w")]) == 1
    assert "always trains the audio predictor" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
