"""The CUDA backend's code path on the CPU: ``TALKSPLAT_GSPLAT_REFERENCE=1`` runs our gsplat wrapper
(render/cuda.py) through gsplat 1.5.3's own ``rasterization`` with torch kernels
(render/gsplat_reference.py).  Parity with the CPU backend, densification parity, every command through
the mode, device hygiene of the bench, and the CUDA RNG state in checkpoints."""

from __future__ import annotations

import copy
import importlib
import json
import math

import numpy as np
import pytest
import torch

from talksplat.render import rasterization, resolve_backend
from talksplat.render import gsplat_reference as ref
raster_module = importlib.import_module("talksplat.render.rasterization")  # the module (the package exports the function)

W = H = 48


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny renders (conftest.py)


@pytest.fixture
def reference(monkeypatch):
    monkeypatch.setenv(ref.REFERENCE_ENV, "1")


@pytest.fixture
def calls(monkeypatch):
    """Counts rasterizations per backend: {"reference": n, "cpu": n}."""
    counts = {"reference": 0, "cpu": 0}
    real_ref, real_cpu = ref.reference_rasterization, raster_module.rasterization_cpu

    def spy_ref():
        counts["reference"] += 1
        return real_ref()

    def spy_cpu(*a, **k):
        counts["cpu"] += 1
        return real_cpu(*a, **k)

    monkeypatch.setattr(ref, "reference_rasterization", spy_ref)
    monkeypatch.setattr(raster_module, "rasterization_cpu", spy_cpu)
    return counts


def _scene(C: int = 3, N: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g) * 0.3
    quats = torch.randn(N, 4, generator=g)
    scales = torch.rand(N, 3, generator=g) * 0.05 + 0.01
    opacities = torch.rand(N, generator=g) * 0.9 + 0.05
    sh = torch.randn(N, 4, 3, generator=g) * 0.3
    vms = []
    for c in range(C):
        a = 0.3 * (c - 1)
        vm = torch.eye(4)
        vm[:3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        vm[2, 3] = 2.0
        vms.append(vm)
    K = torch.tensor([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]]).expand(C, 3, 3).contiguous()
    bg = torch.rand(C, 3, generator=g)
    return means, quats, scales, opacities, sh, torch.stack(vms), K, bg


def _render(backend, sh_degree=1, absgrad=True):
    means, quats, scales, opacities, sh, vm, K, bg = _scene()
    params = [t.clone().requires_grad_(True) for t in (means, sh, opacities)]
    colors = params[1] if sh_degree is not None else torch.sigmoid(params[1][:, 0])
    c, a, meta = rasterization(params[0], quats, scales, params[2], colors, vm, K, W, H, sh_degree=sh_degree,
                               backgrounds=bg, backend=backend, absgrad=absgrad)
    w = torch.linspace(0.2, 1.0, 3)
    ((c * w).sum() + meta["expected_depth"].sum() * 0.01).backward()
    return c.detach(), a.detach(), meta, [p.grad for p in params]


@pytest.mark.parametrize("sh_degree", [None, 1])
def test_reference_cuda_backend_matches_cpu(reference, calls, sh_degree):
    c0, a0, m0, g0 = _render("cpu", sh_degree)
    assert calls == {"reference": 0, "cpu": 1}
    c1, a1, m1, g1 = _render("cuda", sh_degree)
    assert calls == {"reference": 1, "cpu": 1}
    assert m1["backend"] == "cuda" and m1["gsplat_reference"] is True
    # images, alphas and depth within 1e-3 (measured: ~2e-6)
    assert (c0 - c1).abs().max() < 1e-3
    assert (a0 - a1).abs().max() < 1e-3
    assert (m0["expected_depth"] - m1["expected_depth"]).abs().max() < 1e-3
    assert c1.shape == (3, H, W, 3) and a1.shape == (3, H, W, 1)
    # the meta our code consumes, as gsplat 1.5.3 returns it
    C, N = 3, m0["means2d"].shape[1]
    assert m1["radii"].shape == (C, N, 2) and m1["radii"].dtype == torch.int32
    assert torch.equal(m0["radii"], m1["radii"])
    assert (m1["radii"] > 0).any() and (m1["radii"] == 0).any()
    assert m1["means2d"].shape == (C, N, 2) and m1["gaussian_ids"] is None
    assert (m1["width"], m1["height"], m1["n_cameras"]) == (W, H, C)
    vis = (m1["radii"] > 0).all(-1)
    assert torch.allclose(m0["means2d"][vis], m1["means2d"][vis], atol=1e-3)
    # gradients: relative to each tensor's largest entry, 1e-3 (measured: ~3e-6)
    def rel(x, y):
        return float((x - y).abs().max() / y.abs().max().clamp_min(1e-12))

    for x, y in zip(g0, g1):
        assert rel(x, y) < 1e-3
    assert rel(m0["means2d"].grad, m1["means2d"].grad) < 1e-3
    assert rel(m0["means2d"].absgrad, m1["means2d"].absgrad) < 1e-3


