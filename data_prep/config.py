"""Options of `talksplat prep` (PrepConfig) and of its head tracking (TrackingConfig).

Torch-free: the CLI reads these for `--help` without importing the code that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.rigs.spec import DEFAULT_RIG, RigSpec


@dataclass
class TrackingConfig:
    """Weights and schedule of the landmark fit (defaults tuned on the GRID clips)."""

    rigid_iters: Annotated[int, Range(0, 100000)] = 50
    """Adam steps fitting head pose (and focal) only, neutral face (0 to 100000)."""
    full_iters: Annotated[int, Range(1, 100000)] = 150
    """Adam steps fitting everything (1 to 100000)."""
    lr: Annotated[float, Range(0.0, 10.0, open_lo=True)] = 0.04
    """Adam learning rate (pose, expression); shape and focal use half of it (above 0, up to 10)."""
    num_shape: Annotated[int, Range(0, 10000)] = 100
    """Identity components fitted (capped at the rig's) (0 to 10000)."""
    w_shape: Annotated[float, Range(0.0, 1e6)] = 0.1
    """Weight of the identity prior (squared shape coefficients) (0 to 1e+06)."""
    w_expression: Annotated[float, Range(0.0, 1e6)] = 0.1
    """Weight of the expression prior (squared coefficients) (0 to 1e+06)."""
    w_expression_bounds: Annotated[float, Range(0.0, 1e6)] = 100.0
    """Penalty outside the rig's expression range (open head: ARKit units in [0, 1]) (0 to 1e+06)."""
    w_jaw: Annotated[float, Range(0.0, 1e6)] = 1.0
    """Weight of the jaw-rotation prior (opening; sideways rotation and closing past rest cost more) (0 to 1e+06)."""
    w_neck: Annotated[float, Range(0.0, 1e6)] = 100.0
    """Weight of the neck-rotation prior (squared axis-angle) (0 to 1e+06)."""
    w_eyes: Annotated[float, Range(0.0, 1e6)] = 0.1
    """Weight of the eye-rotation prior (and of the two eyes looking different ways) (0 to 1e+06)."""
    w_smooth_expression: Annotated[float, Range(0.0, 1e6)] = 2.0
    """Temporal smoothness of expression, jaw and eyes (0 to 1e+06)."""
    w_smooth_pose: Annotated[float, Range(0.0, 1e6)] = 100.0
    """Second differences of head rotation and translation (per frame) (0 to 1e+06)."""
    w_focal: Annotated[float, Range(0.0, 1e6)] = 1.0
    """Pull of log focal length towards its initial value (monocular) (0 to 1e+06)."""
    contour_weight: Annotated[float, Range(0.0, 1e6)] = 0.3
    """Weight of the face-oval landmarks (silhouette points slide on real faces) (0 to 1e+06)."""
    robust_scale: Annotated[float, Range(0.0, open_lo=True)] = 0.02
    """Pseudo-Huber scale in inter-ocular units: residuals above it count linearly (above 0)."""
    window: Annotated[int, Range(8)] = 300
    """Clips longer than this many time steps are tracked in overlapping windows (identity fixed) (at least 8)."""
    overlap: Annotated[int, Range(0)] = 30
    """Time steps shared by consecutive windows (cross-faded) (at least 0)."""
    keyframes: Annotated[int, Range(1)] = 150
    """Frames used to fit the identity (and focal length) of a long clip (at least 1)."""


@dataclass
class PrepConfig(ProcessOptions):
    """Turn video of a talking person into a tracked dataset for `talksplat fit`.

    One video: monocular (square head crop, focal length estimated).  Several videos with
    `--calibration cameras.json`: synchronized multi-view (camera id = video file stem).  A directory
    holding `transforms_train.json`: import a VHAP / GaussianAvatars NeRF-style export.
    """

    videos: tyro.conf.Positional[tuple[Path, ...]]
    """Input video file(s), or one NeRF-style dataset directory."""
    out: Path = Path("dataset")
    """Output dataset directory (refused if it already holds data, unless --overwrite)."""
    calibration: Path | None = None
    """Multi-view: cameras.json (see docs/formats.md)."""
    rig: RigSpec = DEFAULT_RIG
    fps: Annotated[float, Range(1, 240)] = 25.0
    """Frames per second of the dataset (the video is resampled to it) (1 to 240)."""
    resolution: Annotated[int, Range(64, 4096)] = 512
    """Monocular: side of the square crop in pixels.  Multi-view: longest image side (never upscaled) (64 to 4096)."""
    max_frames: Annotated[int | None, Range(1)] = None
    """Use only the first N frames (at least 1)."""
    overwrite: bool = False
    """Replace an existing dataset at --out (only a talksplat dataset holding nothing else)."""
    allow_damaged: bool = False
    """Keep the readable part of a damaged or truncated video (with a warning) instead of refusing it."""
    allow_external_paths: bool = False
    """NeRF-style import: let file_path / fg_mask_path / flame_param_path point outside the source folder."""
    landmark_embedding: Path | None = None
    """Optional .npz (face_idx [478], bary [478, 3]) overriding the automatic landmark embedding."""
    heldout: Annotated[float, Range(0.0, 0.9)] = 0.1
    """Fraction of time steps held out for evaluation: a segment at the end, at least 50 time steps where that is
    at most a fifth of the clip (0 to 0.9)."""
    max_gap: Annotated[float, Range(0.0, 10.0)] = 0.4
    """Longest face-detection gap (seconds) filled by interpolation; longer gaps are dropped (0 to 10)."""
    min_face_fraction: Annotated[float, Range(0.0, 1.0)] = 0.5
    """Fail when the face is found in less than this fraction of the frames (0 to 1)."""
    crop_scale: Annotated[float, Range(1.0, 10.0)] = 2.2
    """Monocular crop side as a multiple of the face height (1 to 10)."""
    source_frames: Annotated[int, Range(0, 100000)] = 300
    """Monocular: training time steps whose whole source frame (and its mask) is kept, evenly spread, for the
    torso's whole-frame supervision (`talksplat fit --torso`); the held-out steps' frames are always kept
    (0 to 100000)."""
    mask_prior: bool = True
    """Add the tracked rig's silhouette to each segmented mask, so that what the fitted head covers is never
    called background where selfie segmentation misses it (the masks enter the fit's loss over a plate:
    `--loss.lambda-outside`)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where tracking runs."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Head-tracking weights and schedule."""
    quiet: bool = False
    """No progress display."""
