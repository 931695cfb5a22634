"""Options of `talksplat bench ...` (torch-free, so `talksplat --help` does not import torch).

Each benchmark's code lives in its own module (render, rig, prep, fit, drive, contention, text_sync) and imports its
config from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
import tyro

from talksplat.rigs.spec import DEFAULT_RIG, RecordedRigSpec, RigSpec


@dataclass
class BenchRenderConfig(ProcessOptions):
    """Time avatar rendering (rig deformation + binding + rasterization), per backend."""

    gaussians: Annotated[tuple[int, ...], Range(1, 100000000)] = (10_000, 100_000)
    """Gaussian counts to time (1 to 100000000)."""
    resolution: Annotated[tuple[int, ...], Range(16, 8192)] = (512, 1024)
    """Square image sizes to time (16 to 8192)."""
    backend: tuple[Literal["cpu", "cuda"], ...] = ("cpu", "cuda")
    """Backends to time (cuda is skipped when no GPU is present)."""
    batch: Annotated[tuple[int, ...], Range(1, 1024)] = (1, 16)
    """Frames posed and rasterized per call (1 to 1024); times are per frame.  The CPU rasterizer loops over
    a batch's frames, so its rows use batch 1 only."""
    rig: RigSpec = DEFAULT_RIG
    iters: Annotated[int, Range(1)] = 5
    """Timed frames per configuration (at least 1)."""
    warmup: Annotated[int, Range(0)] = 2
    """Untimed frames first (kernel compilation, allocator warm-up) (at least 0)."""
    backward: bool = False
    """Also time a backward pass (training cost) per frame."""


@dataclass
class BenchRigConfig(ProcessOptions):
    """Time rig evaluation alone (blendshapes + skinning) for a batch of frames."""

    rig: RigSpec = DEFAULT_RIG
    batch: Annotated[int, Range(1, 100000)] = 64
    """Frames posed per call (1 to 100000)."""
    iters: Annotated[int, Range(1)] = 10
    """Timed calls (at least 1)."""


@dataclass
class BenchPrepConfig(ProcessOptions):
    """Time `talksplat prep` on one video, split by stage (default: a GRID clip from ../shared/data)."""

    video: Path | None = None
    """Video to prepare (default: ../shared/data/grid/bbaf2n.mpg beside the repository)."""
    resolution: Annotated[int, Range(64, 4096)] = 512
    """Crop size in pixels (64 to 4096)."""
    repeat: Annotated[int, Range(1, 100)] = 2
    """Runs; the fastest is reported (1 to 100)."""
    rig: RigSpec = DEFAULT_RIG


@dataclass
class BenchFitConfig(ProcessOptions):
    """Time training steps of `talksplat fit` (rig + binding + rasterization + losses + backward + Adam)."""

    resolution: Annotated[tuple[int, ...], Range(16, 8192)] = (256, 512)
    """Square image sizes (16 to 8192)."""
    device: tuple[Literal["cpu", "cuda"], ...] = ("cpu", "cuda")
    """Devices (cuda is skipped without a GPU)."""
    iters: Annotated[int, Range(1)] = 20
    """Timed steps (at least 1)."""
    warmup: Annotated[int, Range(0)] = 5
    """Untimed steps first (at least 0)."""


@dataclass
class BenchDriveConfig(ProcessOptions):
    """Time `talksplat drive` end to end: seconds of wall time per second of audio."""

    avatar: Path | None = None
    """A `talksplat fit` folder; default: a fresh open-head avatar with a quickly trained predictor."""
    audio: Path | None = None
    """Driving audio; default: a generated speech-like signal of --seconds."""
    seconds: Annotated[float, Range(0.5, 36000.0)] = 10.0
    """Length of the generated audio (0.5 to 36000)."""
    resolution: Annotated[tuple[int, ...], Range(16, 8192)] = (512, 1024)
    """Output sizes (16 to 8192)."""
    device: tuple[Literal["cpu", "cuda"], ...] = ("cpu", "cuda")
    """Devices (cuda is skipped without a GPU)."""
    per_face: Annotated[int, Range(1, 64)] = 2
    """Gaussians per rig triangle of the fresh avatar (2: about 19k) (1 to 64)."""
    batch: Annotated[int, Range(1, 1024)] = 8
    """Frames per render batch (1 to 1024)."""


