"""Streamed video decoding and audio extraction through imageio-ffmpeg's ffmpeg binary.

Everything goes through the ffmpeg executable in a subprocess (imageio-ffmpeg ships no ffprobe,
so `probe_video` parses the stream summary `ffmpeg -i` prints on stderr). Frames come one at a
time from a raw-video pipe, so memory stays bounded however long the video is.

    info = probe_video("clip.mp4")                  # size after rotation, fps, duration, audio
    for frame in iter_frames("clip.mp4", fps=25):   # [H, W, 3] uint8 RGB at a constant 25 fps
        ...
    extract_audio("clip.mp4", "clip.wav")           # 16 kHz mono 16-bit PCM
    samples, rate = read_wav("clip.wav")            # [N] float32 in [-1, 1], Hz

Damaged or truncated files (a recording cut short, a half-copied download) raise VideoError, one line
starting with the path.  Cheap signs are checked by `probe_video` up front (an MP4 / Matroska file
shorter than its own boxes say); the rest when the stream ends: ffmpeg's decoder and demuxer
complaints ("partial file", "File ended prematurely", "corrupt decoded frame", ...) or far fewer
frames than the container's duration promises.  With ``allow_damaged=True`` the readable frames
(or audio) are kept and one `DamagedVideoWarning` says how many.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import warnings
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from talksplat.core.errors import InputError
from talksplat.core.ffmpeg import SAMPLE_RATE, ffmpeg_exe
from talksplat.core.ffmpeg import last_error_line, log_lines
from talksplat.core.process import child_kwargs


class VideoError(InputError):
    """A problem with an input video the user can fix; the message is one line starting with the path."""


class DamagedVideoWarning(UserWarning):
    """Issued (once per stream) instead of a VideoError when ``allow_damaged=True`` keeps what is readable
    of a damaged or truncated file; the message is one line starting with the path."""


@dataclass
class VideoInfo:
    """What `probe_video` learns about a file (first video stream, first audio stream).

    width, height: pixels of the displayed frames, i.e. after rotation metadata is applied.
    fps: the source's average frame rate, frames per second.
    duration: seconds.
    rotation: degrees clockwise the stored frames are turned for display (0, 90, 180 or 270),
      the convention of the legacy `rotate` tag.
    audio_sample_rate: Hz, or None without an audio stream.
    damage: why the file looks damaged or truncated, as far as a cheap look at the container tells
      (only ever set with ``probe_video(..., allow_damaged=True)``, else that raises); None if it looks whole.
    """

    path: Path
    width: int
    height: int
    fps: float
    duration: float
    rotation: int
    has_audio: bool
    audio_sample_rate: int | None
    damage: str | None = None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")


#: What ffmpeg prints about a damaged or truncated file, most telling first.  Decoder and demuxer
#: messages of ffmpeg 7-9 seen on cut-short MP4 (faststart), Matroska/WebM, MPEG-TS, MPEG-PS and AVI files.
_DAMAGE_PATTERNS = (
    "partial file",               # mov/mp4: "stream 0, offset 0x9e16: partial file"
    "ended prematurely",          # matroska/webm: "File ended prematurely"
    "moov atom not found",        # mp4 without its index (cut before the moov at the end)
    "truncat",                    # "Truncating packet", "truncated ..."
    "error while decoding",       # h264: "error while decoding MB 7 6"
    "corrupt",                    # "corrupt decoded frame", "Packet corrupt (...)", "corrupt input packet"
    "damaged",                    # mpeg1/2: "ac-tex damaged at 4 6"
    "invalid data found",         # "Decoding error: Invalid data found when processing input"
    "invalid nal unit size",
    "error splitting the input",
    "missing picture in access unit",
    "concealing",                 # h264: "concealing 117 DC, 117 AC, 117 MV errors in P frame"
    "overread",                   # mjpeg
    "eoi missing",                # mjpeg: the frame's end marker is missing
)
#: The subset that `probe_video` trusts in a plain `ffmpeg -i` (not "invalid data": a text file says that).
_PROBE_DAMAGE_PATTERNS = ("partial file", "ended prematurely", "moov atom not found", "truncat")


def _damage_line(text: str, patterns: tuple[str, ...] = _DAMAGE_PATTERNS) -> str | None:
    """ffmpeg's most telling complaint about damage on its stderr (see _DAMAGE_PATTERNS), or None.
    Only warning-or-worse lines count when the log has levels (``-loglevel level+warning``)."""
    lines = [msg for level, msg in log_lines(text) if level not in ("trace", "debug", "verbose", "info")]
    for pattern in patterns:
        for msg in lines:
            if pattern in msg.lower():
                return msg
    return None


def _read_at_most(f: IO[bytes], limit: int = 1 << 20) -> str:
    """A stderr file as text; of a longer one (a badly damaged file can make ffmpeg very chatty) its
    first and last `limit` / 2 bytes."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size <= limit:
        return f.read().decode(errors="replace")
    head = f.read(limit // 2)
    f.seek(size - limit // 2)
    return (head + b"\n" + f.read()).decode(errors="replace")


def _mp4_damage(f: IO[bytes], size: int) -> str | None:
    """Walk the top-level boxes of an ISO-BMFF file (MP4, MOV, 3GP); say so when the last one runs
    past the end of the file.  No verdict (None) for anything that does not parse as boxes."""
    pos = 0
    for _ in range(1_000_000):
        if pos >= size:
            return None
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return f"the file ends inside the header of a box at byte {pos}"
        box_size, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if not all(32 <= c < 127 for c in kind):
            return None
        header = 8
        if box_size == 1:
            if len(head) < 16:
                return f"the file ends inside the header of its '{kind.decode()}' box at byte {pos}"
            box_size, header = int.from_bytes(head[8:16], "big"), 16
        elif box_size == 0:  # runs to the end of the file
            return None
        if box_size < header:
            return None
        if pos + box_size > size:
            return (f"its '{kind.decode()}' box runs to byte {pos + box_size} but the file ends at byte {size}")
        pos += box_size
    return None


def _ebml_vint(f: IO[bytes], keep_marker: bool) -> tuple[int, int] | None:
    """One EBML variable-length integer: (value, length in bytes), or None at the end / on garbage."""
    first = f.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None
    raw = int.from_bytes(first + rest, "big")
    return (raw if keep_marker else raw & ((1 << (7 * length)) - 1)), length


def _matroska_damage(f: IO[bytes], size: int) -> str | None:
    """A Matroska / WebM file whose Segment (of known size) runs past the end of the file."""
    f.seek(0)
    element = _ebml_vint(f, keep_marker=True)  # the EBML header
    header_size = _ebml_vint(f, keep_marker=False)
    if element is None or header_size is None:
        return None
    f.seek(f.tell() + header_size[0])
    element, segment_size = _ebml_vint(f, keep_marker=True), _ebml_vint(f, keep_marker=False)
    if element is None or element[0] != 0x18538067 or segment_size is None:
        return None
    value, length = segment_size
    if value == (1 << (7 * length)) - 1:  # unknown size (live / browser recordings)
        return None
    end = f.tell() + value
    return f"its Segment runs to byte {end} but the file ends at byte {size}" if end > size else None


def _container_damage(path: Path) -> str | None:
    """A cheap look at the container: is the file shorter than its own structure says? (MP4/MOV by
    their boxes, Matroska/WebM by the Segment's size; other containers: None.)"""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"):
                return _mp4_damage(f, size)
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return _matroska_damage(f, size)
    except OSError:
        return None
    return None


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
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", **child_kwargs())
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", proc.stderr)
    if not times:
        return None
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def probe_video(path: str | os.PathLike, min_duration: float = 0.0, allow_damaged: bool = False) -> VideoInfo:
    """Read a video's stream summary; raise VideoError for a missing file, a file ffmpeg cannot
    read, a file without a video stream, or one shorter than `min_duration` seconds.

    A file that a cheap look shows to be cut short (an MP4 / Matroska file shorter than its own
    boxes say) raises ``"<path>: damaged or truncated video: <why>"``; with `allow_damaged` the reason
    goes to ``VideoInfo.damage`` instead.  An MP4 cut before its index (moov atom) is unreadable:
    ``"<path>: not a video file (damaged or truncated: moov atom not found)"`` either way."""
    path = Path(path)
    _check_file(path)
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, errors="replace", **child_kwargs())
    err = proc.stderr  # always exits non-zero: no output file was given
    if "Input #0" not in err:
        damage = _damage_line(err, _PROBE_DAMAGE_PATTERNS)
        reason = f"damaged or truncated: {damage}" if damage else last_error_line(err)
        raise VideoError(f"{path}: not a video file ({reason})")
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
    # What the demuxer said while opening the file, not the stream summary (metadata is free text).
    damage = _container_damage(path) or _damage_line(err.split("Input #0")[0], _PROBE_DAMAGE_PATTERNS)
    if damage and not allow_damaged:
        raise VideoError(f"{path}: damaged or truncated video: {damage}")
    info = VideoInfo(path=path, width=width, height=height, fps=fps, duration=duration, rotation=rotation,
                     has_audio=bool(audios), audio_sample_rate=int(audio_rate.group(1)) if audio_rate else None,
                     damage=damage)
    if duration < min_duration:
        raise VideoError(f"{path}: clip is {duration:.2f} s long, need at least {min_duration:g} s")
    return info


def count_frames(info: VideoInfo, fps: float) -> int:
    """Estimated number of frames `iter_frames(info.path, fps)` yields: round(duration * fps)."""
    return int(round(info.duration * fps))


#: A stream that ends without any complaint from ffmpeg is still damaged when more than this share of the
#: frames the container's duration promises is missing, and more than MISSING_SECONDS of them.  The
#: container's duration is that of its longest stream: an audio track may run on past the video (0.5 s
#: in the tests; phones and screen recorders rarely exceed 0.1 s), so the bar is high.  Truncations that
#: ffmpeg notices are caught by their stderr line whatever the count.
MISSING_SHARE = 0.25
MISSING_SECONDS = 1.0


class FrameStream(Iterator[np.ndarray]):
    """Iterator over [H, W, 3] uint8 RGB frames read from an ffmpeg raw-video pipe.

    ffmpeg starts on the first `next()`. `close()` (also on `with`, on garbage collection, and at
    the end of the stream) kills ffmpeg and reaps it; `process` is the Popen object, or None
    before the first frame was asked for.

    At the natural end of the stream (not after `max_frames` or `close()`) the file is judged: ffmpeg's
    complaints on stderr (see _DAMAGE_PATTERNS), damage `probe_video` found, or too few frames
    (see MISSING_SHARE) raise VideoError
    ``"<path>: damaged or truncated video: decoded <n> of about <expected> frames (<ffmpeg's line>)"``;
    with `allow_damaged` the frames read so far stand and one DamagedVideoWarning
    ``"<path>: damaged or truncated video: kept the <n> readable frames of about <expected> (<...>)"``
    is issued instead (`damage` then holds its text; None while the stream looks whole).  " of about
    <expected>" is left out when the container promises no more than were decoded.
    """

    def __init__(self, path: str | os.PathLike, fps: float, max_frames: int | None = None,
                 scale_to: tuple[int, int] | None = None, allow_damaged: bool = False):
        self.info = probe_video(path, allow_damaged=allow_damaged)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.max_frames = max_frames
        self.allow_damaged = allow_damaged
        self.damage: str | None = None
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
        # ffmpeg autorotates before the user filters, so frames arrive at the rotated size.  Warnings
        # too (with their level), as the demuxers report corrupt packets as warnings.
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+warning", "-i", str(self.info.path),
               "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", self._filters, "-fps_mode", "passthrough",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on it
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self._stderr, bufsize=0, **child_kwargs())

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

    def expected_frames(self) -> int:
        """About how many frames the container promises: round(duration * fps), at most `max_frames`."""
        expected = count_frames(self.info, self.fps)
        return min(expected, self.max_frames) if self.max_frames is not None else expected

    def _finish(self, partial: bool) -> None:
        """End of the pipe: wait for ffmpeg; raise VideoError if it failed or the file is damaged
        (with `allow_damaged` and some frames read, warn once instead)."""
        code = self.process.wait()
        err = _read_at_most(self._stderr)
        self.close()
        n, path = self._count, self.info.path
        keep = self.allow_damaged and n > 0
        if code != 0 and not (keep and code > 0):
            raise VideoError(f"{path}: decoding failed after {n} frames "
                             f"({last_error_line(err) if code else 'truncated frame'})")
        expected = self.expected_frames()
        missing = expected - n
        reason = (_damage_line(err) or self.info.damage
                  or (f"ffmpeg failed: {last_error_line(err)}" if code else None)
                  or ("ffmpeg stopped in the middle of a frame" if partial else None)
                  or (f"the video ends after {n / self.fps:.2f} s of the file's {self.info.duration:.2f} s; "
                      "ffmpeg reported no error"
                      if missing > max(MISSING_SHARE * expected, MISSING_SECONDS * self.fps) else None))
        if reason is None:
            return
        # A container that re-estimates its duration from what is there (MPEG-PS/TS, AVI) may promise fewer.
        of = f" of about {expected}" if n < expected else ""
        if not keep:
            raise VideoError(f"{path}: damaged or truncated video: decoded {n}{of} frames ({reason})")
        self.damage = f"{path}: damaged or truncated video: kept the {n} readable frames{of} ({reason})"
        warnings.warn(self.damage, DamagedVideoWarning, stacklevel=3)

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
                scale_to: tuple[int, int] | None = None, allow_damaged: bool = False) -> FrameStream:
    """Decode the first video stream as [H, W, 3] uint8 RGB frames at a constant `fps` (frames per
    second; variable-frame-rate input is resampled by ffmpeg's fps filter), rotation applied.

    H, W are the displayed (rotated) size, or `scale_to=(W, H)` pixels when given. At most
    `max_frames` frames. Raises VideoError (from `probe_video`) before decoding for unusable
    files, and at the end of the stream for damaged or truncated ones unless `allow_damaged`
    (then: the readable frames and one DamagedVideoWarning; see FrameStream). Streams from a pipe;
    close the returned iterator (or use `with`) to stop ffmpeg early.
    """
    return FrameStream(path, fps, max_frames=max_frames, scale_to=scale_to, allow_damaged=allow_damaged)


