"""Options of `talksplat drive` (DriveConfig) and of the audio-to-rig predictor's training (PredictorConfig:
`talksplat fit --driver.*`, `talksplat run --driver.*`).

Torch-free: the CLI reads these for `--help` without importing the code that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions
from talksplat.rigs.spec import RecordedRigSpec


@dataclass
class PredictorConfig:
    """The subject's audio-to-rig predictor (expression and jaw from speech), trained on the dataset's
    audio and the tracked (or fit-tuned) parameters, with voice augmentation."""

    enabled: bool = True
    """Train the predictor after the avatar (needs the dataset's audio)."""
    steps: Annotated[int, Range(1, 10000000)] = 1000
    """Training steps (batches of audio windows) (1 to 10000000)."""
    encoder: str = "logmel"
    """Audio features: `logmel` (built in), `phonetic` (log-mel + visemes recognised offline by pocketsphinx:
    speaker-independent), or `hf:DIR`, a local wav2vec2/HuBERT directory (extra `[hf]`)."""
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
    lambda_viseme_prior: Annotated[float, Range(0.0, 1e6)] = 0.1
    """Weight of the pull of the viseme head (`--driver.encoder phonetic`) towards the rig's hand-set viseme
    prior (the open head's ARKit mouth shapes; FLAME has none); 0: the prior only starts it (0 to 1e+06)."""
    use_tuned: bool = True
    """Train on the fit-tuned parameters (tuned_params.npz) when present, else the tracked ones."""
    extra_data: tuple[Path, ...] = ()
    """More prepared datasets (`talksplat prep` folders, same rig and frame rate) whose speech and tracked
    parameters join the training, every time step: more videos of the subject, or other speakers' (their
    mouth motion in this rig's units) for a predictor that has heard more voices."""
    seed: Annotated[int, Range(0)] = 0
    """Random seed (at least 0)."""


@dataclass
class DriveConfig(ProcessOptions):
    """Drive a fitted avatar with speech: `talksplat drive AVATAR --audio speech.wav --out talk.mp4`."""

    avatar: tyro.conf.Positional[Path]
    """A `talksplat fit` output folder (avatar, audio predictor, tuned parameters)."""
    audio: Path | None = None
    """Speech: any file ffmpeg reads (wav, mp3, m4a, flac, or a video's audio track)."""
    text: str | None = None
    """Text to speak with the local TTS (espeak-ng) instead of --audio."""
    out: Path = Path("drive.mp4")
    """Output MP4; beside it OUT.npz (the predicted rig parameters) and OUT.wav (the audio as muxed)."""
    overwrite: bool = False
    """Replace OUT.mp4, OUT.npz and OUT.wav (and OUT.csv) when they exist (only files talksplat wrote; never an
    input)."""
    arkit_csv: bool = False
    """Also write OUT.csv: the 52 ARKit blendshape curves plus head and eye rotations per frame in the Live Link
    Face CSV layout (for Unreal, Unity, Blender); needs a rig with ARKit units (the open head)."""
    frame: Literal["auto", "source", "head"] = "auto"
    """`source`: the whole frame of the subject's video (its size, or --max-size), the head rendered over the
    plate (the subject's own background and torso) where it sat; needs an avatar fitted over a plate (a
    monocular video prepared by this version). `head`: a square crop around the head (--resolution) over the
    --background colour or image. `auto`: `source` when the avatar has a plate and --camera is 0,0, else `head`."""
    max_size: Annotated[int, Range(16, 8192)] = 1920
    """`--frame source`: the longer side of the output at most this many pixels (the source frame scaled down,
    never up) (16 to 8192)."""
    resolution: Annotated[int, Range(16, 8192)] = 1024
    """`--frame head`: output width and height in pixels (even) (16 to 8192)."""
    fps: Annotated[float, Range(1, 240)] = 25.0
    """Output frame rate (1 to 240)."""
    pose: Literal["still", "replay", "idle"] = "replay"
    """Head motion: still, the subject's own tracked motion looped (replay), or a generated sway (idle)."""
    background: str = "auto"
    """`auto` (the plate with --frame source, else white), `white`, `black`, `#rrggbb`, or an image file
    (scaled to fill the frame)."""
    camera: str = "0,0"
    """Camera `yaw,pitch` in degrees around the head (0,0 = the training camera's direction; yaw -360 to
    360, pitch -89 to 89)."""
    rig: RecordedRigSpec = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA (gsplat) when available, else the CPU rasterizer."""
    batch: Annotated[int, Range(1, 1024)] = 16
    """Frames posed and rendered per batch; on a GPU one gsplat call each (1 to 1024)."""
    quality: Literal["standard", "archival"] = "standard"
    """H.264 settings: `standard` (libx264 veryfast, crf 16: about 3x faster to encode than `archival`, 42+ dB
    PSNR against the rendered frames) or `archival` (medium, crf 10: near lossless, larger files)."""
    encoder: Literal["auto", "libx264", "nvenc"] = "auto"
    """Video encoder: `auto` is NVIDIA's (h264_nvenc) when rendering on a GPU that has NVENC (H100 and H200 have
    none), else libx264; `nvenc` fails in one line where it cannot run."""
    encode_jobs: Annotated[int | None, Range(1, 64)] = None
    """libx264 encoders at once, each on 2-second segments joined without re-encoding; default: 1 on the CPU
    (rendering needs the cores), a quarter of the cores (at most 8) beside a GPU (1 to 64)."""
    voice: str = "en-us"
    """espeak-ng voice for --text."""
    mouth_amplitude: Literal["predicted", "subject"] = "predicted"
    """`predicted`: the mouth as the audio predictor outputs it; `subject`: its motion scaled (at most 2.5x,
    never damped) so the mouth moves as much as the subject's own in training (livelier on voices the
    predictor never heard, at some cost in lip vertex error)."""
    blinks: bool = True
    """Add blinks at a natural rate."""
    seed: Annotated[int, Range(0)] = 0
    """Random seed (idle motion, blink times) (at least 0)."""
    quiet: bool = False
    """No progress display."""


@dataclass
class SyncEvalConfig(ProcessOptions):
    """Lip sync of a fitted avatar measured against real speakers: `talksplat eval sync AVATAR VIDEO... --out DIR`.

    Each VIDEO is a real recording of someone speaking (any speaker).  The avatar is driven by its audio (the
    fit's predictor) and, as baselines, by the audio's loudness envelope alone and by nothing (the mean
    expression); FaceMesh runs on the renders and on the video, and DIR/metrics.json gets per video and method
    the mouth-opening correlation (lag 0 and best lag within --max-lag), lip landmark distance, amplitude
    ratio, closure recall and open-in-silence rate, and their means."""

    avatar: tyro.conf.Positional[Path]
    """A `talksplat fit` output folder (avatar, audio predictor, tuned parameters)."""
    videos: tyro.conf.Positional[tuple[Path, ...]]
    """Real recordings of someone speaking (video with an audio track), each its own truth."""
    out: Path = Path("eval-sync")
    """Output folder: metrics.json (and, with --plot, one PNG per video)."""
    overwrite: bool = False
    """Replace an existing evaluation folder at --out (only one talksplat wrote, holding nothing else)."""
    plot: bool = False
    """Also write VIDEO-STEM.png per video: the mouth-opening curves over time (real, predictor, envelope)."""
    max_frames: Annotated[int | None, Range(1)] = None
    """Use only the first N frames of each video (at least 1)."""
    mouth_amplitude: Literal["predicted", "subject"] = "predicted"
    """`predicted`: the mouth as the audio predictor outputs it; `subject`: its motion scaled (at most 2.5x,
    never damped) so the mouth moves as much as the subject's own in training (livelier on voices the
    predictor never heard, at some cost in lip vertex error)."""
    max_lag: Annotated[int, Range(0, 25)] = 3
    """Best-lag search range for the correlation, in frames either way (0 to 25)."""
    resolution: Annotated[int, Range(64, 2048)] = 256
    """Side of the square head renders FaceMesh reads, pixels (64 to 2048)."""
    rig: RecordedRigSpec = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA (gsplat) when available, else the CPU rasterizer."""
    batch: Annotated[int, Range(1, 1024)] = 8
    """Frames posed and rendered per batch (1 to 1024)."""
    quiet: bool = False
    """No progress display."""
