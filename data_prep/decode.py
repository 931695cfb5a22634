"""Streamed video decoding and audio extraction through imageio-ffmpeg's ffmpeg binary.

Everything goes through the ffmpeg executable in a subprocess (imageio-ffmpeg ships no ffprobe,
so `probe_video` parses the stream summary `ffmpeg -i` prints on stderr). Frames come one at a
time from a raw-video pipe, so memory stays bounded however long the video is.

    info = probe_video("clip.mp4")                  # size after rotation, fps, duration, audio
    for frame in iter_frames("clip.mp4", fps=25):   # [H, W, 3] uint8 RGB at a constant 25 fps
        ...
    extract_audio("clip.mp4", "clip.wav")           # 16 kHz mono 16-bit PCM
    samples, rate = read_wav("clip.wav")            # [N] float32 in [-1, 1], Hz
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Iterator

import numpy as np


class VideoError(Exception):
    """A problem with an input video the user can fix; the message is one line starting with the path."""


@dataclass
class VideoInfo:
    """What `probe_video` learns about a file (first video stream, first audio stream).

    width, height: pixels of the displayed frames, i.e. after rotation metadata is applied.
    fps: the source's average frame rate, frames per second.
    duration: seconds.
    rotation: degrees clockwise the stored frames are turned for display (0, 90, 180 or 270),
      the convention of the legacy `rotate` tag.
    audio_sample_rate: Hz, or None without an audio stream.
    """

    path: Path
    width: int
    height: int
    fps: float
    duration: float
    rotation: int
    has_audio: bool
    audio_sample_rate: int | None


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def _parse_rate(text: str) -> float:
    """'29.97' / '30' / '90k' (ffmpeg's rate printing) -> float."""
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def _stream_blocks(stderr: str, kind: str) -> list[list[str]]:
    """Lines of each stream of input #0 whose type is `kind` ('Video' or 'Audio'): the stream
    line first, then its indented Metadata / Side data lines."""
    blocks, current = [], None
    for line in stderr.splitlines():
        if re.match(r"\s*Stream #0:\d+", line):
            current = [line] if f": {kind}:" in line else None
            if current is not None:
                blocks.append(current)
        elif current is not None:
            if re.match(r"\s{4,}", line):
                current.append(line)
            else:
                current = None
    return blocks


def _rotation(block: list[str]) -> int:
    """Clockwise display rotation from a legacy `rotate : 90` tag or display-matrix side data.

    The display matrix angle is counter-clockwise: `rotate=90` shows up as
    `displaymatrix: rotation of -90.00 degrees` (older ffmpeg) and
    `-display_rotation 90` as `Display Matrix: rotation of 90.00 degrees` (ffmpeg 7+).
    """
    text = "\n".join(block[1:])
    m = re.search(r"display\s*matrix: rotation of (-?[\d.]+) degrees", text, re.I)
    if m:
        return int(round(-float(m.group(1)) / 90.0)) * 90 % 360
    m = re.search(r"^\s*rotate\s*:\s*(-?\d+)", text, re.M)
    if m:
        return int(round(float(m.group(1)) / 90.0)) * 90 % 360
    return 0


def _scan_duration(path: Path) -> float | None:
    """Duration in seconds by decoding the first video stream (for containers without one in
    the header, e.g. browser-recorded WebM); None when ffmpeg reports no time."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", proc.stderr)
    if not times:
        return None
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def probe_video(path: str | os.PathLike, min_duration: float = 0.0) -> VideoInfo:
    """Read a video's stream summary; raise VideoError for a missing file, a file ffmpeg cannot
    read, a file without a video stream, or one shorter than `min_duration` seconds."""
    path = Path(path)
    _check_file(path)
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, errors="replace")
    err = proc.stderr  # always exits non-zero: no output file was given
    if "Input #0" not in err:
        raise VideoError(f"{path}: not a video file ({_last_error_line(err)})")
    videos = _stream_blocks(err, "Video")
    if not videos:
        raise VideoError(f"{path}: not a video file (ffmpeg found no video stream)")
    line = videos[0][0]
    size = re.search(r", (\d+)x(\d+)(?![\w])", line)
    if not size:
        raise VideoError(f"{path}: cannot read the frame size from ffmpeg's output: {line.strip()}")
    width, height = int(size.group(1)), int(size.group(2))
    rotation = _rotation(videos[0])
    if rotation in (90, 270):
        width, height = height, width
    rate = re.search(r"([\d.]+k?) fps", line) or re.search(r"([\d.]+k?) tbr", line)
    fps = _parse_rate(rate.group(1)) if rate else 0.0
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", err)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else _scan_duration(path)
    if duration is None:
        raise VideoError(f"{path}: cannot tell the clip's duration")
    if fps <= 0:
        raise VideoError(f"{path}: cannot tell the video's frame rate")
    audios = _stream_blocks(err, "Audio")
    audio_rate = re.search(r"(\d+) Hz", audios[0][0]) if audios else None
    info = VideoInfo(path=path, width=width, height=height, fps=fps, duration=duration, rotation=rotation,
                     has_audio=bool(audios), audio_sample_rate=int(audio_rate.group(1)) if audio_rate else None)
    if duration < min_duration:
        raise VideoError(f"{path}: clip is {duration:.2f} s long, need at least {min_duration:g} s")
    return info


def count_frames(info: VideoInfo, fps: float) -> int:
    """Estimated number of frames `iter_frames(info.path, fps)` yields: round(duration * fps)."""
    return int(round(info.duration * fps))


class FrameStream(Iterator[np.ndarray]):
    """Iterator over [H, W, 3] uint8 RGB frames read from an ffmpeg raw-video pipe.

    ffmpeg starts on the first `next()`. `close()` (also on `with`, on garbage collection, and at
    the end of the stream) kills ffmpeg and reaps it; `process` is the Popen object, or None
    before the first frame was asked for.
    """

    def __init__(self, path: str | os.PathLike, fps: float, max_frames: int | None = None,
                 scale_to: tuple[int, int] | None = None):
        self.info = probe_video(path)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.max_frames = max_frames
        self.width, self.height = scale_to if scale_to is not None else (self.info.width, self.info.height)
        self.process: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._count = 0
        self._done = False
        rate = Fraction(fps).limit_denominator(1001)
        self._filters = f"fps={rate.numerator}/{rate.denominator}"
        if scale_to is not None:
            self._filters += f",scale={self.width}:{self.height}"

    def _start(self) -> None:
        # ffmpeg autorotates before the user filters, so frames arrive at the rotated size.
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(self.info.path),
               "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", self._filters, "-fps_mode", "passthrough",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on it
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self._stderr, bufsize=0)

    def __next__(self) -> np.ndarray:
        if self._done or (self.max_frames is not None and self._count >= self.max_frames):
            self.close()
            raise StopIteration
        if self.process is None:
            self._start()
        n = self.width * self.height * 3
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            chunk = self.process.stdout.readinto(view[got:])
            if not chunk:
                break
            got += chunk
        if got < n:
            self._finish(partial=got > 0)
            raise StopIteration
        self._count += 1
        return np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)

    def _finish(self, partial: bool) -> None:
        """End of the pipe: wait for ffmpeg and raise VideoError if it failed."""
        code = self.process.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")
        self.close()
        if code != 0 or partial:
            raise VideoError(f"{self.info.path}: decoding failed after {self._count} frames "
                             f"({_last_error_line(err) if code else 'truncated frame'})")

    def close(self) -> None:
        """Stop ffmpeg (kill if still running), reap it and release the pipe; idempotent."""
        self._done = True
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def iter_frames(path: str | os.PathLike, fps: float, max_frames: int | None = None,
                scale_to: tuple[int, int] | None = None) -> FrameStream:
    """Decode the first video stream as [H, W, 3] uint8 RGB frames at a constant `fps` (frames per
    second; variable-frame-rate input is resampled by ffmpeg's fps filter), rotation applied.

    H, W are the displayed (rotated) size, or `scale_to=(W, H)` pixels when given. At most
    `max_frames` frames. Raises VideoError (from `probe_video`) before decoding for unusable
    files. Streams from a pipe; close the returned iterator (or use `with`) to stop ffmpeg early.
    """
    return FrameStream(path, fps, max_frames=max_frames, scale_to=scale_to)


def extract_audio(path: str | os.PathLike, out_wav: str | os.PathLike, sample_rate: int = 16000) -> bool:
    """Write the first audio stream as mono 16-bit PCM WAV at `sample_rate` Hz to `out_wav`
    (through a temporary file beside it, then renamed). Returns False, writing nothing, when the
    video has no audio stream."""
    info = probe_video(path)
    if not info.has_audio:
        return False
    out_wav = Path(out_wav)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_wav.name}.", suffix=".tmp", dir=out_wav.parent)
    os.close(fd)
    try:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(info.path),
               "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le",
               "-map_metadata", "-1", "-fflags", "+bitexact", "-f", "wav", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            raise VideoError(f"{info.path}: audio extraction failed ({_last_error_line(proc.stderr)})")
        os.replace(tmp, out_wav)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file: samples [N] float32 in [-1, 1] (channels averaged), sample rate in Hz."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise VideoError(f"{path}: unsupported WAV sample width of {width} bytes")
    return x.reshape(-1, channels).mean(axis=1, dtype=np.float32), rate
