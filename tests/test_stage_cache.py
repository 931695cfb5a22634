"""The stage cache (talksplat.stage_cache): `talksplat run` reuses what `talksplat prep` and `talksplat fit`
computed with the same inputs and options, never a result changed since, never with --force, and never
changes the folders it reuses; the fit files it copies are rewritten to what fitting in place writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talksplat.cli import main
from talksplat.core.files import file_digest


def _tree(folder: Path) -> dict[str, tuple]:
    """Every file under ``folder``: relative path -> (sha256, mode, mtime in ns)."""
    return {p.relative_to(folder).as_posix(): (file_digest(p), p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _statuses(work: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in json.loads((work / "metrics.json").read_text())["stages"].items()}


def _header(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["talksplat"])


def test_run_reuses_what_prep_and_fit_made(shared_data, tmp_path, monkeypatch):
    from talksplat.driving.audio import write_wav
    from talksplat.benchmarks.drive import speech_like

    monkeypatch.setenv("TALKSPLAT_STAGE_CACHE", str(tmp_path / "index"))
    video = shared_data / "grid" / "bbaf2n.mpg"
    audio = write_wav(tmp_path / "speech.wav", speech_like(1.0))
    dataset, avatar = tmp_path / "dataset", tmp_path / "avatar"
    size = ["--resolution", "64", "--max-frames", "25"]
    steps = ["--preset", "fast", "--steps", "2", "--driver.steps", "2"]
    assert main(["prep", str(video), "--out", str(dataset), *size, "--quiet"]) == 0
    assert main(["fit", str(dataset), "--out", str(avatar), *steps, "--quiet"]) == 0
    sources = {"dataset": _tree(dataset), "avatar": _tree(avatar)}
    assert len(list((tmp_path / "index").glob("*.json"))) == 3  # prep, fit, driver
    run = ["run", str(video), "--audio", str(audio), *size, *steps, "--drive-resolution", "32", "--quiet"]

    # the same video and options: prep, fit and the predictor are adopted, only drive runs
    work = tmp_path / "work"
    assert main([*run, "--out", str(work)]) == 0
    assert _statuses(work) == {"prep": "reused", "fit": "reused", "driver": "reused", "drive": "ran"}
    log = (work / "run.log").read_text()
    for stage, source in (("prep", dataset), ("fit", avatar), ("driver", avatar)):
        assert f"{stage}: reused {source.resolve()} (same inputs and config)" in log
    copied = _tree(work / "dataset")
    assert {k: v[0] for k, v in copied.items()} == {k: v[0] for k, v in sources["dataset"].items()}
    for name in ("avatar.ply", "tuned_params.npz", "metrics.json"):
        assert file_digest(work / "avatar" / name) == file_digest(avatar / name)
    # what says where it was made now names the work directory (as a fit there writes it)
    assert _header(work / "avatar" / "avatar.safetensors")["extra"]["dataset"] == str((work / "dataset").resolve())
    assert _header(work / "avatar" / "checkpoint.safetensors")["config"]["out"] == str(work / "avatar")
    assert _header(work / "avatar" / "driver.safetensors")["avatar_sha256"] == file_digest(
        work / "avatar" / "avatar.safetensors")
    m = json.loads((work / "metrics.json").read_text())
    assert m["fit"]["heldout"] == json.loads((avatar / "metrics.json").read_text())["heldout"]
    assert m["driver"]["steps"] == 2 and m["prep"]["timesteps"] == 25

    # a source changed after it was recorded (same size, other bytes) is not reused: fit runs
    ply = (avatar / "avatar.ply").read_bytes()
    (avatar / "avatar.ply").unlink()  # a new file: work/avatar's hard link keeps the recorded one
    (avatar / "avatar.ply").write_bytes(ply[:-1] + bytes([ply[-1] ^ 1]))
    edited = _tree(avatar)["avatar.ply"]
    work2 = tmp_path / "work2"
    assert main([*run, "--out", str(work2)]) == 0
    status = _statuses(work2)
    assert status["prep"] == "reused" and status["fit"] == "ran" and status["drive"] == "ran"
    assert "fit: not reusing the stage cache's result (changed since it was recorded: avatar.ply)" in (
        work2 / "run.log").read_text()

    # --force: the stage runs though this work directory and the cache have it
    assert main([*run, "--out", str(work), "--force", "prep"]) == 0
    assert _statuses(work)["prep"] == "ran"
    assert "prep: running (forced (--force))" in (work / "run.log").read_text()

    # the folders reused were only read (the file edited above aside)
    assert _tree(dataset) == sources["dataset"]
    assert _tree(avatar) == {**sources["avatar"], "avatar.ply": edited}


def test_copied_fit_files_are_what_fitting_there_writes(small_inputs, tmp_path):
    """Pointing a copied avatar, checkpoint and predictor at their new place gives the bytes the writers give
    there; a hard link to the old file keeps it; the digest apart from the place is unchanged."""
    import os
    import shutil

    from talksplat.avatar.io import load_avatar, save_avatar, set_extra
    from talksplat.core.files import safetensors_digest
    from talksplat.driving.predictor import load_predictor, set_avatar_digest
    from talksplat.fitting import fit_folder
    from talksplat.fitting.trainer import checkpoint_origin, set_checkpoint_origin

    fit = small_inputs.fit
    avatar = load_avatar(fit / "avatar.safetensors")
    here, there, link = (tmp_path / d / "avatar.safetensors" for d in ("here", "there", "link"))
    save_avatar(avatar, here, {"dataset": "/a", "steps": 3})
    save_avatar(avatar, there, {"dataset": "/b", "steps": 3})
    link.parent.mkdir()
    os.link(here, link)
    set_extra(here, {"dataset": "/b", "steps": 3})
    assert here.read_bytes() == there.read_bytes()
    assert _header(link)["extra"]["dataset"] == "/a"  # the hard link kept the old file
    assert fit_folder.portable_digest(link) == fit_folder.portable_digest(here)
    assert safetensors_digest(link) != safetensors_digest(here)

    drv = load_predictor(fit / "driver.safetensors")
    drv.avatar_sha256 = None
    drv.save(tmp_path / "driver.safetensors")
    drv.avatar_sha256 = file_digest(there)
    drv.save(tmp_path / "bound.safetensors")
    set_avatar_digest(tmp_path / "driver.safetensors", there)
    assert (tmp_path / "driver.safetensors").read_bytes() == (tmp_path / "bound.safetensors").read_bytes()
    load_predictor(tmp_path / "driver.safetensors", avatar=there)  # drive's check: they belong together

    # the checkpoint: rewritten for another dataset and options, then back: the original bytes
    import dataclasses

    from talksplat.fit_command import FitCommandConfig

    ckpt = shutil.copyfile(fit / "checkpoint.safetensors", tmp_path / "checkpoint.safetensors")
    original = _header(ckpt)
    same = dataclasses.replace(FitCommandConfig(dataset=fit), **original["config"])  # options equal as JSON
    assert checkpoint_origin(same) == {k: original[k] for k in ("dataset", "config")}
    set_checkpoint_origin(ckpt, FitCommandConfig(dataset=tmp_path / "elsewhere", out=tmp_path / "fit"))
    assert _header(ckpt)["dataset"] == str((tmp_path / "elsewhere").resolve())
    assert fit_folder.portable_digest(ckpt) == fit_folder.portable_digest(fit / "checkpoint.safetensors")
    set_checkpoint_origin(ckpt, same)
    assert Path(ckpt).read_bytes() == (fit / "checkpoint.safetensors").read_bytes()


@pytest.mark.parametrize("gone", ["folder", "file"])
def test_an_entry_whose_folder_changed_is_dropped(tmp_path, gone):
    """A recorded folder deleted, or a file of it removed, since: not adopted, and its entry is dropped."""
    from talksplat.stage_cache import Product, StageCache
    from talksplat.stages import Stage

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / "b.txt").write_text("b")
    cache = StageCache(tmp_path / "index")

    def stage(folder):
        return Stage("s", {}, {"x": 1}, [folder / "a.txt"], lambda: {}, product=Product(folder, ("*.txt",)))

    key, parts = cache.key(stage(src), {})
    cache.record(stage(src), key, parts, {"n": 1}, 1.0)
    entry, why = cache.adopt(stage(dst), key)
    assert why is None and entry["summary"] == {"n": 1} and (dst / "b.txt").read_text() == "b"
    if gone == "folder":
        import shutil

        shutil.rmtree(src)
    else:
        (src / "b.txt").unlink()
    entry, why = cache.adopt(stage(tmp_path / "dst2"), key)
    assert entry is None and why == ("gone" if gone == "folder" else "changed since it was recorded: b.txt")
    assert not cache.entry_path(key).exists() and not (tmp_path / "dst2" / "a.txt").exists()
