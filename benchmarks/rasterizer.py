"""Rasterizer benchmark on a head-like scene.

Run: ``python -m talksplat.benchmarks.rasterizer`` (add ``--quick`` to skip 1024x1024 100k).

Scene: N Gaussians on an ellipsoid surface with semi-axes 0.09 x 0.12 x 0.10 m (a head),
tangential scale sqrt(area / N), normal scale 1/5 of that, opacities U(0.6, 0.95),
random colours, seen from 0.6 m by a camera whose image the head fills to ~70 %.
Timings are the minimum over ``iters`` runs (the machine is shared, timings are noisy).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Dict, Optional

import torch

from talksplat.render import intrinsics, look_at, rasterization

AXES = (0.09, 0.12, 0.10)  # semi-axes, metres


def _ellipsoid_area(a: float, b: float, c: float) -> float:
    p = 1.6075  # Knud Thomsen's approximation
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def head_scene(n_gaussians: int, resolution: int, seed: int = 0, device: str = "cpu") -> Dict:
    """Head-like Gaussian scene and one camera at 0.6 m; see the module docstring."""
    g = torch.Generator().manual_seed(seed)
    ax = torch.tensor(AXES)
    d = torch.randn(n_gaussians, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    means = d * ax
    normals = means / ax**2
    normals = normals / normals.norm(dim=-1, keepdim=True)
    s_t = math.sqrt(_ellipsoid_area(*AXES) / max(n_gaussians, 1))
    scales = torch.stack([torch.full((n_gaussians,), s_t), torch.full((n_gaussians,), s_t),
                          torch.full((n_gaussians,), s_t / 5)], -1)
    scales = scales * (0.7 + 0.6 * torch.rand(n_gaussians, 3, generator=g))
    # quaternion rotating local z onto the normal (then a random twist about it)
    zax = torch.tensor([0.0, 0.0, 1.0]).expand_as(normals)
    axis = torch.linalg.cross(zax, normals)
    cos = (normals * zax).sum(-1).clamp(-1, 1)
    ang = torch.acos(cos)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    q_align = torch.cat([torch.cos(ang / 2)[:, None], axis * torch.sin(ang / 2)[:, None]], -1)
    tw = torch.rand(n_gaussians, generator=g) * math.pi
    q_tw = torch.stack([torch.cos(tw), torch.zeros_like(tw), torch.zeros_like(tw), torch.sin(tw)], -1)
    w1, v1 = q_align[:, :1], q_align[:, 1:]
    w2, v2 = q_tw[:, :1], q_tw[:, 1:]
    quats = torch.cat([w1 * w2 - (v1 * v2).sum(-1, keepdim=True), w1 * v2 + w2 * v1 + torch.linalg.cross(v1, v2)], -1)
    opacities = 0.6 + 0.35 * torch.rand(n_gaussians, generator=g)
    colors = torch.rand(n_gaussians, 3, generator=g)
    dist = 0.6
    viewmat = look_at(torch.tensor([0.0, 0.0, dist]), torch.zeros(3))
    # head height 0.24 m fills 70 % of the image height
    focal = 0.7 * resolution * dist / (2 * AXES[1])
    K = intrinsics(focal=focal, width=resolution, height=resolution)
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
               viewmats=viewmat[None], Ks=K[None], width=resolution, height=resolution,
               backgrounds=torch.ones(1, 3))
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in out.items()}


def bench_rasterizer(n_gaussians: int, resolution: int, backend: str = "cpu", iters: int = 5,
                     backward: bool = False, tile_size: Optional[int] = None, seed: int = 0) -> Dict:
    """Time ``rasterization`` on :func:`head_scene`.

    Returns a dict with ``seconds_min``, ``seconds_median`` (per iteration, forward or
    forward+backward), ``n_isects``, ``coverage`` (fraction of pixels with alpha > 0.5)
    and the arguments.
    """
    device = "cuda" if backend == "cuda" else "cpu"
    sc = head_scene(n_gaussians, resolution, seed=seed, device=device)
    params = ["means", "quats", "scales", "opacities", "colors"]
    if backward:
        for k in params:
            sc[k] = sc[k].clone().requires_grad_(True)
    times = []
    meta = None
    alphas = None
    for it in range(iters + 1):  # first run is a warm-up
        if backward:
            for k in params:
                sc[k].grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            colors, alphas, meta = rasterization(**sc, tile_size=tile_size, backend=backend)
            if backward:
                (colors.sum() + meta["expected_depth"].sum() * 0.1).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if it > 0:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "n_gaussians": n_gaussians,
        "resolution": resolution,
        "backend": backend,
        "backward": backward,
        "tile_size": meta["tile_size"],
        "iters": iters,
        "seconds_min": times[0],
        "seconds_median": times[len(times) // 2],
        "n_isects": meta.get("n_isects"),
        "coverage": float((alphas > 0.5).float().mean()),
    }


def _fmt(r: Dict) -> str:
    mode = "fwd+bwd" if r["backward"] else "fwd    "
    return (f"{r['backend']:4s} N={r['n_gaussians']:>6d} {r['resolution']:>4d}^2 {mode} tile={r['tile_size']:>2d} "
            f"min {r['seconds_min']*1e3:8.1f} ms  median {r['seconds_median']*1e3:8.1f} ms  "
            f"isects={r['n_isects']}  coverage={r['coverage']:.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip the 1024x1024 100k case")
    ap.add_argument("--tile-size", type=int, default=None)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    cases = [(10_000, 256, False, 0.15), (10_000, 256, True, 0.5), (10_000, 1024, False, None),
             (10_000, 1024, True, None)]
    if not args.quick:
        cases += [(100_000, 1024, False, None), (100_000, 1024, True, None)]
    for n, res, bwd, target in cases:
        iters = args.iters if n * res < 50_000_000 else max(2, args.iters // 2)
        r = bench_rasterizer(n, res, args.backend, iters, bwd, tile_size=args.tile_size)
        line = _fmt(r)
        if target is not None:
            line += f"  target < {target*1e3:.0f} ms: {'OK' if r['seconds_min'] < target else 'MISSED'}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
