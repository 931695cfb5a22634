"""`talksplat fit` configuration: one tyro dataclass, presets for the step count and budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

#: preset -> (steps, Gaussian budget, Gaussians per face at start)
PRESETS = {"fast": (2000, 30_000, 1), "default": (10_000, 100_000, 2), "quality": (30_000, 200_000, 3)}


@dataclass
class DriverConfig:
    """The subject's audio-to-rig predictor (expression and jaw from speech), trained on the dataset's
    audio and the tracked (or fit-tuned) parameters, with voice augmentation."""

    enabled: bool = True
    """Train the predictor after the avatar (needs the dataset's audio)."""
    steps: int = 1000
    """Training steps (batches of audio windows)."""
    encoder: str = "logmel"
    """Audio features: `logmel` (built in) or `hf:DIR`, a local wav2vec2/HuBERT directory (extra `[hf]`)."""
    hidden: int = 128
    """Width of the temporal network."""
    batch: int = 16
    """Audio windows per step."""
    window_s: float = 2.0
    """Length of a training window in seconds."""
    lr: float = 2e-3
    """Adam learning rate (cosine decay)."""
    augment: bool = True
    """Voice augmentation: tempo, formant/pitch warp, noise, gain."""
    lambda_lip: float = 1.0
    """Weight of the lip-vertex loss (mm², relative to the parameter loss)."""
    lambda_velocity: float = 0.5
    """Weight of the frame-to-frame velocity loss."""
    use_tuned: bool = True
    """Train on the fit-tuned parameters (tuned_params.npz) when present, else the tracked ones."""
    seed: int = 0
    """Random seed."""


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
    lpips_weights: Path | None = None
    """LPIPS backbone + linear-head weights, a directory or file; LPIPS is off without it; nothing is
    downloaded (see README: Fit)."""
    lambda_lpips: float = 0.1
    """Weight of LPIPS added to the image loss (only with `lpips_weights`)."""
    lambda_position: float = 0.01
    """Hinge on local positions beyond `position_limit` face units."""
    position_limit: float = 1.0
    """Distance from its triangle (in units of the triangle's size) a Gaussian may move freely."""
    lambda_scale: float = 1.0
    """Hinge on scales beyond `scale_limit` face units."""
    scale_limit: float = 0.6
    """Largest scale (in units of the triangle's size) before the scale hinge applies."""
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
    driver: DriverConfig = field(default_factory=lambda: DriverConfig())
    """The audio-to-rig predictor trained after the avatar (see `talksplat drive`)."""
    driver_only: bool = False
    """Train only the audio predictor (beside an existing avatar in --out, or alone)."""

    def resolved(self) -> tuple[int, int, int]:
        """(steps, budget, per_face) after applying the preset."""
        steps, budget, per_face = PRESETS[self.preset]
        return (self.steps if self.steps is not None else steps,
                self.budget if self.budget is not None else budget, per_face)
