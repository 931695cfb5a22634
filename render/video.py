"""H.264 MP4 writing through the ffmpeg binary that ships with ``imageio-ffmpeg``.

Frames stream to ffmpeg as they come (memory stays bounded); the file is written to a temporary
path beside the target and renamed when complete, so a failure never leaves a half-written MP4.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (torch or numpy) -> [H, W, 3] uint8."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class VideoWriter:
    """Context manager writing an H.264 (yuv420p) MP4, optionally with an audio track muxed in.

    Usage::

        with VideoWriter("out.mp4", width, height, fps=25) as w:
            for frame in frames:          # [H, W, 3] float in [0, 1] or uint8
                w.write(frame)

    Width and height must be even (yuv420p).  ``audio_path``: any file ffmpeg reads; muxed as AAC;
    with ``shortest`` the output ends with the shorter stream (pass False when the audio was already
    cut to the video's length: ``-shortest`` can drop the last video frame).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = 25.0,
                 quality: float = 8.0, audio_path: str | os.PathLike | None = None, shortest: bool = True):
        if width % 2 or height % 2:
            raise ValueError(f"{path}: H.264 needs even width and height, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix or ".mp4",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        import imageio_ffmpeg

        self._gen = imageio_ffmpeg.write_frames(
            str(self._tmp), (width, height), fps=fps, quality=quality, codec="libx264",
            pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"] + (["-shortest"] if audio_path and shortest else []),
            audio_path=str(audio_path) if audio_path else None, audio_codec="aac" if audio_path else None)
        self._gen.send(None)
        self.frames = 0

    def write(self, frame: torch.Tensor | np.ndarray) -> None:
        """Append one frame: [H, W, 3] float in [0, 1] or uint8."""
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8):
            frame = to_uint8(frame)
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"{self.path}: frame of shape {frame.shape}, expected {(self.height, self.width, 3)}")
        self._gen.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        try:
            self._gen.close()
        finally:
            if ok and self.frames > 0:
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole (short) video: ([T, H, W, 3] uint8, fps).  For tests and small clips."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in gen]
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8), float(meta["fps"])
