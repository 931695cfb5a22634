"""`talksplat bench prep`: frames per second of the whole `talksplat prep` on a video, by stage.

Runs the real pipeline (decode, FaceMesh, tracking, crop, selfie segmentation, PNG writing) into a
temporary directory, `repeat` times, and reports the fastest run.  The first run also pays for
one-off costs (building the open head, the landmark embedding) unless they are cached; they are
listed separately and excluded from frames per second of the later runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from talksplat.core.errors import InputError

from .config import BenchPrepConfig

STAGES = ("decode", "landmarks", "tracking", "crop", "masks", "write")


def default_video() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grid" / "bbaf2n.mpg"


def bench_prep(cfg: BenchPrepConfig) -> list[dict]:
    from talksplat.data_prep.config import PrepConfig
    from talksplat.data_prep.prep import run_prep

    video = cfg.video or default_video()
    if not video.is_file():
        raise InputError(f"{video}: no such video (pass --video)")
    rows = []
    for i in range(cfg.repeat):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            rep = run_prep(PrepConfig(videos=(video,), out=Path(d) / "ds", resolution=cfg.resolution, rig=cfg.rig,
                                      quiet=True))
            wall = time.perf_counter() - t0
        rows.append({"run": i, "frames": rep.num_timesteps, "wall_s": wall, **rep.timings,
                     "error_iod": rep.tracking_error["mean_iod"]})
    return rows


def rows_text(rows: list[dict]) -> str:
    best = min(rows, key=lambda r: r["wall_s"])
    n = best["frames"]
    lines = [f"prep of {n} frames: {best['wall_s']:.2f} s wall, {n / best['wall_s']:.1f} frames/s end to end "
             f"(fastest of {len(rows)}); tracking error {100 * best['error_iod']:.2f}% IOD"]
    staged = sum(best[s] for s in STAGES)
    for s in STAGES:
        lines.append(f"  {s:<10} {best[s]:7.3f} s  {1e3 * best[s] / n:7.2f} ms/frame  "
                     f"{100 * best[s] / best['wall_s']:5.1f}%")
    lines.append(f"  {'other':<10} {best['wall_s'] - staged:7.3f} s  (probe, audio, rig and embedding load, commit)")
    if len(rows) > 1:
        lines.append(f"  first run: {rows[0]['wall_s']:.2f} s (embedding {rows[0]['embedding']:.2f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    import tyro

    print(rows_text(bench_prep(tyro.cli(BenchPrepConfig))))
