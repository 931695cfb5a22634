"""`talksplat bench rig`: rig evaluation alone (blendshapes + skinning) for a batch of frames.

Wall-clock milliseconds per call after one untimed call, and frames per second.
"""

from __future__ import annotations

import time

import torch

from talksplat.rigs import load_rig

from .config import BenchRigConfig


def bench_rig(cfg: BenchRigConfig) -> list[dict]:
    """One row: rig name, vertices, batch, ms per call (wall clock), frames/s."""
    rig = load_rig(cfg.rig)
    p = rig.zero_params(cfg.batch)
    p.expression.uniform_(0, 1)
    p.jaw[:, 0].uniform_(0, 0.3)
    with torch.no_grad():
        rig(p)
        t0 = time.perf_counter()
        for _ in range(cfg.iters):
            rig(p)
        dt = (time.perf_counter() - t0) / cfg.iters
    return [{"rig": rig.name, "vertices": rig.num_vertices, "batch": cfg.batch, "ms": 1e3 * dt,
             "frames_per_s": cfg.batch / dt}]


def rows_text(rows: list[dict]) -> str:
    return "\n".join(f"rig {r['rig']}: {r['vertices']} vertices, batch {r['batch']}: {r['ms']:.1f} ms per call, "
                     f"{r['frames_per_s']:.0f} frames/s" for r in rows)