def test_reference_mode_routing(monkeypatch):
    import gsplat.rendering

    dev = torch.device("cpu")
    monkeypatch.delenv(ref.REFERENCE_ENV, raising=False)
    assert resolve_backend("auto", dev) == "cpu"
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_backend("cuda", dev)
    from talksplat.render.cuda import rasterization_cuda

    with pytest.raises(RuntimeError, match="TALKSPLAT_GSPLAT_REFERENCE"):
        rasterization_cuda(*_scene()[:3], torch.rand(300), torch.rand(300, 3), *_scene()[5:7], W, H)
    monkeypatch.setenv(ref.REFERENCE_ENV, "1")
    assert resolve_backend("auto", dev) == "cuda" and resolve_backend("cuda", dev) == "cuda"
    assert resolve_backend("cpu", dev) == "cpu"
    # gsplat's own code object, its module untouched
    fn = ref.reference_rasterization()
    assert fn.__code__ is gsplat.rendering.rasterization.__code__
    assert fn.__defaults__ == gsplat.rendering.rasterization.__defaults__
    assert gsplat.rendering.isect_tiles is not ref.isect_tiles


def test_isect_tiles_matches_gsplats_loop():
    from gsplat.cuda._torch_impl import _isect_tiles

    means, quats, scales, opacities, sh, vm, K, bg = _scene(C=2, N=60)
    radii, means2d, depths, _, _ = ref.fully_fused_projection(means, None, quats, scales, vm, K, W, H,
                                                              opacities=opacities)
    ours = ref.isect_tiles(means2d, radii, depths, 16, 3, 3)
    theirs = _isect_tiles(means2d, radii, depths, 16, 3, 3)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from talksplat.benchmarks.drive import speech_like
    from talksplat.benchmarks.synthetic_dataset import write_synthetic_dataset
    from talksplat.driving.audio import write_wav
    from talksplat.rigs import load_rig

    root = tmp_path_factory.mktemp("ref")
    ds = root / "dataset"
    write_synthetic_dataset(ds, load_rig("open"), T=8, size=32, cameras=(0.0,))
    write_wav(ds / "audio.wav", speech_like(8 / 25 + 0.2))
    meta = json.loads((ds / "meta.json").read_text())
    (ds / "meta.json").write_text(json.dumps({**meta, "audio": "audio.wav", "audio_sample_rate": 16000}))
    return ds


def _fit_cfg(dataset, out, steps=6, device="cpu"):
    from talksplat.fitting.config import FitConfig
    from talksplat.fitting.strategy import BindingStrategyConfig

    return FitConfig(dataset=dataset, out=out, preset="fast", steps=steps, device=device, background="white",
                     sh_degree=1, eval_frames=0, side_by_side=0, quiet=True, seed=0,
                     strategy=BindingStrategyConfig(refine_start_iter=1, refine_every=2, grow_grad2d=2e-4,
                                                    reset_every=1000, refine_stop_fraction=1.0))


def _densification_log(cfg):
    """Runs a fit; returns, per step, (Gaussians before, binding after) of every grow/prune pass."""
    from talksplat.fitting.trainer import Trainer

    tr = Trainer(cfg)
    log = []
    post = tr.strategy.step_post_backward

    def spy(avatar, optimizers, state, step, info):
        n = avatar.num_gaussians
        grads = info["means2d"].grad.detach().clone()
        post(avatar, optimizers, state, step, info)
        log.append((step, n, tr.avatar.binding.detach().clone(), grads, state["grad2d"].detach().clone()))

    tr.strategy.step_post_backward = spy
    tr.train(checkpoints=False)
    return log


