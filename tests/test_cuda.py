"""The CUDA path with gsplat's real kernels: what tests/test_gsplat_reference.py runs through gsplat's torch
reference on the CPU, here on a GPU.  Every test skips without one; `scripts/gpu_check.sh` runs `pytest -m cuda`
on a GPU machine.  The same tests' CPU twins run on every CI run (test_gsplat_reference.py, test_rasterizer.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from test_gsplat_reference import _densification_log, _fit_cfg, tiny_dataset  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (gsplat's kernels)")]


def _avatar_scene(n: int = 3000, size: int = 96, frames: int = 4):
    from talksplat.benchmarks.render import avatar_with_n_gaussians
    from talksplat.render.camera import framing_camera
    from talksplat.rigs import load_rig

    rig = load_rig("open")
    avatar = avatar_with_n_gaussians(rig, n)
    params = rig.zero_params(frames)
    params.expression[:, rig.expression_group("jaw_open")[0]] = torch.linspace(0, 1, frames)
    params.global_rot[:, 1] = torch.linspace(-0.3, 0.3, frames)
    with torch.no_grad():
        vm, K = framing_camera(rig(rig.zero_params(1)).vertices[0], size, size, yaw_deg=20, pitch_deg=5)
    return rig, avatar, params, vm[None], K[None]


def test_batched_cuda_render_matches_the_cpu_frame_by_frame():
    """B posed frames in one gsplat launch (drive, bench) against the CPU rasterizer one frame at a time."""
    from talksplat.avatar.render import render_avatar

    rig, avatar, params, vm, K = _avatar_scene()
    bg = torch.tensor([[0.2, 0.3, 0.4]])
    with torch.no_grad():
        cpu, cpu_a, metas = render_avatar(avatar, rig, params, vm, K, 96, 96, backgrounds=bg, backend="cpu")
        dev = torch.device("cuda")
        gpu, gpu_a, gmetas = render_avatar(copy.deepcopy(avatar).to(dev), copy.deepcopy(rig).to(dev), params.to(dev),
                                           vm.to(dev), K.to(dev), 96, 96, backgrounds=bg.to(dev))
    assert len(metas) == 4 and len(gmetas) == 1 and gmetas[0]["radii"].shape == (4, 1, avatar.num_gaussians, 2)
    assert gpu.shape == cpu.shape == (4, 1, 96, 96, 3)
    assert float((gpu.cpu() - cpu).abs().max()) < 1e-3
    assert float((gpu_a.cpu() - cpu_a).abs().max()) < 1e-3
    assert float((cpu[0] - cpu[-1]).abs().max()) > 0.05  # the frames differ: the batch is not one frame repeated


def test_strategy_densifies_the_same_gaussians_on_cpu_and_cuda(tiny_dataset, tmp_path):
    cpu = _densification_log(_fit_cfg(tiny_dataset, tmp_path / "cpu"))
    gpu = _densification_log(_fit_cfg(tiny_dataset, tmp_path / "cuda", device="cuda"))
    assert [e[0] for e in cpu] == [e[0] for e in gpu]
    changed = 0
    for (step, n0, b0, gr0, _), (_, n1, b1, gr1, _) in zip(cpu, gpu):
        gr1 = gr1.cpu()
        assert float((gr0 - gr1).abs().max()) <= 1e-3 * float(gr0.abs().max()) + 1e-9, step
        assert n0 == n1 and torch.equal(b0, b1.cpu()), f"step {step}: {n0}->{b0.numel()} vs {n1}->{b1.numel()}"
        changed += b0.numel() != n0
    assert changed >= 1, "the seeded run should densify at least once"


def test_fit_resume_drive_view_and_bench_on_cuda(tiny_dataset, tmp_path, capsys):
    from safetensors import safe_open

    from talksplat.cli import main

    fit = tmp_path / "fit"
    common = ["--preset", "fast", "--quiet", "--driver.steps", "3", "--eval-frames", "1", "--side-by-side", "0",
              "--sh-degree", "1", "--device", "cuda"]
    assert main(["fit", str(tiny_dataset), "--out", str(fit), "--steps", "3", "--checkpoint-every", "2", *common]) == 0
    with safe_open(str(fit / "checkpoint.safetensors"), "pt") as f:
        assert "rng.cuda" in f.keys()  # a resumed GPU fit restores the CUDA generators too
    assert main(["fit", str(tiny_dataset), "--out", str(fit), "--steps", "5", "--resume", *common]) == 0
    import json

    assert json.loads((fit / "metrics.json").read_text())["driver"]["device"] == "cuda"  # the predictor's network
    out = tmp_path / "talk.mp4"
    assert main(["drive", str(fit), "--audio", str(tiny_dataset / "audio.wav"), "--out", str(out),
                 "--resolution", "64", "--device", "cuda", "--batch", "4", "--quiet"]) == 0
    assert out.stat().st_size > 0
    from talksplat.viewer.config import ViewConfig
    from talksplat.viewer.inputs import open_avatar, view_rig
    from talksplat.viewer.renderer import AvatarRenderer, render_size, viser_camera

    folder = open_avatar(fit)
    rig = view_rig(ViewConfig(avatar=fit), folder.avatar_file)
    renderer = AvatarRenderer(folder.load_avatar(rig), rig, torch.device("cuda"))
    assert renderer.backend == "CUDA (gsplat)"
    assert {t.device.type for t in rig.buffers()} == {"cpu"}  # the caller's rig was not moved
    cam = viser_camera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -0.6), math.radians(30), 1.0, 64)
    frame = renderer.render({k: v[0].numpy() for k, v in rig.zero_params(1).__dict__.items()}, cam)
    assert frame.image.shape == (*reversed(render_size(1.0, 64)), 3) and frame.image.max() > 0
    capsys.readouterr()
    assert main(["bench", "render", "--gaussians", "2000", "--resolution", "64", "--backend", "cpu", "cuda",
                 "--batch", "1", "4", "--iters", "2", "--warmup", "1"]) == 0
    text = capsys.readouterr().out
    assert "skipped" not in text and text.count("cuda") >= 2 and "cpu" in text


def test_download_overlaps_batches_and_keeps_every_array():
    """render.device.download: pinned, non-blocking copies on a side stream; each yielded array keeps its own
    buffer (a consumer such as the encoder queue holds several), in order, equal to a plain ``.cpu()``."""
    from talksplat.render.device import download

    g = torch.Generator(device="cuda").manual_seed(0)
    batches = [torch.randint(0, 256, (4, 64, 96, 3), generator=g, device="cuda", dtype=torch.uint8) for _ in range(5)]
    want = [b.cpu().numpy() for b in batches]

    def produce():
        for b in batches:
            yield (b.float() * 1.0).to(torch.uint8)  # made on the current stream just before it is handed on

    got = list(download(produce()))
    assert len(got) == 5
    for a, b in zip(got, want):
        assert (a == b).all()
