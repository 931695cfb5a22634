"""`talksplat bench load`: how much a render slows down when another process uses the CPU.

With torch's OpenMP defaults an idle worker thread spins instead of sleeping, so a command slows
down several-fold as soon as anything else runs on the same cores (measured 4-14x on a 2-core
machine).  talksplat sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (talksplat/cli.py).
This benchmark shows the effect side by side: the avatar render of `talksplat bench render`
(rig + binding + CPU rasterization) runs in fresh child processes, idle and beside a CPU-bound
neighbour (one busy Python process), with the OpenMP wait policy talksplat sets and with the
library default.  Sharing two cores with one busy process should cost at most 2x.  Wall-clock
times, median of ``--iters`` frames after ``--warmup``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .config import BenchLoadConfig


#: (row name, OpenMP environment of the child; OMP_WAIT_POLICY and GOMP_SPINCOUNT are removed first)
VARIANTS = (("passive (talksplat)", {"OMP_WAIT_POLICY": "PASSIVE"}), ("OpenMP default", {}))


def _child(gaussians: int, resolution: int, iters: int, warmup: int, threads: int) -> list[float]:
    """Runs in a fresh process: seconds per frame of ``iters`` renders."""
    import math

    import torch

    from talksplat.avatar.render import render_avatar
    from talksplat.benchmarks.render import avatar_with_n_gaussians
    from talksplat.render.camera import framing_camera
    from talksplat.rigs import DEFAULT_RIG, load_rig

    torch.set_num_threads(threads)
    rig = load_rig(DEFAULT_RIG)
    avatar = avatar_with_n_gaussians(rig, gaussians)
    viewmat, K = framing_camera(rig(rig.zero_params(1)).vertices[0], resolution, resolution, yaw_deg=20, pitch_deg=5)
    viewmat, K = viewmat[None], K[None]
    jaw = (rig.expression_group("jaw_open") or [0])[0]
    times = []
    for it in range(warmup + iters):
        p = rig.zero_params(1)
        p.expression[0, jaw] = 0.5 + 0.5 * math.sin(it)
        t0 = time.perf_counter()
        with torch.no_grad():
            render_avatar(avatar, rig, p, viewmat, K, resolution, resolution, backend="cpu")
        if it >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _measure(cfg: BenchLoadConfig, omp_env: dict, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(omp_env)
    args = [sys.executable, "-m", "talksplat.benchmarks.contention", "--child", json.dumps(
        [cfg.gaussians, cfg.resolution, cfg.iters, cfg.warmup, threads])]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    return statistics.median(json.loads(out.strip().splitlines()[-1]))


def bench_load(cfg: BenchLoadConfig) -> list[dict]:
    """One row per variant: median seconds per frame idle and beside a busy process, and their ratio."""
    from talksplat.core.process import available_cores

    threads = cfg.threads or available_cores()
    rows = []
    for name, omp_env in VARIANTS:
        idle = _measure(cfg, omp_env, threads)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            loaded = _measure(cfg, omp_env, threads)
        finally:
            busy.kill()
            busy.wait()
        rows.append({"variant": name, "threads": threads, "idle_s": idle, "loaded_s": loaded,
                     "slowdown": loaded / idle, "gaussians": cfg.gaussians, "resolution": cfg.resolution})
    return rows


def rows_text(rows: list[dict]) -> str:
    from rich.table import Table

    from .text import table_text

    r0 = rows[0]
    table = Table(title=f"talksplat bench load: {r0['gaussians']:,} Gaussians at {r0['resolution']} px on the CPU, "
                        f"{r0['threads']} threads, beside one busy process (wall time per frame)")
    for col in ("variant", "idle ms", "loaded ms", "slowdown"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["variant"], f"{1e3 * r['idle_s']:.1f}", f"{1e3 * r['loaded_s']:.1f}", f"{r['slowdown']:.2f}x")
    return table_text(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="child process of `talksplat bench load`")
    parser.add_argument("--child", required=True)
    print(json.dumps(_child(*json.loads(parser.parse_args().child))))