def test_strategy_densifies_the_same_gaussians_on_both_backends(tiny_dataset, tmp_path, monkeypatch, calls):
    monkeypatch.delenv(ref.REFERENCE_ENV, raising=False)
    cpu = _densification_log(_fit_cfg(tiny_dataset, tmp_path / "cpu"))
    assert calls["reference"] == 0 and calls["cpu"] > 0
    monkeypatch.setenv(ref.REFERENCE_ENV, "1")
    n_cpu = calls["cpu"]
    gs = _densification_log(_fit_cfg(tiny_dataset, tmp_path / "ref"))
    assert calls["reference"] > 0 and calls["cpu"] == n_cpu
    assert [e[0] for e in cpu] == [e[0] for e in gs]
    changed = 0
    for (step, n0, b0, gr0, acc0), (_, n1, b1, gr1, acc1) in zip(cpu, gs):
        # the 2D-mean gradients the strategy reads agree closely (float32 summation order differs)
        assert float((gr0 - gr1).abs().max()) <= 1e-3 * float(gr1.abs().max()) + 1e-9, step
        # same Gaussians cloned / split / pruned at the same step: identical count and face binding
        assert n0 == n1 and torch.equal(b0, b1), f"step {step}: {n0}->{b0.numel()} vs {n1}->{b1.numel()}"
        changed += b0.numel() != n0
    assert changed >= 1, "the seeded run should densify at least once"


def test_fit_drive_view_resume_through_reference(tiny_dataset, tmp_path, reference, calls):
    from talksplat.cli import main

    fit = tmp_path / "fit"
    assert main(["fit", str(tiny_dataset), "--out", str(fit), "--preset", "fast", "--steps", "3", "--quiet",
                 "--driver.steps", "3", "--eval-frames", "1", "--side-by-side", "0", "--checkpoint-every", "2",
                 "--sh-degree", "1"]) == 0
    assert calls["reference"] >= 3
    n = calls["reference"]
    # resume from the step-3 checkpoint to step 5
    assert main(["fit", str(tiny_dataset), "--out", str(fit), "--preset", "fast", "--steps", "5", "--resume",
                 "--quiet", "--driver.steps", "3", "--eval-frames", "1", "--side-by-side", "0",
                 "--sh-degree", "1"]) == 0
    assert calls["reference"] >= n + 2
    n = calls["reference"]
    out = tmp_path / "talk.mp4"
    assert main(["drive", str(fit), "--audio", str(tiny_dataset / "audio.wav"), "--out", str(out),
                 "--resolution", "32", "--quiet", "--encode-jobs", "2"]) == 0  # as beside a GPU: segments
    from talksplat.render.video import read_video

    assert len(read_video(out)[0]) == len(np.load(out.with_suffix(".npz"))["expression"])
    assert calls["reference"] > n
    # the viewer's render callback
    from talksplat.viewer.config import ViewConfig
    from talksplat.viewer.inputs import open_avatar, view_rig
    from talksplat.viewer.renderer import AvatarRenderer, render_size, viser_camera

    n = calls["reference"]
    folder = open_avatar(fit)
    rig = view_rig(ViewConfig(avatar=fit), folder.avatar_file)
    renderer = AvatarRenderer(folder.load_avatar(rig), rig, torch.device("cpu"))
    assert "reference" in renderer.backend
    cam = viser_camera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -0.6), math.radians(30), 1.0, 32)
    frame = renderer.render({k: v[0].numpy() for k, v in rig.zero_params(1).__dict__.items()}, cam)
    w, h = render_size(1.0, 32)
    assert frame.image.shape == (h, w, 3) and calls["reference"] == n + 1
    assert calls["cpu"] == 0