@dataclass
class BenchLoadConfig(ProcessOptions):
    """Time a CPU render idle and beside a busy process (OpenMP passive vs default waiting)."""

    gaussians: Annotated[int, Range(1, 10000000)] = 10_000
    """Gaussians of the rendered avatar (1 to 10000000)."""
    resolution: Annotated[int, Range(16, 4096)] = 256
    """Square image size in pixels (16 to 4096)."""
    iters: Annotated[int, Range(1, 1000)] = 15
    """Timed frames per measurement (1 to 1000)."""
    warmup: Annotated[int, Range(0, 100)] = 3
    """Untimed frames first (0 to 100)."""


@dataclass
class BenchTextSyncConfig(ProcessOptions):
    """Articulation on espeak-ng speech in several languages: `talksplat bench text-sync AVATAR`.

    Drives the avatar with fixed sentences per voice as `talksplat drive --text` does (still pose, no blinks),
    measures the mouth opening with FaceMesh on the renders and compares it with espeak-ng's own phoneme times:
    lips closed at p/b/m, open at open vowels."""

    avatar: tyro.conf.Positional[Path]
    """A `talksplat fit` output folder (avatar, audio predictor, tuned parameters)."""
    voices: tuple[str, ...] = ("en-us", "de", "fr", "es")
    """espeak-ng voices to measure, space- or comma-separated (those with built-in sentences: en-us, de, fr,
    es, it)."""
    sentences: Annotated[int, Range(1, 3)] = 3
    """Sentences per voice (1 to 3)."""
    envelope: bool = True
    """Also measure the loudness-envelope baseline (the jaw follows the audio's loudness)."""
    mouth_amplitude: Literal["predicted", "subject"] = "predicted"
    """As `talksplat drive --mouth-amplitude`."""
    resolution: Annotated[int, Range(64, 2048)] = 256
    """Square render size in pixels for FaceMesh (64 to 2048)."""
    rig: RecordedRigSpec = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA (gsplat) when available, else the CPU rasterizer."""
    batch: Annotated[int, Range(1, 1024)] = 8
    """Frames posed and rendered per batch (1 to 1024)."""
    quiet: bool = False
    """No progress display."""


@dataclass
class BenchFidelityConfig(ProcessOptions):
    """Held-out fidelity on real video: `talksplat bench fidelity [CLIPS...] --out DIR`.

    Each clip is prepared once, then fitted once per --backgrounds entry with the same settings (the avatar
    alone, no audio predictor); the table gives each fit's held-out figures (the clip's last frames, never
    trained on): the crop as trained, its masked foreground, the mouth, and the whole source frame (the avatar
    over the clip's plate).  Preps and fits already in DIR are reused, so clips can run in separate processes."""

    clips: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Videos (default: every .mpg in ../shared/data/grid beside the repository)."""
    out: Path = Path("bench-fidelity")
    """Work folder: DIR/<clip>/dataset, DIR/<clip>/<background>/ fits, DIR/fidelity.json."""
    backgrounds: tuple[Literal["plate", "torso", "white", "random"], ...] = ("plate", "white")
    """Fit each clip with each of these `talksplat fit --background` values; `torso`: over the plate with
    torso Gaussians (fit's torso option: trained on the whole frames too)."""
    preset: Literal["fast", "default", "quality"] = "fast"
    """`talksplat fit --preset`."""
    steps: Annotated[int | None, Range(1, 10000000)] = None
    """Training steps (default: the preset's) (1 to 10000000)."""
    resolution: Annotated[int, Range(64, 4096)] = 256
    """`talksplat prep --resolution`: the crop's size in pixels (64 to 4096)."""
    rig: RigSpec = DEFAULT_RIG
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when available, else the CPU."""


@dataclass
class BenchGpuConfig(ProcessOptions):
    """One table for a GPU machine (what `scripts/gpu_check.sh` prints): CUDA/CPU image parity, render frames/s
    per Gaussian count, size and batch, fit steps/s, drive frames/s with encoding, the encoder alone, the viewer's
    render time and peak GPU memory.  Without a GPU it measures the CPU (with small settings for a quick look)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when torch sees a GPU, else the CPU."""
    parts: tuple[Literal["parity", "render", "fit", "drive", "encoder", "viewer"], ...] = (
        "parity", "render", "fit", "drive", "encoder", "viewer")
    """Which rows to measure."""
    gaussians: Annotated[tuple[int, ...], Range(1, 100000000)] = (10_000, 100_000)
    """Gaussian counts of the render rows (1 to 100000000); the viewer uses the largest."""
    resolution: Annotated[tuple[int, ...], Range(16, 8192)] = (512, 1024)
    """Square sizes of the render rows (16 to 8192)."""
    batch: Annotated[tuple[int, ...], Range(1, 1024)] = (1, 16)
    """Frames per rasterization call of the render rows (1 to 1024)."""
    iters: Annotated[int, Range(1)] = 20
    """Timed repetitions per render and viewer row (at least 1)."""
    warmup: Annotated[int, Range(0)] = 3
    """Untimed repetitions first (at least 0)."""
    fit_resolution: Annotated[tuple[int, ...], Range(16, 8192)] = (256, 512)
    """Image sizes of the fit rows (16 to 8192)."""
    fit_steps: Annotated[int, Range(1)] = 50
    """Timed fit steps (at least 1)."""
    drive_resolution: Annotated[int, Range(16, 8192)] = 1024
    """Output size of the drive and encoder rows, even (16 to 8192)."""
    drive_seconds: Annotated[float, Range(0.5, 3600.0)] = 10.0
    """Generated speech driving the drive row (0.5 to 3600)."""
    drive_per_face: Annotated[int, Range(1, 64)] = 10
    """Gaussians per rig triangle of the drive row's avatar (10: about 95k on the open head) (1 to 64)."""
    drive_batch: Annotated[int, Range(1, 1024)] = 16
    """Frames per render batch of the drive row (1 to 1024)."""
    encoder_frames: Annotated[int, Range(1, 100000)] = 50
    """Frames encoded by the encoder rows (1 to 100000)."""
    viewer_resolution: Annotated[int, Range(16, 8192)] = 1024
    """Longer side of the viewer row's render (16 to 8192)."""
    parity_gaussians: Annotated[int, Range(1, 10000000)] = 10_000
    """Gaussians of the parity avatar (1 to 10000000)."""
    parity_resolution: Annotated[int, Range(16, 4096)] = 256
    """Size of the parity image (16 to 4096)."""
    rig: RigSpec = DEFAULT_RIG
    json: Path | None = None
    """Also write the rows as JSON to this file."""


@dataclass
class BenchEncodeConfig(ProcessOptions):
    """libx264 alone per preset and crf: frames/s, CPU time per frame, bitrate and PSNR of the decoded video
    against the frames that went in (how `--quality`'s settings were chosen)."""

    settings: tuple[str, ...] = ("medium:10", "fast:14", "veryfast:14", "veryfast:16", "veryfast:18",
                                 "superfast:16", "ultrafast:16")
    """Settings to time, each PRESET:CRF (libx264 presets: ultrafast ... veryslow; crf 0 to 51)."""
    resolution: Annotated[int, Range(16, 8192)] = 1024
    """Square frame size, even (16 to 8192)."""
    frames: Annotated[int, Range(1, 100000)] = 50
    """Frames encoded per setting (1 to 100000)."""
    video: Path | None = None
    """Encode this video's frames (centre square, scaled) instead of renders of the textured open head."""
    jobs: Annotated[tuple[int, ...], Range(1, 64)] = (1,)
    """Encoders at once, each on 2-second segments joined without re-encoding (`talksplat drive --encode-jobs`);
    one row per value and setting (1 to 64)."""
