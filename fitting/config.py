"""`talksplat fit` configuration (the avatar stage): one tyro dataclass with nested optimiser, loss and
densification-strategy configs, and presets for the step count and budget.

Torch-free (the CLI imports it for `--help`).  The command's config, which adds the audio predictor's
options (`--driver.*`), is :class:`talksplat.fit_command.FitCommandConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.rigs.spec import DatasetRigSpec

from .strategy.config import BindingStrategyConfig

#: preset -> (steps, Gaussian budget, Gaussians per face at start)
PRESETS = {"fast": (2000, 30_000, 1), "default": (10_000, 100_000, 2), "quality": (30_000, 200_000, 3)}


@dataclass
class OptimConfig:
    """Adam learning rates, one per trained tensor (GaussianAvatars' values; positions and scales are in face
    units, relative to the parent triangle's size)."""

    lr_local_means: Annotated[float, Range(0.0, 1.0)] = 5e-3
    """Gaussian positions (face units), at the first step; decays to `means_decay` times it by the last
    (0 to 1)."""
    means_decay: Annotated[float, Range(0.0, 1.0, open_lo=True)] = 0.01
    """Factor the position learning rate decays to, exponentially, over the run (as 3DGS) (above 0, up to 1)."""
    lr_local_quats: Annotated[float, Range(0.0, 1.0)] = 1e-3
    """Gaussian rotations (quaternions relative to the face) (0 to 1)."""
    lr_log_scales: Annotated[float, Range(0.0, 1.0)] = 1.7e-2
    """Gaussian log-scales (log face units) (0 to 1)."""
    lr_sh_dc: Annotated[float, Range(0.0, 1.0)] = 2.5e-3
    """Base colour (SH degree 0) (0 to 1)."""
    lr_sh_rest: Annotated[float, Range(0.0, 1.0)] = 1.25e-4
    """View-dependent colour (SH degrees 1 to 3) (0 to 1)."""
    lr_opacity_logits: Annotated[float, Range(0.0, 1.0)] = 5e-2
    """Opacity logits (0 to 1)."""
    lr_sh_dc_blend: Annotated[float, Range(0.0, 1.0)] = 2.5e-3
    """Colour blendshapes (base-colour offset per unit of expression; with --dynamic-appearance) (0 to 1)."""
    lr_means_blend: Annotated[float, Range(0.0, 1.0)] = 1e-4
    """Position blendshapes (position offset in face units per unit of expression; with --dynamic-geometry), at the
    first step; decays as the positions' rate (0 to 1)."""
    lr_expression: Annotated[float, Range(0.0, 1.0)] = 1e-3
    """Per-frame expression offsets (with --tune-params) (0 to 1)."""
    lr_jaw: Annotated[float, Range(0.0, 1.0)] = 1e-5
    """Per-frame jaw rotation offsets (radians) (0 to 1)."""
    lr_neck: Annotated[float, Range(0.0, 1.0)] = 1e-5
    """Per-frame neck rotation offsets (radians) (0 to 1)."""
    lr_eyes: Annotated[float, Range(0.0, 1.0)] = 1e-5
    """Per-frame eye rotation offsets (radians) (0 to 1)."""
    lr_global_rot: Annotated[float, Range(0.0, 1.0)] = 1e-5
    """Per-frame head rotation offsets (radians) (0 to 1)."""
    lr_translation: Annotated[float, Range(0.0, 1.0)] = 1e-6
    """Per-frame head translation offsets (metres) (0 to 1)."""

    def lr(self, name: str) -> float:
        """The learning rate of an avatar tensor (``local_means``, ...) or a per-frame parameter (``jaw``, ...)."""
        try:
            return getattr(self, f"lr_{name}")
        except AttributeError:
            raise KeyError(f"OptimConfig has no learning rate for '{name}' (no field lr_{name})") from None


@dataclass
class LossConfig:
    """Weights of the training loss: weighted L1 + D-SSIM (+ LPIPS), and the regularisers that keep the
    Gaussians near their triangles."""

    mouth_weight: Annotated[float, Range(0.0, 1e6)] = 2.0
    """Loss weight of the mouth region (from the landmarks) (0 to 1e+06)."""
    eye_weight: Annotated[float, Range(0.0, 1e6)] = 1.5
    """Loss weight of the eye regions (0 to 1e+06)."""
    lambda_dssim: Annotated[float, Range(0.0, 1.0)] = 0.2
    """Weight of D-SSIM against L1 (0 to 1)."""
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
    lambda_outside: Annotated[float, Range(0.0, 1e6)] = 0.1
    """Over a plate: weight of the mean rendered opacity where the image's mask says background.  The plate
    draws the background; Gaussians that paint it (beside the jaw, around the ears) would move with the head
    when driven (0 to 1e+06)."""
    lambda_offsets: Annotated[float, Range(0.0, 1e6)] = 0.01
    """Weight of the squared per-frame parameter offsets (with --tune-params) (0 to 1e+06)."""
    lambda_appearance: Annotated[float, Range(0.0, 1e6)] = 0.01
    """L2 penalty on the colour blendshapes (each Gaussian's sum of squares, mean over Gaussians; with
    --dynamic-appearance): keeps the colour of unseen expressions plausible (0 to 1e+06)."""
    lambda_geometry: Annotated[float, Range(0.0, 1e6)] = 0.1
    """L2 penalty on the position blendshapes (face units; each Gaussian's sum of squares, mean over Gaussians;
    with --dynamic-geometry): keeps the shape of unseen expressions the rig's (0 to 1e+06)."""


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
    rig: DatasetRigSpec = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA (gsplat kernels) when available, else our CPU rasterizer."""
    background: Literal["auto", "plate", "white", "black", "random"] = "auto"
    """What the avatar is rendered over during training. `plate`: the dataset's plate (the subject's own
    background and torso, made by `talksplat prep` from a monocular video), the target being the image as it
    is (no mask), so the avatar learns the head and the output can be the whole source frame; `white` /
    `black` / `random` (a new colour per step): a flat colour, the target the image's masked foreground over
    it. `auto`: `plate` when the dataset has one, else `white`."""
    cameras_per_step: Literal["all", "1"] = "all"
    """Images per training step: `all`: every camera of the drawn time step, rendered in one rasterization
    call, the loss averaged over them; `1`: one random image (time step and camera). The same on a monocular
    dataset; `all` falls back to `1` (with a warning) when the cameras' image sizes differ."""
    sh_degree: Annotated[int, Range(0, 3)] = 3
    """Spherical-harmonics degree of the colours (raised by one every `sh_every` steps) (0 to 3)."""
    sh_every: Annotated[int, Range(1)] = 1000
    """Steps between SH degree increases (at least 1)."""
    dynamic_appearance: bool | None = None
    """Expression-dependent colour: per-Gaussian linear colour blendshapes driven by each frame's expression
    and jaw (wrinkles, mouth and eye shading; about +0.9 dB held-out PSNR and +1.8 dB on the mouth on a GRID clip,
    for about 25 % more CPU time per step and a 3.5x larger avatar file); `--no-dynamic-appearance`: one static
    colour per Gaussian. Default: on, except with `--preset fast` (which keeps its CPU time)."""
    dynamic_geometry: bool = False
    """Expression-dependent positions: per-Gaussian linear position blendshapes (offsets in the parent face's
    frame) driven by each frame's expression and jaw, as the colour ones, for shapes the rig's own blendshapes
    lack (lip roll, wrinkles), under an L2 penalty (`--loss.lambda-geometry`). Off: on 3 s GRID clips it lowered the
    held-out PSNR (README: Fit)."""
    torso: bool = False
    """Torso Gaussians: bound to a bust proxy under the neck, posed by the head's smoothed, attenuated motion
    (the shoulders follow the head weakly), trained on the dataset's whole source frames over the plate every
    `torso-every` steps (head and torso together), so shoulders that move are the avatar's, not a blur of the
    static plate. Needs a monocular dataset prepared with whole training frames (`talksplat prep
    --source-frames`, on by default)."""
    torso_every: Annotated[int, Range(1, 100)] = 3
    """With --torso: one step in this many trains on a whole source frame instead of a head crop (1 to 100)."""
    torso_size: Annotated[int, Range(64, 4096)] = 512
    """With --torso: the whole frame's longer side in those steps, px (never above the dataset's frame size)
    (64 to 4096)."""
    torso_plate: Literal["head-free", "person-free"] = "head-free"
    """With --torso: the plate behind the avatar. `head-free`: the plate that keeps the subject's median torso
    (sharpest where the shoulders stay still: on three GRID clips the body scored 6.7 dB more than with
    `person-free`, README: Full-frame fidelity);
    `person-free`: the background alone (prep's plate_background.png), so the torso is the Gaussians' only and
    no still copy of it shows where shoulders that move far leave it (datasets prepared before it fall back
    to `head-free`, with a warning)."""
    tune_params: bool = True
    """Fine-tune the tracked per-frame expression / jaw / neck / eyes / head pose (small rates)."""
    lpips_weights: Path | None = None
    """LPIPS backbone + linear-head weights, a directory or file; LPIPS is off without it; nothing is
    downloaded (see README: Fit)."""
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
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Adam learning rates of the Gaussians and of the per-frame parameter offsets."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss weights: image terms, region weights, binding regularisers."""
    # The trainer builds the strategy with `cfg.strategy.build(steps, budget)`; another strategy is another
    # config type here (a tyro union of configs once there are two; see fitting/strategy/base.py).
    strategy: BindingStrategyConfig = field(default_factory=BindingStrategyConfig)
    """Densification: when Gaussians are cloned, split and pruned inside their triangles, and opacity resets."""

    @property
    def uses_dynamic_appearance(self) -> bool:
        """``dynamic_appearance`` after the preset's default (off for `fast`)."""
        return self.preset != "fast" if self.dynamic_appearance is None else self.dynamic_appearance

    def resolved(self) -> tuple[int, int, int]:
        """(steps, budget, per_face) after applying the preset."""
        steps, budget, per_face = PRESETS[self.preset]
        return (self.steps if self.steps is not None else steps,
                self.budget if self.budget is not None else budget, per_face)