def test_bench_render_through_reference(reference, calls, capsys):
    from talksplat.cli import main

    assert main(["bench", "render", "--gaussians", "300", "--resolution", "32", "--backend", "cpu", "cuda",
                 "--batch", "1", "3", "--iters", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out and "cuda" in out and "cpu" in out
    # cpu: batch 1 only; cuda: batch 1, then the 3 frames in one batched gsplat call
    assert calls["reference"] == 2 and calls["cpu"] == 1


def test_bench_render_leaves_the_callers_rig_on_the_cpu(monkeypatch, sphere_rig):
    """The bench bug: `base_rig.to(device)` moved the shared rig in place.  Run the bench on the `meta`
    device with a device guard in place of the rasterizer: the caller's rig must stay on the CPU and
    everything handed to the renderer must be on the bench's device."""
    import talksplat.avatar.render as avatar_render
    import talksplat.benchmarks.render as bench
    import talksplat.rigs as rigs
    from talksplat.benchmarks.config import BenchRenderConfig

    rig = copy.deepcopy(sphere_rig)
    meta = torch.device("meta")
    seen = []

    def guard(avatar, r, params, viewmats, Ks, width, height, **kw):
        tensors = [*avatar.state_dict().values(), *r.buffers(), *params.__dict__.values(), viewmats, Ks]
        assert {t.device.type for t in tensors} == {"meta"}
        seen.append(kw.get("backend"))
        return torch.zeros(1, 1, height, width, 3, device=meta), None, None

    monkeypatch.setattr(rigs, "load_rig", lambda spec: rig)
    monkeypatch.setattr(bench, "bench_device", lambda backend: meta)
    monkeypatch.setattr(avatar_render, "render_avatar", guard)
    rows = bench.bench_render(BenchRenderConfig(gaussians=(50,), resolution=(32,), backend=("cpu",), iters=1,
                                                warmup=0))
    assert len(rows) == 1 and seen == ["cpu"]
    assert {t.device.type for t in rig.buffers()} == {"cpu"}


def test_checkpoint_rng_state_with_and_without_cuda(monkeypatch):
    from talksplat.fitting import trainer

    # CPU: only the CPU generator, nothing extra
    t = trainer.rng_state_tensors()
    assert set(t) == {"rng.torch"}
    before = torch.rand(3)
    trainer.restore_rng_state(t)
    assert torch.equal(torch.rand(3), before)
    # a GPU machine (faked): the CUDA generators' states are saved and restored
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, dtype=torch.uint8) + 1]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: restored.append([x.clone() for x in s]))
    t = trainer.rng_state_tensors()
    assert set(t) == {"rng.torch", "rng.cuda"} and t["rng.cuda"].shape == (2, 16)
    # through a safetensors file, as the checkpoint stores it
    from safetensors.torch import load, save

    t = load(save({k: v.contiguous() for k, v in t.items()}))
    trainer.restore_rng_state(t)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], states))
    # a CPU checkpoint resumed on a GPU: the CUDA generators are left alone
    trainer.restore_rng_state({"rng.torch": torch.get_rng_state()})
    assert len(restored) == 1
    # fewer GPUs now than when saved: as many as both have
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    trainer.restore_rng_state(t)
    assert len(restored[1]) == 1
    np.testing.assert_array_equal(restored[1][0].numpy(), states[0].numpy())


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_batched_rasterization_matches_frame_by_frame(reference, backend):
    """gsplat's batch dimension: B frames (each its own Gaussians and cameras) in one call equal B single calls,
    on the CPU rasterizer and on the CUDA code path (gsplat's own batched rasterization, torch kernels)."""
    B = 3
    scenes = [_scene(C=2, N=200, seed=s) for s in range(B)]
    means, quats, scales, opac, sh, vm, K, bg = (torch.stack(t) for t in zip(*scenes))
    c, a, meta = rasterization(means, quats, scales, opac, sh, vm, K, W, H, sh_degree=1, backgrounds=bg,
                               backend=backend)
    assert c.shape == (B, 2, H, W, 3) and a.shape == (B, 2, H, W, 1) and meta["radii"].shape == (B, 2, 200, 2)
    assert meta["n_cameras"] == 2 and meta["expected_depth"].shape == (B, 2, H, W, 1)
    for b, s in enumerate(scenes):
        c1, a1, m1 = rasterization(*s[:4], s[4], s[5], s[6], W, H, sh_degree=1, backgrounds=s[7], backend=backend)
        torch.testing.assert_close(c[b], c1, atol=1e-6, rtol=0)
        torch.testing.assert_close(a[b], a1, atol=1e-6, rtol=0)
        assert torch.equal(meta["radii"][b], m1["radii"])
    with pytest.raises(ValueError, match="viewmats must be \\[B, C, 4, 4\\]"):
        rasterization(means, quats, scales, opac, sh, vm[0], K[0], W, H, sh_degree=1, backend=backend)
    with pytest.raises(ValueError, match="leading B"):
        rasterization(means, quats, scales, opac[:2], sh, vm, K, W, H, sh_degree=1, backend=backend)
    with pytest.raises(ValueError, match="absgrad needs single frames"):
        rasterization(means, quats, scales, opac, sh, vm, K, W, H, sh_degree=1, absgrad=True, backend=backend)
