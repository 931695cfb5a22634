"""`talksplat bench fit`: training steps per second of `talksplat fit`, per image size and device.

Each configuration renders a small synthetic dataset (the textured open-head avatar, one camera)
at the given size, starts a fit on it with the default preset's initial density and times
`iters` steps after `warmup` untimed ones (densification off, so the Gaussian count is fixed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .config import BenchFitConfig


def bench_fit(cfg: BenchFitConfig) -> list[dict]:
    from talksplat.fitting.config import FitConfig
    from talksplat.fitting.strategy import BindingStrategyConfig
    from talksplat.fitting.trainer import Trainer
    from talksplat.rigs import DEFAULT_RIG, load_rig

    from .synthetic_dataset import write_synthetic_dataset

    rig = load_rig(DEFAULT_RIG)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for res in cfg.resolution:
            ds = Path(d) / f"ds{res}"
            write_synthetic_dataset(ds, rig, T=8, size=res, cameras=(0.0,))
            for dev in cfg.device:
                if dev == "cuda" and not torch.cuda.is_available():
                    rows.append({"resolution": res, "device": dev, "skipped": "no CUDA device"})
                    continue
                total = cfg.warmup + cfg.iters
                fit = FitConfig(dataset=ds, out=Path(d) / f"fit{res}{dev}", preset="default", steps=total,
                                strategy=BindingStrategyConfig(refine_start_iter=10 ** 9), checkpoint_every=10 ** 9,
                                device=dev, quiet=True, sh_every=1)
                tr = Trainer(fit)
                tr.steps = cfg.warmup
                tr.train(checkpoints=False)
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                tr.steps = total
                tr.train(checkpoints=False)
                if dev == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                rows.append({"resolution": res, "device": dev, "gaussians": tr.avatar.num_gaussians,
                             "steps_per_second": cfg.iters / dt, "ms_per_step": 1e3 * dt / cfg.iters})
    return rows


def rows_text(rows: list[dict]) -> str:
    return "\n".join(f"{r['resolution']:>5} px  {r['device']:<4}  skipped: {r['skipped']}" if "skipped" in r else
                     f"{r['resolution']:>5} px  {r['device']:<4}  {r['gaussians']} Gaussians  "
                     f"{r['steps_per_second']:6.2f} steps/s  ({r['ms_per_step']:.0f} ms/step)" for r in rows)


if __name__ == "__main__":
    import tyro

    print(rows_text(bench_fit(tyro.cli(BenchFitConfig))))
