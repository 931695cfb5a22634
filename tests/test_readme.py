"""The README's commands for a user's own video, run as written (`bash -e`), on real recordings.

The blocks marked ``<!-- ci: own-video -->`` and ``<!-- ci: run -->`` run in a fresh directory that
holds what they name: ``talking.mp4`` (a GRID clip), ``speech.m4a`` (a CMU ARCTIC sentence as AAC),
``other.wav`` (another GRID speaker's audio) and ``.venv`` (this checkout's).  They use the real
presets (`--preset fast`: 2,000 fit steps at 256 px), so each takes several minutes on 2 cores; after the
own-video block, the run block's `talksplat run` reuses its dataset and fit (the same inputs and options,
through the stage cache, here this module's own) and only drives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from talksplat.core.ffmpeg import ffmpeg_exe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from readme_command import readme_block  # noqa: E402

pytestmark = pytest.mark.e2e  # whole commands on real media (docs/architecture.md: tests)


@pytest.fixture(scope="module")
def user_dir(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "talking.mp4").symlink_to(shared_data / "grid" / "bbaf2n.mpg")
    for src, dst in ((shared_data / "audio" / "cmu_arctic_awb_a0007.wav", "speech.m4a"),
                     (shared_data / "grid" / "lbbc2a.mpg", "other.wav")):
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-vn", str(d / dst)], check=True)
    from talksplat.driving.audio import espeak_exe

    if espeak_exe() is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng): the README's --text command needs it")
    venv = ROOT / ".venv"
    if not (venv / "bin" / "talksplat").exists():
        pytest.skip(f"{venv}: no talksplat install there (run `bash scripts/setup.sh`): the README's commands use it")
    (d / ".venv").symlink_to(venv)
    return d


def run_block(name: str, cwd: Path) -> str:
    """Run the README block ``name`` in ``cwd`` (the module's user folder, with its own stage cache)."""
    block = readme_block(name)
    r = subprocess.run(["bash", "-e", "-c", block], cwd=cwd, capture_output=True, text=True, timeout=3000,
                       env={**os.environ, "COLUMNS": "120", "TALKSPLAT_STAGE_CACHE": str(cwd / ".stage-cache")})
    assert r.returncode == 0, f"README block '{name}' failed:\n{block}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _seconds(path: Path) -> float:
    from talksplat.driving.audio import decode_audio

    return len(decode_audio(path)) / 16_000


def test_readme_own_video_commands(user_dir):
    from talksplat.render.video import read_video

    out = run_block("own-video", user_dir)
    assert "wrote dataset" in out and "held-out PSNR" in out and "wrote talk.mp4" in out
    frames, fps = read_video(user_dir / "talk.mp4")
    speech = _seconds(user_dir / "speech.m4a")
    assert frames.shape == (round(speech * 25), 288, 360, 3) and fps == pytest.approx(25)  # the clip's own frame
    assert abs(_seconds(user_dir / "talk.mp4") - speech) <= 1 / 25
    m = json.loads((user_dir / "avatar" / "metrics.json").read_text())
    # held out (the last 8 of 75 frames): measured 22.6 dB full frame, 34.5 dB mouth (the same settings through run)
    assert m["heldout"]["psnr"] > 20.0 and m["heldout"]["mouth_psnr"] > 28.0 and "driver" in m


def test_readme_more_commands(user_dir):
    """After the own-video block: predictor only, text with idle pose and a colour, two renders."""
    from talksplat.render.video import read_video

    if not (user_dir / "avatar" / "avatar.safetensors").is_file():
        pytest.skip("needs the own-video block's avatar (test_readme_own_video_commands failed or was deselected)")
    run_block("more", user_dir)
    m = json.loads((user_dir / "avatar" / "metrics.json").read_text())
    assert "psnr" in m["heldout"] and m["driver"]["steps"] == 1000  # the avatar's figures are kept
    hello, _ = read_video(user_dir / "hello.mp4")
    assert hello.shape[1:] == (1024, 1024, 3) and len(hello) == round(_seconds(user_dir / "hello.wav") * 25)
    corner = hello[:, :16, :16].reshape(-1, 3).mean(0)
    assert abs(corner - [0x20, 0x30, 0x40]).max() < 12  # --background '#203040'
    turn, _ = read_video(user_dir / "fitted.mp4")
    assert turn.shape == (96, 512, 512, 3)
    assert (user_dir / "face.png").is_file()


def test_eval_sync_on_the_readme_avatar(user_dir, shared_data):
    """`talksplat eval sync` on the own-video block's avatar (GRID bbaf2n, --preset fast) driven by two other
    GRID speakers' clips: metrics.json's layout, the plots, and the predictor ahead of the static mouth."""
    from talksplat.cli import main

    if not (user_dir / "avatar" / "driver.safetensors").is_file():
        pytest.skip("needs the own-video block's avatar (test_readme_own_video_commands failed or was deselected)")
    clips = [shared_data / "grid" / f"{c}.mpg" for c in ("lbbc2a", "sbwe5n")]
    out = user_dir / "eval-sync"
    assert main(["eval", "sync", str(user_dir / "avatar"), *map(str, clips), "--out", str(out), "--plot",
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".talksplat", "lbbc2a.png", "metrics.json", "sbwe5n.png"]
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["videos"]) == {"lbbc2a", "sbwe5n"} and set(m["total"]) == {"predictor", "envelope", "mean"}
    keys = {"corr_lag0", "corr_best", "best_lag", "lmd", "lmd_centered", "amplitude_ratio", "closure_recall",
            "open_in_silence"}
    for v in m["videos"].values():
        assert v["frames"] == 75 and set(v["methods"]) == {"predictor", "envelope", "mean"}
        for f in v["methods"].values():
            assert keys <= set(f) and f["frames"] >= 60 and -3 <= f["best_lag"] <= 3
    total = m["total"]
    # measured (bbaf2n avatar, these two clips): predictor r = 0.54 / 0.83 at lag 0, the static mouth about 0
    # (-0.00 / -0.00; 0.15 / 0.09 at its best lag); amplitude ratio 0.56 / 0.53 vs 0.03
    assert total["predictor"]["corr_lag0"] > 0.35
    assert total["predictor"]["corr_lag0"] > total["mean"]["corr_lag0"] + 0.25
    assert total["predictor"]["corr_best"] > total["mean"]["corr_best"] + 0.2
    assert total["predictor"]["amplitude_ratio"] > 3 * total["mean"]["amplitude_ratio"]
    # --mouth-amplitude subject: the same predictor with the subject's own mouth amplitude moves more,
    # in time with the same speech (measured on the 10 GRID clips: amplitude ratio 0.44 -> 0.67, r 0.48 -> 0.46)
    loud = user_dir / "eval-sync-subject"
    assert main(["eval", "sync", str(user_dir / "avatar"), str(clips[1]), "--out", str(loud), "--mouth-amplitude",
                 "subject", "--quiet"]) == 0
    s = json.loads((loud / "metrics.json").read_text())
    assert s["settings"]["mouth_amplitude"] == "subject"
    before, after = m["videos"]["sbwe5n"]["methods"]["predictor"], s["videos"]["sbwe5n"]["methods"]["predictor"]
    assert after["amplitude_ratio"] > 1.2 * before["amplitude_ratio"]
    assert after["corr_lag0"] > before["corr_lag0"] - 0.1


def test_readme_run_commands(user_dir):
    """The run block; after the own-video block (same clip and sizes) its first command reuses that block's
    dataset/ and avatar/ (the avatar as the more block left it: its predictor retrained, the same options)."""
    from talksplat.render.video import read_video

    own_video = (user_dir / "avatar" / "avatar.safetensors").is_file()  # the own-video block ran before
    out = run_block("run", user_dir)
    work = user_dir / "work"
    log = (work / "run.log").read_text().splitlines()
    ran = [line.split()[2].rstrip(":") for line in log if ": running (" in line]
    reused = {line.split()[2].rstrip(":"): line.split(maxsplit=4)[4] for line in log if ": reused " in line}
    if own_video:
        # first command: prep, fit and the predictor reused from dataset/ and avatar/, only drive runs;
        # second (new audio) and third (text): only drive
        where = {"prep": user_dir / "dataset", "fit": user_dir / "avatar", "driver": user_dir / "avatar"}
        assert reused == {k: f"{v.resolve()} (same inputs and config)" for k, v in where.items()}, log
        assert ran == ["drive", "drive", "drive"], log
    else:
        # first command: every stage; second (new audio) and third (text): only drive
        assert ran == ["prep", "fit", "driver", "drive", "drive", "drive"] and not reused, log
    assert out.count("talksplat run: work") == 3
    m = json.loads((work / "metrics.json").read_text())
    assert m["fit"]["heldout"]["psnr"] > 20.0 and m["driver"]["steps"] == 1000
    frames, _ = read_video(work / "talk.mp4")  # the text's video, as long as its speech
    assert frames.shape[1:] == (288, 360, 3) and len(frames) == round(_seconds(work / "talk.wav") * 25)
