"""`talksplat fit` configuration: one tyro dataclass, presets for the step count and budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

#: preset -> (steps, Gaussian budget, Gaussians per face at start)
PRESETS = {"fast": (2000, 30_000, 1), "default": (10_000, 100_000, 2), "quality": (30_000, 200_000, 3)}


@dataclass
class FitConfig:
    """Fit a Gaussian avatar to a dataset made by `talksplat prep`.

    Writes OUT/avatar.safetensors (+ .ply), tuned per-frame rig parameters, metrics.json with
    held-out PSNR/SSIM (full frame and mouth), side-by-side renders of held-out frames, and a
    resumable checkpoint.
    """

    dataset: tyro.conf.Positional[Path]
    """Dataset directory written by `talksplat prep`."""
    out: Path = Path("avatar")
    """Output directory."""
    preset: Literal["fast", "default", "quality"] = "default"
    """Step count, Gaussian budget and initial density: fast 2k steps / 30k Gaussians, default 10k /
    100k, quality 30k / 200k."""
    steps: int | None = None
    """Training steps (default: the preset's)."""
    budget: int | None = None
    """Maximum number of Gaussians (default: the preset's); it decides render speed."""
    resume: bool = False
    """Continue from OUT/checkpoint.safetensors (same dataset) at its saved step."""
    overwrite: bool = False
    """Replace an existing fit in OUT."""
    rig: str | None = None
    """Rig spec (`open`, `flame:PATH`); default: the one the dataset was prepared with."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA (gsplat kernels) when available, else our CPU rasterizer."""
    background: Literal["white", "black", "random"] = "white"
    """Background behind the masked subject during training (`random`: a new colour per step)."""
    sh_degree: int = 3
    """Spherical-harmonics degree of the colours (raised by one every `sh_every` steps)."""
    sh_every: int = 1000
    """Steps between SH degree increases."""
    tune_params: bool = True
    """Fine-tune the tracked per-frame expression / jaw / neck / eyes / head pose (small rates)."""
    mouth_weight: float = 2.0
    """Loss weight of the mouth region (from the landmarks)."""
    eye_weight: float = 1.5
    """Loss weight of the eye regions."""
    lambda_dssim: float = 0.2
    """Weight of D-SSIM against L1."""
    lambda_position: float = 0.01
    """Hinge on local positions beyond `position_limit` face units."""
    position_limit: float = 1.0
    lambda_scale: float = 1.0
    """Hinge on scales beyond `scale_limit` face units."""
    scale_limit: float = 0.6
    lambda_opacity: float = 0.01
    """Pushes opacities towards 0 or 1."""
    refine_every: int = 100
    """Densification: steps between grow/prune passes."""
    refine_start: int = 500
    """Densification: first step."""
    refine_stop_fraction: float = 0.75
    """Densification stops after this fraction of the steps."""
    reset_every: int = 3000
    """Opacity reset period (steps)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (written atomically)."""
    log_every: int = 50
    """Steps between progress updates (each forces one device sync)."""
    eval_frames: int = 64
    """Held-out images evaluated at the end (evenly spaced; 0 = all)."""
    side_by_side: int = 4
    """Held-out frames saved as ground truth | render | error PNGs."""
    cache_mb: int = 1024
    """Host memory for decoded training images."""
    seed: int = 0
    """Random seed (frame order, splits)."""
    tensorboard: bool = False
    """Also write TensorBoard logs to OUT/tb (needs the `tensorboard` package)."""
    quiet: bool = False
    """No progress display."""

    def resolved(self) -> tuple[int, int, int]:
        """(steps, budget, per_face) after applying the preset."""
        steps, budget, per_face = PRESETS[self.preset]
        return (self.steps if self.steps is not None else steps,
                self.budget if self.budget is not None else budget, per_face)
