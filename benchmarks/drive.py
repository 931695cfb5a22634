"""`talksplat bench drive`: wall time of `talksplat drive` per second of audio, per resolution and device.

Without ``--avatar`` it builds a throw-away fit folder: a fresh open-head avatar (``--per-face``
Gaussians per rig triangle), tuned parameters with some head motion, and an audio predictor trained
for a few steps (its quality does not matter for speed).  The driving audio is ``--audio`` or a
generated speech-like signal of ``--seconds``.  Everything counts: audio decoding, prediction,
posing, rasterization, H.264 encoding and AAC muxing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from talksplat.core.ffmpeg import SAMPLE_RATE

from .config import BenchDriveConfig


def speech_like(seconds: float, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
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
    from talksplat.driving.predictor import choose_layout
    from talksplat.driving.train import train_predictor
    from talksplat.driving.config import PredictorConfig
    from talksplat.fitting import fit_folder
    from talksplat.rigs import DEFAULT_RIG, RigSequence, load_rig

    rig = load_rig(DEFAULT_RIG)
    fit_folder.write_avatar(out, init_avatar(rig, per_face=per_face), extra={})
    T = int(len(wave) / SAMPLE_RATE * fps)
    t = np.arange(T) / fps
    seq = RigSequence.zeros(T, rig.num_expression, np.zeros(rig.num_shape))
    expr, jaw = seq.expression, seq.jaw
    expr[:, rig.expression_group("jaw_open")] = (0.3 + 0.3 * np.sin(2 * np.pi * 2 * t))[:, None]
    jaw[:, 0] = 0.1 + 0.1 * np.sin(2 * np.pi * 2 * t)
    seq.global_rot[:, 1] = 0.05 * np.sin(2 * np.pi * 0.2 * t)
    fit_folder.write_tuned(out, seq)
    layout = choose_layout(rig, expr)
    drv = train_predictor(wave, fps, layout.pack(expr, jaw), np.arange(T), layout, PredictorConfig(steps=10),
                          rig_checksum=rig.checksum)
    fit_folder.write_driver(out, drv)
    return out


def bench_drive(cfg: BenchDriveConfig) -> list[dict]:
    from talksplat.driving.audio import write_wav
    from talksplat.driving.config import DriveConfig
    from talksplat.driving.drive import run_drive
    from talksplat.driving.fit_reader import open_fit

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
        n = open_fit(avatar).header["num_gaussians"]
        for dev in cfg.device:
            for res in cfg.resolution:
                if dev == "cuda" and not torch.cuda.is_available():
                    rows.append({"device": dev, "resolution": res, "skipped": "no CUDA device"})
                    continue
                r = run_drive(DriveConfig(avatar=avatar, audio=audio, out=d / f"out{res}{dev}.mp4", resolution=res,
                                          frame="head", device=dev, batch=cfg.batch, pose="replay", quiet=True))
                rows.append({"device": dev, "resolution": res, "gaussians": n, **{k: r[k] for k in (
                    "frames", "audio_seconds", "seconds", "predict_seconds", "render_encode_seconds", "realtime_factor")}})
    return rows


def rows_text(rows: list[dict]) -> str:
    from rich.table import Table

    from .text import table_text

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
    return table_text(table)


if __name__ == "__main__":
    import tyro

    print(rows_text(bench_drive(tyro.cli(BenchDriveConfig))))
