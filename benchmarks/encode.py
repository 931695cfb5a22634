"""`talksplat bench encode`: libx264 alone, per preset and crf (and per number of encoders working on segments at
once): frames/s, CPU time per frame, bitrate, and the PSNR of the decoded video against the frames that went in.

The frames: renders of the textured open head (:func:`talksplat.benchmarks.synthetic_dataset.textured_avatar`)
on white, as `talksplat drive` writes them, with the jaw and head moving, at ``--resolution``; or the frames of
``--video`` (scaled to the size).  Each setting encodes the same frames through
:class:`talksplat.render.video.VideoWriter`; CPU time is the ffmpeg child's user + system time (all its threads),
so it stays meaningful on a busy machine where wall time does not.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .config import BenchEncodeConfig


def avatar_frames(resolution: int, n: int) -> np.ndarray:
    """[n, R, R, 3] uint8: the textured open head talking and turning, on white (the CPU rasterizer)."""
    from talksplat.avatar.render import render_avatar
    from talksplat.render.camera import framing_camera
    from talksplat.rigs import DEFAULT_RIG, load_rig

    from .synthetic_dataset import textured_avatar

    rig = load_rig(DEFAULT_RIG)
    avatar = textured_avatar(rig)
    jaw_open = rig.expression_group("jaw_open")[0]
    out = np.empty((n, resolution, resolution, 3), np.uint8)
    with torch.no_grad():
        vm, K = framing_camera(rig(rig.zero_params(1)).vertices[0], resolution, resolution)
        for s in range(0, n, 4):
            t = torch.arange(s, min(n, s + 4), dtype=torch.float32) / 25.0
            p = rig.zero_params(len(t))
            p.expression[:, jaw_open] = 0.3 + 0.3 * torch.sin(2 * np.pi * 2.5 * t)
            p.global_rot[:, 1] = 0.15 * torch.sin(2 * np.pi * 0.4 * t)
            p.global_rot[:, 0] = 0.05 * torch.sin(2 * np.pi * 0.3 * t)
            c, a, _ = render_avatar(avatar, rig, p, vm[None], K[None], resolution, resolution, backend="cpu")
            img = c[:, 0] + (1 - a[:, 0])
            out[s:s + len(t)] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return out


def video_frames(path: Path, resolution: int, n: int) -> np.ndarray:
    """The first ``n`` frames of ``path``, centre-cropped square and scaled to ``resolution``: [n, R, R, 3] uint8."""
    import cv2

    from talksplat.render.video import read_video

    frames, _ = read_video(path)
    frames = frames[:n]
    h, w = frames.shape[1:3]
    m = min(h, w)
    y, x = (h - m) // 2, (w - m) // 2
    return np.stack([cv2.resize(f[y:y + m, x:x + m], (resolution, resolution), interpolation=cv2.INTER_CUBIC)
                     for f in frames])


def encode_row(frames: np.ndarray, preset: str, crf: int, folder: Path, jobs: int = 1, codec: str = "libx264") -> dict:
    """Encode ``frames`` [n, H, W, 3] uint8 at 25 fps with one libx264 (``jobs`` 1) or as ``jobs`` encoders on
    segments joined without re-encoding (:class:`talksplat.render.video.SegmentedPipeline`, the cores shared
    among them, as `talksplat drive` does), or with ``codec`` h264_nvenc (one encoder); one row: frames/s (wall), CPU
    ms per frame, kbit/s, PSNR."""
    from talksplat.render.video import SegmentedPipeline, VideoWriter, read_video

    n, h, w = frames.shape[:3]
    out = folder / f"{preset}_{crf}_{jobs}.mp4"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with (VideoWriter(out, w, h, fps=25, crf=crf, preset=preset, codec=codec) if jobs == 1 else
          SegmentedPipeline(out, w, h, 25, None, True, preset, crf, jobs)) as vw:
        for f in frames:
            vw.write(f)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    decoded, _ = read_video(out)
    if decoded.shape != frames.shape:
        raise RuntimeError(f"{out}: decoded {decoded.shape}, encoded {frames.shape}")
    mse = np.mean((decoded.astype(np.float64) - frames.astype(np.float64)) ** 2, axis=(1, 2, 3))
    psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
    return {"preset": preset, "crf": crf, "jobs": jobs, "codec": codec, "frames": n, "resolution": w, "fps": n / wall,
            "cpu_ms_per_frame": 1e3 * cpu / n, "kbit_s": out.stat().st_size * 8 / 1e3 / (n / 25),
            "psnr": float(psnr.mean()), "psnr_min": float(psnr.min())}


def bench_encode(cfg: BenchEncodeConfig) -> list[dict]:
    frames = (video_frames(cfg.video, cfg.resolution, cfg.frames) if cfg.video is not None
              else avatar_frames(cfg.resolution, cfg.frames))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for setting in cfg.settings:
            preset, _, crf = setting.partition(":")
            for jobs in cfg.jobs:
                rows.append(encode_row(frames, preset, int(crf), Path(d), jobs))
    return rows


def rows_text(rows: list[dict]) -> str:
    from rich.table import Table

    from .text import table_text

    table = Table(title=f"talksplat bench encode (libx264, {rows[0]['frames']} frames of {rows[0]['resolution']} px)"
                  if rows else "talksplat bench encode")
    for col in ("preset", "crf", "encoders", "frames/s (wall)", "CPU ms / frame", "kbit/s at 25 fps", "PSNR dB",
                "worst frame dB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["preset"], str(r["crf"]), str(r.get("jobs", 1)), f"{r['fps']:.1f}",
                      f"{r['cpu_ms_per_frame']:.1f}", f"{r['kbit_s']:,.0f}", f"{r['psnr']:.2f}", f"{r['psnr_min']:.2f}")
    return table_text(table)
