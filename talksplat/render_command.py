"""`talksplat render`: a turntable MP4 or still PNGs of an avatar (or of a fresh avatar on a rig)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch


@dataclass
class RenderConfig:
    """Render an avatar as a turntable MP4 (`--out x.mp4`) or still PNGs (`--out x.png`).

    Without `--avatar` a fresh (untrained) avatar is built on `--rig`.
    """

    out: Path = Path("turntable.mp4")
    """Output: `.mp4` for a turntable, `.png` for a still (one file per `--yaw`)."""
    avatar: Path | None = None
    """A fitted avatar (`.safetensors`); its rig is loaded from `--rig` and must match."""
    rig: str = "open"
    """Head rig: `open` (built in), `flame` (path in $TALKSPLAT_FLAME) or `flame:PATH`."""
    resolution: int = 1024
    """Image width and height in pixels."""
    expr: tuple[str, ...] = ()
    """Expression values `NAME=VALUE` (e.g. `jawOpen=0.8`; FLAME: `expr_000=1.5`)."""
    jaw: float = 0.0
    """Jaw opening rotation in radians (about +x)."""
    frames: int = 96
    """Turntable: number of frames for one full turn."""
    fps: float = 24.0
    """Turntable frame rate."""
    yaw: tuple[float, ...] = (0.0,)
    """Stills: camera yaw angles in degrees (0 = facing the head, positive = from the subject's left)."""
    pitch: float = 5.0
    """Camera elevation in degrees."""
    fov: float = 20.0
    """Vertical field of view in degrees."""
    per_face: int = 2
    """Gaussians per face for a fresh avatar (ignored with `--avatar`)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour, RGB in [0, 1]."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to render: `auto` picks CUDA (gsplat) when available, else our CPU rasterizer."""


def parse_expressions(items: tuple[str, ...], names: list[str]) -> dict[int, float]:
    """`("jawOpen=0.8", ...)` -> {expression index: value}; clear error for unknown names."""
    out: dict[int, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"talksplat: --expr '{item}': expected NAME=VALUE")
        if name not in names:
            close = [n for n in names if n.lower().startswith(name.lower()[:4])][:6]
            raise SystemExit(f"talksplat: --expr '{name}': unknown expression for this rig"
                             + (f" (did you mean: {', '.join(close)})" if close else ""))
        try:
            out[names.index(name)] = float(value)
        except ValueError:
            raise SystemExit(f"talksplat: --expr '{item}': '{value}' is not a number") from None
    return out


def orbit_camera(center: torch.Tensor, distance: float, yaw_deg: float, pitch_deg: float) -> torch.Tensor:
    """World-to-camera [4, 4] (OpenCV: x right, y down, z forward) looking at `center`.

    Yaw 0 looks at the face from +z; the orbit is about the rig's +y (up) axis.
    """
    from talksplat.render.camera import look_at

    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    offset = torch.tensor([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    eye = center + distance * offset
    return look_at(eye, center, torch.tensor([0.0, 1.0, 0.0]))


def run_render(cfg: RenderConfig) -> list[Path]:
    """Do the work of `talksplat render`; returns the written files."""
    from talksplat.avatar import init_avatar, load_avatar
    from talksplat.avatar.render import render_avatar
    from talksplat.render.video import VideoWriter, to_uint8
    from talksplat.rigs import load_rig

    suffix = cfg.out.suffix.lower()
    if suffix not in (".mp4", ".png"):
        raise SystemExit(f"talksplat: --out {cfg.out}: use a .mp4 (turntable) or .png (still) file name")
    if cfg.resolution < 16 or cfg.resolution % 2:
        raise SystemExit(f"talksplat: --resolution {cfg.resolution}: must be an even number >= 16")
    from talksplat.render.device import pick_device

    device = pick_device(cfg.device)
    rig = load_rig(cfg.rig)
    if cfg.avatar is not None:
        avatar = load_avatar(cfg.avatar, rig_checksum=rig.checksum)
    else:
        avatar = init_avatar(rig, per_face=cfg.per_face)
    rig, avatar = rig.to(device), avatar.to(device)

    params = rig.zero_params(1, device=device)
    for i, v in parse_expressions(cfg.expr, rig.expression_names).items():
        params.expression[0, i] = v
    params.jaw[0, 0] = cfg.jaw

    with torch.no_grad():
        verts = rig(params).vertices[0]
    lo, hi = verts.min(0).values, verts.max(0).values
    center = (lo + hi) / 2
    radius = float((hi - lo).norm() / 2)
    distance = 1.1 * radius / math.tan(math.radians(cfg.fov) / 2)
    W = H = cfg.resolution
    f = 0.5 * H / math.tan(math.radians(cfg.fov) / 2)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=torch.float32, device=device)
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)[None]

    def frame(yaw: float) -> np.ndarray:
        viewmat = orbit_camera(center.cpu(), distance, yaw, cfg.pitch).to(device)
        with torch.no_grad():
            colors, _, _ = render_avatar(avatar, rig, params, viewmat[None], K[None], W, H, backgrounds=bg)
        return to_uint8(colors[0, 0])

    if suffix == ".mp4":
        from rich.progress import Progress

        with VideoWriter(cfg.out, W, H, fps=cfg.fps) as writer, Progress(transient=True) as progress:
            task = progress.add_task("turntable", total=cfg.frames)
            for i in range(cfg.frames):
                writer.write(frame(360.0 * i / cfg.frames))
                progress.advance(task)
        return [cfg.out]

    import imageio.v3 as iio

    from talksplat.render.files import atomic_write

    written = []
    for yaw in cfg.yaw:
        path = cfg.out if len(cfg.yaw) == 1 else cfg.out.with_name(f"{cfg.out.stem}_yaw{yaw:+.0f}.png")
        with atomic_write(path) as tmp:
            iio.imwrite(tmp, frame(yaw))
        written.append(path)
    return written

