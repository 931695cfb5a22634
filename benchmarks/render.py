"""`talksplat bench render`: frames per second of the whole avatar path per backend.

Each timed frame poses the open-head rig with a new expression and jaw value, binds the Gaussians
to the posed triangles and rasterizes one camera, i.e. what `talksplat drive` does per frame.
Warm-up iterations are excluded.  Gaussian counts are met exactly by giving each face
ceil(N / F) Gaussians and keeping a fixed random subset of N.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.rigs.spec import DEFAULT_RIG, RigSpec


@dataclass
class BenchRenderConfig(ProcessOptions):
    """Time avatar rendering (rig deformation + binding + rasterization), per backend."""

    gaussians: Annotated[tuple[int, ...], Range(1, 100000000)] = (10_000, 100_000)
    """Gaussian counts to time (1 to 100000000)."""
    resolution: Annotated[tuple[int, ...], Range(16, 8192)] = (512, 1024)
    """Square image sizes to time (16 to 8192)."""
    backend: tuple[Literal["cpu", "cuda"], ...] = ("cpu", "cuda")
    """Backends to time (cuda is skipped when no GPU is present)."""
    rig: RigSpec = DEFAULT_RIG
    iters: Annotated[int, Range(1)] = 5
    """Timed frames per configuration (at least 1)."""
    warmup: Annotated[int, Range(0)] = 2
    """Untimed frames first (kernel compilation, allocator warm-up) (at least 0)."""
    backward: bool = False
    """Also time a backward pass (training cost) per frame."""


def avatar_with_n_gaussians(rig, n: int, seed: int = 0):
    """An initialised avatar on `rig` with exactly `n` Gaussians."""
    from talksplat.avatar import GaussianAvatar, init_avatar

    per_face = max(1, math.ceil(n / rig.num_faces))
    full = init_avatar(rig, per_face=per_face)
    keep = torch.randperm(full.num_gaussians, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    sd = {k: v.detach()[keep] for k, v in full.state_dict().items()}
    return GaussianAvatar(sd["binding"], sd["local_means"], sd["local_quats"], sd["log_scales"], sd["sh_dc"],
                          sd["sh_rest"], sd["opacity_logits"], full.rig_name, full.rig_checksum, full.sh_degree)


def bench_render(cfg: BenchRenderConfig) -> list[dict]:
    """Run the benchmark; returns one row per (backend, gaussians, resolution)."""
    from talksplat.avatar.render import render_avatar
    from talksplat.render_command import orbit_camera
    from talksplat.rigs import load_rig

    rows = []
    base_rig = load_rig(cfg.rig)
    for backend in cfg.backend:
        if backend == "cuda" and not torch.cuda.is_available():
            rows.append({"backend": "cuda", "skipped": "no CUDA device"})
            continue
        device = torch.device(backend)
        rig = base_rig.to(device)
        jaw_open = (rig.expression_group("jaw_open") or [0])[0]
        verts = rig(rig.zero_params(1, device=device)).vertices[0].detach()
        center = (verts.min(0).values + verts.max(0).values) / 2
        radius = float((verts.max(0).values - verts.min(0).values).norm() / 2)
        for n in cfg.gaussians:
            avatar = avatar_with_n_gaussians(base_rig, n).to(device)
            for res in cfg.resolution:
                f = 0.5 * res / math.tan(math.radians(10))
                K = torch.tensor([[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]], device=device)[None]
                viewmat = orbit_camera(center.cpu(), 1.1 * radius / math.tan(math.radians(10)), 20, 5)
                viewmat = viewmat.to(device)[None]
                times = []
                for it in range(cfg.warmup + cfg.iters):
                    params = rig.zero_params(1, device=device)
                    params.expression[0, jaw_open] = 0.5 + 0.5 * math.sin(it)
                    params.jaw[0, 0] = 0.1 + 0.1 * math.sin(it)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    with torch.set_grad_enabled(cfg.backward):
                        colors, _, _ = render_avatar(avatar, rig, params, viewmat, K, res, res)
                        if cfg.backward:
                            colors.mean().backward()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if it >= cfg.warmup:
                        times.append(time.perf_counter() - t0)
                t = sorted(times)[len(times) // 2]
                rows.append({"backend": backend, "gaussians": n, "resolution": res, "median_s": t,
                             "fps": 1.0 / t, "min_s": min(times), "backward": cfg.backward})
    return rows


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="talksplat bench render (rig + binding + rasterization, 1 camera)")
    for col in ("backend", "gaussians", "resolution", "median ms", "fps"):
        table.add_column(col, justify="right")
    for r in rows:
        if "skipped" in r:
            table.add_row(r["backend"], "-", "-", "-", f"skipped: {r['skipped']}")
        else:
            table.add_row(r["backend"], f"{r['gaussians']:,}", f"{r['resolution']}", f"{1e3 * r['median_s']:.1f}",
                          f"{r['fps']:.2f}")
    Console().print(table)
