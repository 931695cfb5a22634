"""`talksplat fit`: synthetic round trip to a PSNR threshold, kill-and-resume, outputs, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from talksplat.avatar.io import load_avatar
from talksplat.benchmarks.synthetic_dataset import write_synthetic_dataset
from talksplat.fitting.config import FitConfig
from talksplat.fitting.ply import read_ply
from talksplat.fitting.strategy import BindingStrategyConfig
from talksplat.fitting.trainer import CHECKPOINT, Trainer, run_fit
from talksplat.rigs import load_rig

#: Held-out PSNR the fit must reach on the synthetic set (issue 4 asks for >= 30 dB).
SYNTHETIC_PSNR = 30.0


@pytest.fixture(scope="module")
def rig():
    return load_rig("open")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, rig):
    root = tmp_path_factory.mktemp("syn") / "ds"
    write_synthetic_dataset(root, rig, T=30, size=96)
    return root


def fit_cfg(dataset: Path, out: Path, refine_start: int = 150, refine_every: int = 100, **kw) -> FitConfig:
    base = dict(dataset=dataset, out=out, preset="fast", steps=600, sh_degree=1, sh_every=300, checkpoint_every=300,
                quiet=True, eval_frames=0,
                strategy=BindingStrategyConfig(refine_start_iter=refine_start, refine_every=refine_every,
                                               reset_every=100_000))
    base.update(kw)
    return FitConfig(**base)


def test_synthetic_round_trip_reaches_30db(synthetic, tmp_path, rig):
    t0 = time.perf_counter()
    m = run_fit(fit_cfg(synthetic, tmp_path / "fit"))
    held = m["heldout"]
    print(f"synthetic fit: {time.perf_counter() - t0:.0f} s, {m['steps_per_second']:.1f} steps/s, "
          f"{m['num_gaussians']} Gaussians, held-out PSNR {held['psnr']:.2f} dB, SSIM {held['ssim']:.4f}, "
          f"mouth PSNR {held['mouth_psnr']:.2f} dB")
    assert held["psnr"] >= SYNTHETIC_PSNR
    assert held["images"] == 12 and held["mouth_psnr"] > 25
    out = tmp_path / "fit"
    # Outputs: the avatar loads on its rig, the PLY carries the 3DGS attributes and the binding.
    av = load_avatar(out / "avatar.safetensors", rig_checksum=rig.checksum)
    assert av.num_gaussians == m["num_gaussians"]
    ply = read_ply(out / "avatar.ply")
    assert {"x", "f_dc_0", "f_rest_0", "opacity", "scale_0", "rot_0", "binding"} <= set(ply)
    assert np.array_equal(ply["binding"], av.binding.numpy())
    # posed on the subject's neutral head (tracked identity, no expression or pose)
    tuned = np.load(out / "tuned_params.npz")
    with torch.no_grad():
        neutral = rig.shaped_vertices(torch.as_tensor(tuned["shape"], dtype=torch.float32)[None],
                                      torch.zeros(1, rig.num_expression))
        means, _, _ = av.posed_geometry(neutral, rig.faces)
    assert np.allclose(np.stack([ply["x"], ply["y"], ply["z"]], -1), means[0].numpy(), atol=1e-5)
    tuned = np.load(out / "tuned_params.npz")
    assert tuned["expression"].shape == tuned["original_expression"].shape == (30, rig.num_expression)
    # the held-out segment: the last 6 of the 30 time steps (a fifth of the clip)
    assert sorted(p.name for p in (out / "heldout").iterdir())[:1] == ["00024_cam0.png"]
    assert json.loads((out / "metrics.json").read_text())["heldout"]["psnr"] == held["psnr"]
    assert oct((out / "avatar.safetensors").stat().st_mode & 0o777) == "0o644"


def test_kill_and_resume(synthetic, tmp_path):
    """A fit killed after a checkpoint resumes at the saved step and ends like an uninterrupted run."""
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "talksplat.cli", "fit", str(synthetic), "--out", str(out), "--preset", "fast",
            "--steps", "240", "--checkpoint-every", "60", "--strategy.refine-start-iter", "50",
            "--strategy.refine-every", "50",
            "--sh-degree", "1", "--sh-every", "100", "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / CHECKPOINT
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()  # it really died before the end
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        saved_step = json.loads(f.metadata()["talksplat"])["step"]
    assert 0 < saved_step < 240
    cfg = fit_cfg(synthetic, out, steps=240, checkpoint_every=60, refine_start=50, refine_every=50, sh_every=100,
                  resume=True)
    resumed = Trainer(cfg)
    assert resumed.step == saved_step
    # The state restored is the state saved: parameters, binding, Adam moments and steps.
    from safetensors.torch import load_file

    saved = load_file(str(ckpt))
    for k in ("local_means", "sh_dc", "opacity_logits", "sh_dc_blend", "binding"):
        assert torch.equal(getattr(resumed.avatar, k).detach().cpu(), saved[f"avatar.{k}"])
    st = resumed.optimizers["local_means"].state[resumed.avatar.local_means]
    assert torch.equal(st["exp_avg"].cpu(), saved["opt.local_means.exp_avg"]) and float(st["step"]) == saved_step
    resumed.train()
    assert resumed.step == 240
    # It ends like an uninterrupted run (CPU float sums are not bit-reproducible across thread
    # schedules, so compare outcomes, not bits).
    straight = Trainer(fit_cfg(synthetic, tmp_path / "straight", steps=240, checkpoint_every=60, refine_start=50,
                               refine_every=50, sh_every=100))
    straight.train()
    assert abs(resumed.avatar.num_gaussians / straight.avatar.num_gaussians - 1) < 0.05
    a, b = resumed.evaluate()["psnr"], straight.evaluate()["psnr"]
    assert abs(a - b) < 0.5, (a, b)
    run_fit(cfg)  # resuming a finished fit just writes the outputs
    assert json.loads((out / "metrics.json").read_text())["step"] == 240


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talksplat.cli", *args], capture_output=True, text=True)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("talksplat: error")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_bad_input(synthetic, tmp_path, rig):
    # Missing dataset.
    assert "no such dataset" in one_error_line(run_cli("fit", str(tmp_path / "none"), "--out", str(tmp_path / "o")))
    # Incomplete dataset.
    broken = tmp_path / "broken"
    shutil.copytree(synthetic, broken)
    (broken / "rig_params.npz").unlink()
    assert "incomplete dataset" in one_error_line(run_cli("fit", str(broken), "--out", str(tmp_path / "o")))
    # Another format version.
    newer = tmp_path / "newer"
    shutil.copytree(synthetic, newer)
    meta = json.loads((newer / "meta.json").read_text())
    (newer / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    assert "newer than this" in one_error_line(run_cli("fit", str(newer), "--out", str(tmp_path / "o")))
    # A rig whose checksum differs from the dataset's.
    other = tmp_path / "otherrig"
    shutil.copytree(synthetic, other)
    (other / "meta.json").write_text(json.dumps({**meta, "rig": {**meta["rig"], "checksum": "0" * 64}}))
    assert "checksum" in one_error_line(run_cli("fit", str(other), "--out", str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
    # --resume on a different dataset: refused, the existing fit untouched.
    out = tmp_path / "fit"
    Trainer(fit_cfg(synthetic, out, steps=5, checkpoint_every=5)).train()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    different = tmp_path / "different"
    shutil.copytree(synthetic, different)
    with np.load(different / "rig_params.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["expression"] = arrays["expression"] + 0.01
    np.savez(different / "rig_params.npz", **arrays)
    line = one_error_line(run_cli("fit", str(different), "--out", str(out), "--resume"))
    assert "another dataset" in line
    # An existing fit without --resume / --overwrite.
    assert "already holds a fit" in one_error_line(run_cli("fit", str(synthetic), "--out", str(out)))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert os.path.exists(out / CHECKPOINT)


def test_tensorboard_flag(synthetic, tmp_path):
    import importlib.util

    args = ["fit", str(synthetic), "--out", str(tmp_path / "tb"), "--steps", "2", "--tensorboard", "--quiet"]
    proc = run_cli(*args)
    if importlib.util.find_spec("tensorboard") is None:
        assert "needs the tensorboard package" in one_error_line(proc)
    else:
        assert proc.returncode == 0 and any((tmp_path / "tb" / "tb").iterdir())


# A fit of a real GRID clip, held out, is checked by tests/test_readme.py (the README's own-video block:
# --preset fast on bbaf2n, full-frame and mouth PSNR) and tests/test_run.py.
