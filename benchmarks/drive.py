"""`talksplat bench drive`: wall time of `talksplat drive` per second of audio, per resolution and device.

Without ``--avatar`` it builds a throw-away fit folder: a fresh open-head avatar (``--per-face``
Gaussians per rig triangle), tuned parameters with some head motion, and an audio predictor trained
for a few steps (its quality does not matter for speed).  The driving audio is ``--audio`` or a
generated speech-like signal of ``--seconds``.  Everything counts: audio decoding, prediction,
posing, rasterization, H.264 encoding and AAC muxing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch

from talksplat.core.checks import Range
from talksplat.core.config import ProcessOptions


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


def speech_like(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """A deterministic buzz with syllable-rate loudness changes and pauses: [N] float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 20 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, 1) * (np.sin(2 * np.pi * 0.25 * t) > -0.6)
    return (0.2 * x * env + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def make_bench_fit(out: Path, per_face: int, wave: np.ndarray, fps: float = 25.0) -> Path:
    """A fit folder with a fresh avatar, moving tuned parameters and a briefly trained predictor."""
    from talksplat.avatar import init_avatar
    from talksplat.avatar.io import save_avatar
    from talksplat.driving.predictor import choose_layout
    from talksplat.driving.train import train_predictor
    from talksplat.fitting.config import DriverConfig
    from talksplat.rigs import DEFAULT_RIG, load_rig

    rig = load_rig(DEFAULT_RIG)
    out.mkdir(parents=True, exist_ok=True)
    save_avatar(init_avatar(rig, per_face=per_face), out / "avatar.safetensors", extra={})
    T = int(len(wave) / 16_000 * fps)
    t = np.arange(T) / fps
    expr = np.zeros((T, rig.num_expression), np.float32)
    expr[:, rig.expression_group("jaw_open")] = (0.3 + 0.3 * np.sin(2 * np.pi * 2 * t))[:, None]
    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = 0.1 + 0.1 * np.sin(2 * np.pi * 2 * t)
    rot = np.zeros((T, 3), np.float32)
    rot[:, 1] = 0.05 * np.sin(2 * np.pi * 0.2 * t)
    np.savez(out / "tuned_params.npz", shape=np.zeros(rig.num_shape, np.float32), expression=expr, jaw=jaw,
             global_rot=rot, neck=np.zeros((T, 3), np.float32), eyes=np.zeros((T, 2, 3), np.float32),
             translation=np.tile(np.float32([0, 0, 0]), (T, 1)))
    layout = choose_layout(rig, expr)
    drv = train_predictor(wave, fps, layout.pack(expr, jaw), np.arange(T), layout, DriverConfig(steps=10),
                          rig_checksum=rig.checksum)
    drv.save(out / "driver.safetensors")
    return out


def bench_drive(cfg: BenchDriveConfig) -> list[dict]:
    from talksplat.avatar.io import read_header
    from talksplat.driving.audio import write_wav
    from talksplat.driving.drive import DriveConfig, run_drive

    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        audio = cfg.audio
        if audio is None:
            wave = speech_like(cfg.seconds)
            audio = write_wav(d / "speech.wav", wave)
        else:
            from talksplat.driving.audio import load_audio

            wave = load_audio(audio)
        avatar = cfg.avatar or make_bench_fit(d / "fit", cfg.per_face, wave)
        n = read_header(Path(avatar) / "avatar.safetensors")["num_gaussians"]
        for dev in cfg.device:
            for res in cfg.resolution:
                if dev == "cuda" and not torch.cuda.is_available():
                    rows.append({"device": dev, "resolution": res, "skipped": "no CUDA device"})
                    continue
                r = run_drive(DriveConfig(avatar=avatar, audio=audio, out=d / f"out{res}{dev}.mp4", resolution=res,
                                          device=dev, batch=cfg.batch, pose="replay", quiet=True))
                rows.append({"device": dev, "resolution": res, "gaussians": n, **{k: r[k] for k in (
                    "frames", "audio_seconds", "seconds", "predict_seconds", "render_encode_seconds", "realtime_factor")}})
    return rows


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="talksplat bench drive (audio -> predictor -> render -> H.264 + AAC)")
    for col in ("device", "resolution", "gaussians", "audio s", "wall s", "predict s", "render+encode s",
                "s per s of audio", "x real time"):
        table.add_column(col, justify="right")
    for r in rows:
        if "skipped" in r:
            table.add_row(r["device"], str(r["resolution"]), "-", "-", "-", "-", "-", f"skipped: {r['skipped']}", "-")
        else:
            table.add_row(r["device"], str(r["resolution"]), f"{r['gaussians']:,}", f"{r['audio_seconds']:.1f}",
                          f"{r['seconds']:.1f}", f"{r['predict_seconds']:.2f}", f"{r['render_encode_seconds']:.1f}",
                          f"{r['realtime_factor']:.2f}", f"{1 / r['realtime_factor']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    import tyro

    print_rows(bench_drive(tyro.cli(BenchDriveConfig)))
