"""The options of `talksplat view` (torch-free: the CLI reads them for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.rigs.spec import RecordedRigSpec


@dataclass
class ViewConfig(ProcessOptions):
    """Interactive web viewer: orbit the avatar, pull its expressions, play driven sequences.

    Renders on this machine (GPU if present) and streams to a browser at http://HOST:PORT.
    """

    avatar: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="AVATAR")]]
    """A fit folder (`talksplat fit --out`) or an avatar `.safetensors` file."""
    audio: Path | None = None
    """Speech (WAV) to drive the avatar with its audio predictor; played in the browser in sync."""
    params: Path | None = None
    """Rig parameters from `talksplat drive` (`.npz`: shape, expression, jaw, neck, eyes, global_rot,
    translation, fps, optional audio) to play back."""
    allow_external_paths: bool = False
    """Let a --params file's `audio` name a file outside the parameters file's folder."""
    rig: RecordedRigSpec = None
    host: str = "127.0.0.1"
    """Address to listen on.  Anything but loopback lets anyone on the network view the avatar."""
    port: Annotated[int, Range(1, 65535)] = 8080
    """Port to listen on (the next free one if taken) (1 to 65535)."""
    resolution: Annotated[int, Range(16, 1024)] = 1024
    """Longer image side in pixels when the camera is still (16 to 1024)."""
    moving_resolution: Annotated[int | None, Range(16, 1024)] = None
    """Longer image side while the camera or parameters move (default: `--resolution` on CUDA, 256 on CPU) (16 to 1024)."""
    fps: Annotated[float, Range(1, 240)] = 25.0
    """Frame rate of the sequence predicted from `--audio` (1 to 240)."""
    expressions: Annotated[int, Range(0, 1000)] = 10
    """Expression sliders shown for rigs whose expression components have no range (the first N; FLAME) (0 to 1000)."""
    background: Annotated[tuple[float, float, float], Range(0.0, 1.0)] = (1.0, 1.0, 1.0)
    """Background colour, RGB in [0, 1] (0 to 1)."""
    plate: bool = True
    """For an avatar fitted over a plate: start at the source camera and show the subject's own frame (the plate)
    behind the avatar whenever the camera is there (orbit away: the background colour); `--no-plate`: the
    training crop's camera and the colour only."""
    screenshot_dir: Path = Path(".")
    """Where the screenshot button writes PNGs."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to render: `auto` picks CUDA (gsplat) when available, else our CPU rasterizer."""
