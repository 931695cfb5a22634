"""`talksplat bench gpu`: the one table `scripts/gpu_check.sh` prints on a GPU machine.

Rows, each measured on ``--device`` (CUDA when present):

* parity: the largest difference between the CUDA backend's and the CPU rasterizer's image of one avatar
  (colour in [0, 1]); on a machine without a GPU, the CUDA code path through gsplat's torch reference when
  ``TALKSPLAT_GSPLAT_REFERENCE=1``, else skipped;
* render: rig + binding + rasterization per frame for each Gaussian count, size and batch
  (:func:`talksplat.benchmarks.render.bench_render`);
* fit: training steps per second (:func:`talksplat.benchmarks.fit.bench_fit`);
* drive: frames per second of the whole `talksplat drive` (prediction, rendering, download, H.264 encoding,
  AAC muxing) on a generated speech signal (:func:`talksplat.benchmarks.drive.bench_drive`);
* encoder: libx264 alone at the drive size for each `--quality`, frames per second (CPU), with the PSNR of the
  decoded video;
* viewer: one render of the viewer's callback (:class:`talksplat.viewer.renderer.AvatarRenderer`), ms;
* peak memory: ``torch.cuda.max_memory_allocated`` over all of the above (CUDA only).

Times are wall-clock on the measured device (CUDA: synchronised); the CPU rows of a GPU machine use its cores.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import BenchDriveConfig, BenchFitConfig, BenchGpuConfig, BenchRenderConfig


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def parity_row(cfg: BenchGpuConfig) -> dict:
    """Max |CUDA - CPU| over one avatar image (``cfg.parity_gaussians`` Gaussians, ``cfg.parity_resolution`` px)."""
    from talksplat.avatar.render import render_avatar
    from talksplat.render.camera import framing_camera
    from talksplat.render.gsplat_reference import reference_mode
    from talksplat.rigs import load_rig

    from .render import avatar_with_n_gaussians

    row = {"what": "parity: max |CUDA - CPU| image", "unit": "colour"}
    if not torch.cuda.is_available() and not reference_mode():
        return {**row, "skipped": "no CUDA device"}
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rig = load_rig(cfg.rig)
    avatar = avatar_with_n_gaussians(rig, cfg.parity_gaussians)
    res = cfg.parity_resolution
    images = {}
    with torch.no_grad():
        params = rig.zero_params(1)
        params.expression[0, (rig.expression_group("jaw_open") or [0])[0]] = 0.6
        vm, K = framing_camera(rig(rig.zero_params(1)).vertices[0], res, res, yaw_deg=20, pitch_deg=5)
        for backend in ("cpu", "cuda"):
            d = torch.device("cpu") if backend == "cpu" else dev
            # copies on the device: a module's .to() moves it in place
            r, a = (rig, avatar) if d.type == "cpu" else (copy.deepcopy(rig).to(d), copy.deepcopy(avatar).to(d))
            c, _, _ = render_avatar(a, r, params.to(d), vm[None].to(d), K[None].to(d), res, res, backend=backend)
            images[backend] = c.cpu()
    diff = (images["cuda"] - images["cpu"]).abs()
    return {**row, "value": float(diff.max()), "mean": float(diff.mean()), "gaussians": avatar.num_gaussians,
            "resolution": res, "reference": dev.type == "cpu"}


def render_rows(cfg: BenchGpuConfig, device: str) -> list[dict]:
    from .render import bench_render

    backend = "cuda" if device == "cuda" else "cpu"
    rows = bench_render(BenchRenderConfig(gaussians=cfg.gaussians, resolution=cfg.resolution, batch=cfg.batch,
                                          backend=(backend,), rig=cfg.rig, iters=cfg.iters, warmup=cfg.warmup))
    return [{"what": f"render {r['gaussians']:,} Gaussians {r['resolution']} px batch {r['batch']}",
             "unit": "frames/s", "value": r["fps"], "ms": 1e3 * r["median_s"], **r} for r in rows if "skipped" not in r]


def fit_rows(cfg: BenchGpuConfig, device: str) -> list[dict]:
    from .fit import bench_fit

    rows = bench_fit(BenchFitConfig(resolution=cfg.fit_resolution, device=(device,), iters=cfg.fit_steps,
                                    warmup=cfg.warmup))
    return [{"what": f"fit step {r['resolution']} px ({r['gaussians']:,} Gaussians)", "unit": "steps/s",
             "value": r["steps_per_second"], "ms": r["ms_per_step"], **r} for r in rows]


def drive_row(cfg: BenchGpuConfig, device: str) -> dict:
    from .drive import bench_drive

    (r,) = bench_drive(BenchDriveConfig(seconds=cfg.drive_seconds, resolution=(cfg.drive_resolution,),
                                        device=(device,), per_face=cfg.drive_per_face, batch=cfg.drive_batch))
    return {"what": f"drive {cfg.drive_resolution} px, {r['gaussians']:,} Gaussians, batch {cfg.drive_batch} "
                    "(predict + render + encode + mux)", "unit": "frames/s", "value": r["frames"] / r["seconds"],
            "x_real_time": 1.0 / r["realtime_factor"], **r}


def encoder_rows(cfg: BenchGpuConfig) -> list[dict]:
    """libx264 alone at the drive size, per `--quality` (:data:`talksplat.render.video.QUALITY`): frames/s of
    :func:`talksplat.benchmarks.encode.encode_row` on renders of the textured open head (CPU); then the
    standard quality with as many encoders on segments as `talksplat drive` uses beside a GPU
    (:func:`talksplat.render.video.encode_jobs`), when that is more than one, on enough frames (the renders
    repeated) to give each encoder two segments; and NVIDIA's h264_nvenc where the GPU has NVENC."""
    from talksplat.render.video import QUALITY, SEGMENT_SECONDS, encode_jobs, nvenc_available

    from .encode import avatar_frames, encode_row

    frames = avatar_frames(cfg.drive_resolution, cfg.encoder_frames)
    rows = []
    jobs = encode_jobs("cuda")
    runs = [(q, 1, "libx264") for q in QUALITY] + ([("standard", jobs, "libx264")] if jobs > 1 else [])
    runs += [("standard", 1, "h264_nvenc")] if nvenc_available() else []
    with tempfile.TemporaryDirectory() as d:
        for quality, n, codec in runs:
            preset, crf = QUALITY[quality]
            clip = frames if n == 1 else np.concatenate(
                [frames] * -(-int(2 * n * SEGMENT_SECONDS * 25) // len(frames)))
            r = encode_row(clip, preset, crf, Path(d), jobs=n, codec=codec)
            what = (f"encoder alone: libx264 {cfg.drive_resolution} px, --quality {quality} ({preset}, crf {crf})"
                    if codec == "libx264" else f"encoder alone: h264_nvenc {cfg.drive_resolution} px, cq {crf}")
            if n > 1:
                what += f", {n} encoders on segments"
            rows.append({"what": what, "unit": "frames/s", "value": r["fps"],
                         "detail": f"{r['psnr']:.1f} dB, {r['kbit_s']:,.0f} kbit/s", **r})
    return rows


def viewer_row(cfg: BenchGpuConfig, device: str) -> dict:
    from talksplat.rigs import load_rig
    from talksplat.viewer.renderer import AvatarRenderer, viser_camera

    from .render import avatar_with_n_gaussians

    rig = load_rig(cfg.rig)
    avatar = avatar_with_n_gaussians(rig, max(cfg.gaussians))
    renderer = AvatarRenderer(avatar, rig, torch.device(device))
    frame = {k: v[0].numpy() for k, v in rig.zero_params(1).__dict__.items()}
    cam = viser_camera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -0.6), math.radians(30), 1.0, cfg.viewer_resolution)
    times = [renderer.render(frame, cam).seconds for _ in range(cfg.warmup + cfg.iters)][cfg.warmup:]
    ms = 1e3 * sorted(times)[len(times) // 2]
    return {"what": f"viewer render {cfg.viewer_resolution} px, {avatar.num_gaussians:,} Gaussians", "unit": "ms",
            "value": ms, "fps": 1e3 / ms}


def bench_gpu(cfg: BenchGpuConfig) -> list[dict]:
    """Every row above; a part that fails gives a row with its error instead of stopping the others."""
    device = _device(cfg.device)
    if device == "cuda":
        if not torch.cuda.is_available():
            from talksplat.core.errors import OptionError

            raise OptionError("--device cuda, but torch sees no CUDA device (install a CUDA build of torch)")
        torch.cuda.reset_peak_memory_stats()
    parts = [("parity", lambda: [parity_row(cfg)]), ("render", lambda: render_rows(cfg, device)),
             ("fit", lambda: fit_rows(cfg, device)), ("drive", lambda: [drive_row(cfg, device)]),
             ("encoder", lambda: encoder_rows(cfg)), ("viewer", lambda: [viewer_row(cfg, device)])]
    rows = [{"what": "device", "unit": "", "text": _device_name(device)}]
    for name, part in parts:
        if name not in cfg.parts:
            continue
        try:
            rows += part()
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others' figures
            rows.append({"what": name, "unit": "", "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]})
    if device == "cuda":
        rows.append({"what": "peak GPU memory (all of the above)", "unit": "GiB",
                     "value": torch.cuda.max_memory_allocated() / 2 ** 30})
    if cfg.json is not None:
        cfg.json.parent.mkdir(parents=True, exist_ok=True)
        cfg.json.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return rows


def _device_name(device: str) -> str:
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return f"{p.name}, {p.total_memory / 2 ** 30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


def failed(rows: list[dict]) -> list[str]:
    """The parts that gave an error instead of a figure."""
    return [r["what"] for r in rows if "error" in r]


def rows_text(rows: list[dict]) -> str:
    from rich.table import Table

    from .text import table_text

    table = Table(title="talksplat bench gpu")
    for col in ("measure", "value", "unit", "detail"):
        table.add_column(col, justify="left" if col in ("measure", "detail") else "right")
    for r in rows:
        if "text" in r:
            table.add_row(r["what"], "", "", r["text"])
        elif "error" in r:
            table.add_row(r["what"], "-", "", f"failed: {r['error']}")
        elif "skipped" in r:
            table.add_row(r["what"], "-", r["unit"], f"skipped: {r['skipped']}")
        else:
            v = r["value"]
            detail = ""
            if "ms" in r:
                detail = f"{r['ms']:.2f} ms"
            if "x_real_time" in r:
                detail = f"{r['x_real_time']:.1f}x real time"
            if "mean" in r:
                detail = f"mean {r['mean']:.1e}" + (" (gsplat torch reference)" if r.get("reference") else "")
            if "fps" in r and r["unit"] == "ms":
                detail = f"{r['fps']:.0f} fps"
            detail = r.get("detail", detail)
            table.add_row(r["what"], f"{v:.3g}" if abs(v) < 1e-2 else f"{v:,.2f}", r["unit"], detail)
    return table_text(table)
