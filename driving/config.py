"""Options of the audio-to-rig predictor's training (`talksplat fit --driver.*`, `talksplat run --driver.*`).

Torch-free: the CLI's configs import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from talksplat.core.checks import Range


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