def extract_audio(path: str | os.PathLike, out_wav: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
                  allow_damaged: bool = False) -> bool:
    """Write the first audio stream as mono 16-bit PCM WAV at `sample_rate` Hz to `out_wav`
    (through a temporary file beside it, then renamed). Returns False, writing nothing, when the
    video has no audio stream.

    A damaged or truncated file raises VideoError ``"<path>: damaged or truncated video: <ffmpeg's
    line> (reading its audio)"`` (or probe_video's message); with `allow_damaged` the readable audio
    is written and one DamagedVideoWarning ``"<path>: damaged or truncated video: kept <s> s of audio
    (<ffmpeg's line>)"`` is issued.  A failed ffmpeg raises ``"<path>: audio extraction failed (<ffmpeg's line>)"``."""
    from talksplat.core.files import atomic_write

    info = probe_video(path, allow_damaged=allow_damaged)
    if not info.has_audio:
        return False
    with atomic_write(out_wav) as tmp:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+warning", "-y", "-i", str(info.path),
               "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le",
               "-map_metadata", "-1", "-fflags", "+bitexact", "-f", "wav", str(tmp)]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              **child_kwargs())
        if proc.returncode != 0:
            raise VideoError(f"{info.path}: audio extraction failed ({last_error_line(proc.stderr)})")
        reason = _damage_line(proc.stderr) or info.damage
        if reason is not None:
            if not allow_damaged:
                raise VideoError(f"{info.path}: damaged or truncated video: {reason} (reading its audio)")
            with wave.open(str(tmp), "rb") as w:
                seconds = w.getnframes() / w.getframerate()
            warnings.warn(f"{info.path}: damaged or truncated video: kept {seconds:.2f} s of audio ({reason})",
                          DamagedVideoWarning, stacklevel=2)
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
