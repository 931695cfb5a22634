"""The `talksplat` command: thin tyro entry points over config dataclasses.

Each subcommand is a dataclass whose docstrings are the help text; the work lives in the
modules they call.  Errors the user can fix end as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Union

import tyro

from talksplat.benchmarks.render import BenchRenderConfig
from talksplat.render_command import RenderConfig


@dataclass
class BenchRigConfig:
    """Time rig evaluation alone (blendshapes + skinning) for a batch of frames."""

    rig: str = "open"
    """Head rig spec (see `talksplat render --help`)."""
    batch: int = 64
    """Frames posed per call."""
    iters: int = 10
    """Timed calls."""


Bench = Union[
    Annotated[BenchRenderConfig, tyro.conf.subcommand("render")],
    Annotated[BenchRigConfig, tyro.conf.subcommand("rig")],
]

Command = Union[
    Annotated[RenderConfig, tyro.conf.subcommand("render")],
    Annotated[Bench, tyro.conf.subcommand("bench", description="Benchmarks: speed of rendering and rigs.")],
]


def _bench_rig(cfg: BenchRigConfig) -> None:
    import time

    import torch

    from talksplat.rigs import load_rig

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
    print(f"rig {rig.name}: {rig.num_vertices} vertices, batch {cfg.batch}: {1e3 * dt:.1f} ms per call, "
          f"{cfg.batch / dt:.0f} frames/s")


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(Command, args=argv, prog="talksplat",
                   description="talksplat: talking Gaussian head avatars from video.")
    from talksplat.avatar.io import AvatarFileError

    try:
        if isinstance(cfg, RenderConfig):
            from talksplat.render_command import run_render

            for path in run_render(cfg):
                print(f"wrote {path}")
        elif isinstance(cfg, BenchRenderConfig):
            from talksplat.benchmarks.render import bench_render, print_rows

            print_rows(bench_render(cfg))
        elif isinstance(cfg, BenchRigConfig):
            _bench_rig(cfg)
    except (AvatarFileError, FileNotFoundError, ValueError) as e:
        print(f"talksplat: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
