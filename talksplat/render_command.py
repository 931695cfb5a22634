"""`talksplat render`: a turntable MP4 or still PNGs of an avatar (or of a fresh avatar on a rig)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.core.errors import OptionError
from talksplat.rigs.spec import DEFAULT_RIG, RigSpec

if TYPE_CHECKING:  # torch and numpy load only when a command runs: `talksplat --help` stays light
    import numpy as np


@dataclass
class RenderConfig(ProcessOptions):
    """Render an avatar as a turntable MP4 (`--out x.mp4`) or still PNGs (`--out x.png`).

    Without `--avatar` a fresh (untrained) avatar is built on `--rig`.
    """

    out: Path = Path("turntable.mp4")
    """Output: `.mp4` for a turntable, `.png` for a still (one file per `--yaw`)."""
    overwrite: bool = False
    """Replace existing output files (only files talksplat wrote)."""
    avatar: Path | None = None
    """A fitted avatar (`.safetensors`, or its fit folder); its rig is loaded from `--rig` and must match.  In its
    fit folder it is posed with its subject's identity (else the rig's mean head)."""
    rig: RigSpec = DEFAULT_RIG
    resolution: Annotated[int, Range(16, 8192)] = 1024
    """Image width and height in pixels (16 to 8192)."""
    expr: tuple[str, ...] = ()
    """Expression values `NAME=VALUE` (e.g. `jawOpen=0.8`; FLAME: `expr_000=1.5`)."""
    jaw: Annotated[float, Range(-1.0, 1.0)] = 0.0
    """Jaw opening rotation in radians (about +x) (-1 to 1)."""
    frames: Annotated[int, Range(1, 100000)] = 96
    """Turntable: number of frames for one full turn (1 to 100000)."""
    fps: Annotated[float, Range(1, 240)] = 24.0
    """Turntable frame rate (1 to 240)."""
    yaw: Annotated[tuple[float, ...], Range(-360.0, 360.0)] = (0.0,)
    """Stills: camera yaw angles in degrees (0 = facing the head, positive = from the subject's left) (-360 to 360)."""
    pitch: Annotated[float, Range(-89.0, 89.0)] = 5.0
    """Camera elevation in degrees (-89 to 89)."""
    fov: Annotated[float, Range(1.0, 170.0)] = 20.0
    """Vertical field of view in degrees (1 to 170)."""
    per_face: Annotated[int, Range(1, 64)] = 2
    """Gaussians per face for a fresh avatar (ignored with `--avatar`) (1 to 64)."""
    background: Annotated[tuple[float, float, float], Range(0.0, 1.0)] = (1.0, 1.0, 1.0)
    """Background colour, RGB in [0, 1] (0 to 1)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to render: `auto` picks CUDA (gsplat) when available, else our CPU rasterizer."""
    quality: Literal["standard", "archival"] = "standard"
    """Turntable H.264 settings: `standard` (libx264 veryfast, crf 16) or `archival` (medium, crf 10)."""


def parse_expressions(items: tuple[str, ...], names: list[str]) -> dict[int, float]:
    """`("jawOpen=0.8", ...)` -> {expression index: value}; clear error for unknown names."""
    out: dict[int, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise OptionError(f"--expr '{item}': expected NAME=VALUE")
        if name not in names:
            close = [n for n in names if n.lower().startswith(name.lower()[:4])][:6]
            raise OptionError(f"--expr '{name}': unknown expression for this rig"
                             + (f" (did you mean: {', '.join(close)})" if close else ""))
        try:
            out[names.index(name)] = float(value)
        except ValueError:
            raise OptionError(f"--expr '{item}': '{value}' is not a number") from None
        if not math.isfinite(out[names.index(name)]):
            raise OptionError(f"--expr '{item}': '{value}' is not a finite number")
    return out


def run_render(cfg: RenderConfig) -> list[Path]:
    """Do the work of `talksplat render`; returns the written files."""
    import numpy as np
    import torch

    from talksplat.avatar import init_avatar
    from talksplat.avatar.render import render_avatar
    from talksplat.core.ffmpeg import has_own_tag
    from talksplat.core.outputs import check_output_file
    from talksplat.render.camera import framing_camera
    from talksplat.render.device import pick_device
    from talksplat.render.video import frame_pipeline, to_uint8
    from talksplat.rigs import load_rig

    suffix = cfg.out.suffix.lower()
    if suffix not in (".mp4", ".png"):
        raise OptionError(f"--out {cfg.out}: use a .mp4 (turntable) or .png (still) file name")
    if cfg.resolution % 2:
        raise OptionError(f"--resolution {cfg.resolution}: must be even")
    outputs = [cfg.out] if suffix == ".mp4" or len(cfg.yaw) == 1 else [still_name(cfg.out, y) for y in cfg.yaw]
    for path in outputs:
        check_output_file(path, cfg.overwrite, [cfg.avatar], has_own_tag if suffix == ".mp4" else is_own_png)

    device = pick_device(cfg.device)
    rig = load_rig(cfg.rig)
    shape = None  # the identity: the rig's mean head
    if cfg.avatar is not None:
        from talksplat.driving.fit_reader import open_fit

        fit = open_fit(cfg.avatar, rig=rig)  # the avatar checked whole against --rig
        avatar = fit.avatar
        if fit.has_tuned:  # the Gaussians sit on the subject's head: pose that, not the rig's mean one
            shape = np.asarray(fit.tuned.shape)
    else:
        avatar = init_avatar(rig, per_face=cfg.per_face)
    rig, avatar = rig.to(device), avatar.to(device)

    params = rig.zero_params(1, device=device)
    if shape is not None:
        params.shape = torch.as_tensor(shape, dtype=torch.float32, device=device)[None]
    for i, v in parse_expressions(cfg.expr, rig.expression_names).items():
        params.expression[0, i] = v
    params.jaw[0, 0] = cfg.jaw

    W = H = cfg.resolution
    with torch.no_grad():
        verts = rig(params).vertices[0]
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)[None]

    def frame(yaw: float) -> np.ndarray:
        viewmat, K = framing_camera(verts, W, H, cfg.fov, yaw_deg=yaw, pitch_deg=cfg.pitch)
        with torch.no_grad():
            colors, _, _ = render_avatar(avatar, rig, params, viewmat[None], K[None], W, H, backgrounds=bg)
        return to_uint8(colors[0, 0])

    if suffix == ".mp4":
        from talksplat.core.progress import Bars

        with Bars(transient=True) as bars, frame_pipeline(cfg.out, W, H, fps=cfg.fps, quality=cfg.quality) as video:
            advance, _ = bars.task("turntable", cfg.frames)
            for i in range(cfg.frames):
                video.write(frame(360.0 * i / cfg.frames))
                advance()
        return [cfg.out]

    for yaw, path in zip(cfg.yaw, outputs):
        write_png(path, frame(yaw))
    return outputs


def still_name(out: Path, yaw: float) -> Path:
    """The file of one still when several ``--yaw`` are given: ``x_yaw+30.png``."""
    return out.with_name(f"{out.stem}_yaw{yaw:+.0f}.png")


def write_png(path: Path, image: np.ndarray) -> None:
    """[H, W, 3] uint8 -> PNG (atomically), tagged as talksplat's own (``Software`` text chunk)."""
    from PIL import Image, PngImagePlugin

    from talksplat.core.ffmpeg import OWN_TAG
    from talksplat.core.files import atomic_write

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", OWN_TAG)
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)


def is_own_png(path: Path) -> bool:
    """Whether the PNG at ``path`` was written by :func:`write_png`."""
    from PIL import Image

    from talksplat.core.ffmpeg import OWN_TAG

    try:
        with Image.open(path) as im:
            return im.info.get("Software") == OWN_TAG
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False
