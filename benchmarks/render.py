"""`talksplat bench render`: frames per second of the whole avatar path per backend.

Each timed frame poses the open-head rig with a new expression and jaw value, binds the Gaussians
to the posed triangles and rasterizes one camera, i.e. what `talksplat drive` does per frame.
Warm-up iterations are excluded.  Gaussian counts are met exactly by giving each face
ceil(N / F) Gaussians and keeping a fixed random subset of N.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from .config import BenchRenderConfig


def avatar_with_n_gaussians(rig, n: int, seed: int = 0):
    """An initialised avatar on `rig` with exactly `n` Gaussians."""
    from talksplat.avatar import GaussianAvatar, init_avatar

    per_face = max(1, math.ceil(n / rig.num_faces))
    full = init_avatar(rig, per_face=per_face)
    keep = torch.randperm(full.num_gaussians, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    sd = {k: v.detach()[keep] for k, v in full.state_dict().items() if not k.startswith("torso_")}
    return GaussianAvatar(sd["binding"], sd["local_means"], sd["local_quats"], sd["log_scales"], sd["sh_dc"],
                          sd["sh_rest"], sd["opacity_logits"], full.rig_name, full.rig_checksum, full.sh_degree)


def bench_device(backend: str) -> torch.device:
    """The device a backend's rows run on: "cpu" -> CPU, "cuda" -> CUDA, or the CPU in the gsplat
    reference test mode (``TALKSPLAT_GSPLAT_REFERENCE=1``, :mod:`talksplat.render.gsplat_reference`)."""
    from talksplat.render.gsplat_reference import reference_mode

    if backend == "cuda" and not torch.cuda.is_available() and reference_mode():
        return torch.device("cpu")
    return torch.device(backend)


def bench_render(cfg: BenchRenderConfig) -> list[dict]:
    """Run the benchmark; returns one row per (backend, gaussians, resolution, batch).

    The rig from ``load_rig`` stays on the CPU: each backend gets its own copy on its device (a
    module's ``.to`` moves it in place), and avatars are initialised from the CPU rig."""
    from talksplat.render.camera import framing_camera
    from talksplat.render.gsplat_reference import reference_mode
    from talksplat.rigs import load_rig

    rows = []
    base_rig = load_rig(cfg.rig)
    with torch.no_grad():
        neutral = base_rig(base_rig.zero_params(1)).vertices[0]  # [V, 3] metres, CPU
    for backend in cfg.backend:
        if backend == "cuda" and not torch.cuda.is_available() and not reference_mode():
            rows.append({"backend": "cuda", "skipped": "no CUDA device"})
            continue
        device = bench_device(backend)
        rig = copy.deepcopy(base_rig).to(device)
        jaw_open = (rig.expression_group("jaw_open") or [0])[0]
        for n in cfg.gaussians:
            avatar = avatar_with_n_gaussians(base_rig, n).to(device)
            for res in cfg.resolution:
                viewmat, K = framing_camera(neutral, res, res, yaw_deg=20, pitch_deg=5)
                viewmat, K = viewmat[None].to(device), K[None].to(device)
                for batch in cfg.batch:
                    if batch > 1 and (backend == "cpu" or cfg.backward):
                        continue  # the CPU rasterizer and training render frame by frame: batch 1 says it all
                    rows.append(_time_frames(avatar, rig, jaw_open, viewmat, K, res, batch, backend, device, cfg))
    return rows


def _time_frames(avatar, rig, jaw_open: int, viewmat, K, res: int, batch: int, backend: str, device, cfg) -> dict:
    """Median seconds per frame over ``cfg.iters`` calls of ``batch`` posed frames each (after warm-up)."""
    from talksplat.avatar.render import render_avatar

    times = []
    for it in range(cfg.warmup + cfg.iters):
        params = rig.zero_params(batch, device=device)
        phase = torch.arange(batch, device=device, dtype=torch.float32) + it * batch
        params.expression[:, jaw_open] = 0.5 + 0.5 * torch.sin(phase)
        params.jaw[:, 0] = 0.1 + 0.1 * torch.sin(phase)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(cfg.backward):
            colors, _, _ = render_avatar(avatar, rig, params, viewmat, K, res, res, backend=backend)
            if cfg.backward:
                colors.mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if it >= cfg.warmup:
            times.append((time.perf_counter() - t0) / batch)
    t = sorted(times)[len(times) // 2]
    return {"backend": backend, "gaussians": avatar.num_gaussians, "resolution": res, "batch": batch,
            "median_s": t, "fps": 1.0 / t, "min_s": min(times), "backward": cfg.backward}


def rows_text(rows: list[dict]) -> str:
    from rich.table import Table

    from .text import table_text

    table = Table(title="talksplat bench render (rig + binding + rasterization per frame, 1 camera)")
    for col in ("backend", "gaussians", "resolution", "batch", "median ms / frame", "fps"):
        table.add_column(col, justify="right")
    for r in rows:
        if "skipped" in r:
            table.add_row(r["backend"], "-", "-", "-", "-", f"skipped: {r['skipped']}")
        else:
            table.add_row(r["backend"], f"{r['gaussians']:,}", f"{r['resolution']}", f"{r['batch']}",
                          f"{1e3 * r['median_s']:.2f}",
                          f"{r['fps']:.2f}")
    return table_text(table)
