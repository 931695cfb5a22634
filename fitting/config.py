"""`talksplat fit` configuration: one tyro dataclass, presets for the step count and budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions

#: preset -> (steps, Gaussian budget, Gaussians per face at start)
PRESETS = {"fast": (2000, 30_000, 1), "default": (10_000, 100_000, 2), "quality": (30_000, 200_000, 3)}


@dataclass
class DriverConfig:
    """The subject's audio-to-rig predictor (expression and jaw from speech), trained on the dataset's
    audio and the tracked (or fit-tuned) parameters, with voice augmentation."""

    enabled: bool = True
    """Train the predictor after the avatar (needs the dataset's audio)."""
    steps: Annotated[int, Range(1, 10000000)] = 1000
    """Training steps (batches of audio windows) (1 to 10000000)."""
    encoder: str = "logmel"
    """Audio features: `logmel` (built in) or `hf:DIR`, a local wav2vec2/HuBERT directory (extra `[hf]`)."""
    hidden: Annotated[int, Range(1, 4096)] = 128
    """Width of the temporal network (1 to 4096)."""
    batch: Annotated[int, Range(1, 4096)] = 16
    """Audio windows per step (1 to 4096)."""
    window_s: Annotated[float, Range(0.2, 60.0)] = 2.0
    """Length of a training window in seconds (0.2 to 60)."""
    lr: Annotated[float, Range(0.0, 1.0, open_lo=True)] = 2e-3
    """Adam learning rate (cosine decay) (above 0, up to 1)."""
    augment: bool = True
    """Voice augmentation: tempo, formant/pitch warp, noise, gain."""
    lambda_lip: Annotated[float, Range(0.0, 1e6)] = 1.0
    """Weight of the lip-vertex loss (mm², relative to the parameter loss) (0 to 1e+06)."""
    lambda_velocity: Annotated[float, Range(0.0, 1e6)] = 0.5
    """Weight of the frame-to-frame velocity loss (0 to 1e+06)."""
    use_tuned: bool = True
    """Train on the fit-tuned parameters (tuned_params.npz) when present, else the tracked ones."""
    seed: Annotated[int, Range(0)] = 0
    """Random seed (at least 0)."""


@dataclass
class FitConfig(ProcessOptions):
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
    steps: Annotated[int | None, Range(1, 10000000)] = None
    """Training steps (default: the preset's) (1 to 10000000)."""
    budget: Annotated[int | None, Range(1)] = None
    """Maximum number of Gaussians (default: the preset's); it decides render speed (at least 1)."""
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
    sh_degree: Annotated[int, Range(0, 3)] = 3
    """Spherical-harmonics degree of the colours (raised by one every `sh_every` steps) (0 to 3)."""
    sh_every: Annotated[int, Range(1)] = 1000
    """Steps between SH degree increases (at least 1)."""
    tune_params: bool = True
    """Fine-tune the tracked per-frame expression / jaw / neck / eyes / head pose (small rates)."""
    mouth_weight: Annotated[float, Range(0.0, 1e6)] = 2.0
    """Loss weight of the mouth region (from the landmarks) (0 to 1e+06)."""
    eye_weight: Annotated[float, Range(0.0, 1e6)] = 1.5
    """Loss weight of the eye regions (0 to 1e+06)."""
    lambda_dssim: Annotated[float, Range(0.0, 1.0)] = 0.2
    """Weight of D-SSIM against L1 (0 to 1)."""
    lpips_weights: Path | None = None
    """LPIPS backbone + linear-head weights, a directory or file; LPIPS is off without it; nothing is
    downloaded (see README: Fit)."""
    lambda_lpips: Annotated[float, Range(0.0, 1e6)] = 0.1
    """Weight of LPIPS added to the image loss (only with `lpips_weights`) (0 to 1e+06)."""
    lambda_position: Annotated[float, Range(0.0, 1e6)] = 0.01
    """Hinge on local positions beyond `position_limit` face units (0 to 1e+06)."""
    position_limit: Annotated[float, Range(0.0, open_lo=True)] = 1.0
    """Distance from its triangle (in units of the triangle's size) a Gaussian may move freely (above 0)."""
    lambda_scale: Annotated[float, Range(0.0, 1e6)] = 1.0
    """Hinge on scales beyond `scale_limit` face units (0 to 1e+06)."""
    scale_limit: Annotated[float, Range(0.0, open_lo=True)] = 0.6
    """Largest scale (in units of the triangle's size) before the scale hinge applies (above 0)."""
    lambda_opacity: Annotated[float, Range(0.0, 1e6)] = 0.01
    """Pushes opacities towards 0 or 1 (0 to 1e+06)."""
    refine_every: Annotated[int, Range(1)] = 100
    """Densification: steps between grow/prune passes (at least 1)."""
    refine_start: Annotated[int, Range(0)] = 500
    """Densification: first step (at least 0)."""
    refine_stop_fraction: Annotated[float, Range(0.0, 1.0)] = 0.75
    """Densification stops after this fraction of the steps (0 to 1)."""
    reset_every: Annotated[int, Range(1)] = 3000
    """Opacity reset period (steps) (at least 1)."""
    checkpoint_every: Annotated[int, Range(1)] = 500
    """Steps between checkpoints (written atomically) (at least 1)."""
    log_every: Annotated[int, Range(1)] = 50
    """Steps between progress updates (each forces one device sync) (at least 1)."""
    eval_frames: Annotated[int, Range(0)] = 64
    """Held-out images evaluated at the end (evenly spaced; 0 = all) (at least 0)."""
    side_by_side: Annotated[int, Range(0)] = 4
    """Held-out frames saved as ground truth | render | error PNGs (at least 0)."""
    cache_mb: Annotated[int, Range(0)] = 1024
    """Host memory for decoded training images (at least 0)."""
    seed: Annotated[int, Range(0)] = 0
    """Random seed (frame order, splits) (at least 0)."""
    tensorboard: bool = False
    """Also write TensorBoard logs to OUT/tb (needs the `tensorboard` package)."""
    quiet: bool = False
    """No progress display."""
    driver: DriverConfig = field(default_factory=lambda: DriverConfig())
    """The audio-to-rig predictor trained after the avatar (see `talksplat drive`)."""
    driver_only: bool = False
    """Train only the audio predictor (beside an existing avatar in --out, or alone)."""

    def resolved(self) -> tuple[int, int, int]:
        """(steps, budget, per_face) after applying the preset."""
        steps, budget, per_face = PRESETS[self.preset]
        return (self.steps if self.steps is not None else steps,
                self.budget if self.budget is not None else budget, per_face)
