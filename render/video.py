"""H.264 MP4 writing through the ffmpeg binary that ships with ``imageio-ffmpeg``.

Frames stream to ffmpeg as they come (memory stays bounded); the file is written to a temporary
path beside the target and renamed when complete, so a failure, a Ctrl-C or a kill never leaves a
half-written MP4 under the target's name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from talksplat.core.errors import OptionError, OutputError
from talksplat.core.ffmpeg import OWN_TAG, ffmpeg_exe, last_error_line
from talksplat.core.files import partial_prefix
from talksplat.core.process import child_kwargs


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (torch or numpy) -> [H, W, 3] uint8."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


#: libx264 (preset, crf) per output quality.  "standard", the default of `talksplat drive` / `render` / `run`, was
#: chosen with `talksplat bench encode` (README: figures); "archival" is the earlier default, near lossless and
#: about 3x slower to encode.
QUALITY: dict[str, tuple[str, int]] = {"standard": ("veryfast", 16), "archival": ("medium", 10)}


def encoder_args(codec: str, preset: str, crf: int) -> list[str]:
    """ffmpeg's video-encoder arguments: libx264 at ``preset`` and ``crf``, or h264_nvenc at the same quality level
    as its constant quality (``-cq``; its own preset p5, high quality)."""
    if codec == "h264_nvenc":
        return ["-c:v", "h264_nvenc", "-preset", "p5", "-tune", "hq", "-rc", "vbr", "-cq", str(crf), "-b:v", "0",
                "-pix_fmt", "yuv420p"]
    if codec != "libx264":
        raise ValueError(f"unknown video encoder {codec!r}")
    return ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-crf", str(crf)]


@functools.cache
def nvenc_available() -> bool:
    """Whether the bundled ffmpeg can encode with h264_nvenc here: a GPU with NVENC and its driver (data-centre
    GPUs such as the H100 and H200 have none).  Tried once per process with two tiny frames."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
           "color=c=gray:s=256x256:d=0.08:r=25", *encoder_args("h264_nvenc", "", 23), "-f", "null", "-"]
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                              **child_kwargs()).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pick_encoder(choice: str, device: torch.device | str) -> str:
    """`--encoder`: ``auto`` is h264_nvenc beside a GPU that has NVENC, else libx264; ``nvenc`` insists (an
    OptionError naming the flag when this machine cannot); ``libx264`` is libx264."""
    if choice == "libx264":
        return "libx264"
    if choice == "nvenc":
        if not nvenc_available():
            raise OptionError("--encoder nvenc: ffmpeg cannot open NVIDIA's encoder here (no GPU with NVENC, or no "
                              "driver for it; H100 and H200 have none): use --encoder libx264")
        return "h264_nvenc"
    if choice != "auto":
        raise OptionError(f"--encoder {choice}: expected auto, libx264 or nvenc")
    return "h264_nvenc" if torch.device(device).type == "cuda" and nvenc_available() else "libx264"


class VideoWriter:
    """Context manager writing an H.264 (yuv420p) MP4, optionally with an audio track muxed in.

    Usage::

        with VideoWriter("out.mp4", width, height, fps=25) as w:
            for frame in frames:          # [H, W, 3] float in [0, 1] or uint8
                w.write(frame)

    Width and height must be even (yuv420p).  ``audio_path``: any file ffmpeg reads; muxed as AAC;
    with ``shortest`` the output ends with the shorter stream (pass False when the audio was already
    cut to the video's length: ``-shortest`` can drop the last video frame).  ``preset`` and ``crf``: libx264's
    speed preset and constant rate factor (lower is better; 10 is near lossless); the defaults are
    :data:`QUALITY` "archival" (for videos that are inputs: the demo's subject, test clips); the commands'
    outputs go through :func:`frame_pipeline` and its ``quality``.  ``threads``: libx264's threads (default: its
    own choice, about 1.5 per core).  ``codec``: ``libx264`` or ``h264_nvenc`` (NVIDIA's encoder, see
    :func:`pick_encoder`; ``crf`` is then its constant-quality level).

    Frames stream to an ffmpeg child process that dies with us (even on ``kill -9``); the file is
    written as ``.NAME.partial-<pid>-*.mp4`` beside the target, tagged as talksplat's own
    (``comment`` metadata, see :func:`talksplat.core.ffmpeg.has_own_tag`), and renamed when complete.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = 25.0,
                 crf: int = QUALITY["archival"][1], audio_path: str | os.PathLike | None = None, shortest: bool = True,
                 preset: str = QUALITY["archival"][0], threads: int | None = None, codec: str = "libx264"):
        if width % 2 or height % 2:
            raise ValueError(f"{path}: H.264 needs even width and height, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=partial_prefix(self.path.name), suffix=self.path.suffix or ".mp4",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        rate = Fraction(fps).limit_denominator(1001)
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{rate.numerator}/{rate.denominator}",
               "-i", "pipe:0"]
        if audio_path is not None:
            cmd += ["-i", str(audio_path), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac"]
            cmd += ["-shortest"] if shortest else []
        cmd += encoder_args(codec, preset, crf)
        cmd += ["-threads", str(threads)] if threads else []
        cmd += ["-movflags", "+faststart",
                "-metadata", f"comment={OWN_TAG}", "-f", "mp4", str(self._tmp)]
        self._stderr = tempfile.TemporaryFile()
        try:
            # its own session: a Ctrl-C in the terminal reaches us, and we stop ffmpeg ourselves
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr, start_new_session=True, **child_kwargs())
        except BaseException:
            self._stderr.close()
            self._tmp.unlink(missing_ok=True)
            raise
        self.frames = 0

    def write(self, frame: torch.Tensor | np.ndarray) -> None:
        """Append one frame: [H, W, 3] float in [0, 1] or uint8."""
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8):
            frame = to_uint8(frame)
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"{self.path}: frame of shape {frame.shape}, expected {(self.height, self.width, 3)}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            raise OutputError(f"{self.path}: the video encoder stopped ({self._error(self._proc)})") from None
        self.frames += 1

    def _error(self, proc: subprocess.Popen) -> str:
        proc.wait()
        self._stderr.seek(0)
        return last_error_line(self._stderr.read().decode(errors="replace"))

    def close(self, ok: bool = True) -> None:
        """Finish the file and rename it into place (``ok``), or stop ffmpeg and remove it; idempotent."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            if ok and self.frames > 0:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                if proc.wait() != 0:
                    raise OutputError(f"{self.path}: video encoding failed ({self._error(proc)})")
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
            else:
                proc.kill()
                proc.wait()
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._stderr.close()
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


class FramePipeline:
    """Context manager encoding frames on a background thread while the caller's thread produces them.

    Usage::

        with frame_pipeline("out.mp4", width, height, fps=25, audio_path=wav) as out:
            for frame in render():        # on this thread: [H, W, 3] uint8 (or float in [0, 1])
                out.write(frame)          # queued; a thread named ``talksplat-encode`` feeds ffmpeg

    Rendering and encoding overlap, and the queue of ``queue_size`` frames keeps memory bounded.  An
    encoder error (a wrong frame size, ffmpeg stopping) is raised on the caller's thread, by the next
    ``write`` or on leaving the block.  Leaving the block closes the :class:`VideoWriter`: the file is
    renamed into place when every frame went through, removed when the caller or the encoder raised
    (Ctrl-C included), so nothing half-written is left under the target's name.
    """

    def __init__(self, writer: VideoWriter, queue_size: int = 16):
        self.writer = writer
        self._pending: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._encode, name="talksplat-encode", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            writer.close(ok=False)
            raise
        self._closed = False

    def _encode(self) -> None:
        try:
            while (item := self._pending.get()) is not None:
                self.writer.write(item)
        except BaseException as e:  # noqa: BLE001 - reported on the producer's thread
            self._failure.append(e)
            while self._pending.get() is not None:  # keep the producer from blocking on a full queue
                pass

    @property
    def frames(self) -> int:
        """Frames encoded so far (all of them once the block is left)."""
        return self.writer.frames

    def write(self, frame: np.ndarray) -> None:
        """Queue one frame for the encoder (blocks while the queue is full); raises the encoder's error."""
        if self._failure:
            raise self._failure[0]
        self._pending.put(frame)

    def close(self, ok: bool = True) -> None:
        """Wait for the encoder and finish the file (``ok`` and no encoder error) or remove it; raises the
        encoder's error when ``ok``; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not ok:  # drop what is queued: the encoder must not work through it
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._pending.get_nowait()
            self._pending.put(None)
            self._thread.join()
        finally:
            self.writer.close(ok=ok and not self._failure)
        if ok and self._failure:
            raise self._failure[0]

    def __enter__(self) -> "FramePipeline":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


class SegmentedPipeline:
    """Context manager encoding frames on ``jobs`` ffmpeg processes at once, for a producer faster than one
    encoder (a GPU): the frames are cut into segments of ``segment`` frames (default :data:`SEGMENT_SECONDS`), each
    encoded into its own MP4 by the next free worker thread (its ffmpeg child gets ``threads`` libx264 threads;
    default: the cores shared among the ``jobs``), and the segments are joined
    with ffmpeg's concat demuxer without re-encoding (``-c:v copy``); the audio is muxed in at the join.

    Same use and guarantees as :class:`FramePipeline` (``write``, ``frames``, ``close``; the file appears under
    its name only when complete; an encoder error is raised on the caller's thread).  Every segment starts
    with a key frame.  Memory: at most ``jobs`` segments of frames are held (``write`` blocks while ``jobs``
    segments are still encoding).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, audio_path, shortest: bool,
                 preset: str, crf: int, jobs: int, segment: int | None = None, threads: int | None = None):
        if width % 2 or height % 2:
            raise ValueError(f"{path}: H.264 needs even width and height, got {width}x{height}")
        segment = max(1, round(SEGMENT_SECONDS * fps)) if segment is None else segment
        threads = max(1, (os.cpu_count() or 1) // jobs) if threads is None else threads
        if jobs < 1 or segment < 1:
            raise ValueError(f"{path}: jobs ({jobs}) and segment ({segment}) must be at least 1")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self._audio, self._shortest, self._preset, self._crf = audio_path, shortest, preset, crf
        self._threads, self._segment = threads, segment
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix=partial_prefix(self.path.name), dir=self.path.parent))
        self._slots = threading.BoundedSemaphore(jobs)
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="talksplat-encode")
        self._futures: list[Future] = []
        self._current: queue.Queue | None = None
        self._in_segment = 0
        self._written = 0
        self._closed = False
        self._cancel = threading.Event()

    def _encode_segment(self, index: int, frames: queue.Queue) -> int:
        ended = False
        try:
            with VideoWriter(self._dir / f"segment_{index:05d}.mp4", self.width, self.height, fps=self.fps,
                             crf=self._crf, preset=self._preset, threads=self._threads) as w:
                while (frame := frames.get()) is not None:
                    if self._cancel.is_set():
                        raise OutputError(f"{self.path}: cancelled")
                    w.write(frame)
                ended = True
            return w.frames
        finally:
            while not ended and frames.get() is not None:  # a failed segment: read to its end, nobody waits
                pass
            self._slots.release()

    def _raise_failure(self) -> None:
        for f in self._futures:
            if f.done() and f.exception() is not None:
                raise f.exception()

    @property
    def frames(self) -> int:
        """Frames handed to the encoders so far (all of them encoded once the block is left)."""
        return self._written

    def write(self, frame: np.ndarray) -> None:
        """Queue one frame ([H, W, 3] uint8, or float in [0, 1]) for its segment's encoder; raises an encoder's
        error."""
        self._raise_failure()
        if self._current is None:
            self._slots.acquire()  # at most `jobs` segments in flight
            self._current = queue.Queue()
            self._futures.append(self._pool.submit(self._encode_segment, len(self._futures), self._current))
        self._current.put(frame)
        self._written += 1
        self._in_segment += 1
        if self._in_segment == self._segment:
            self._end_segment()

    def _end_segment(self) -> None:
        if self._current is not None:
            self._current.put(None)
        self._current, self._in_segment = None, 0

    def _join(self) -> None:
        listing = self._dir / "segments.txt"
        listing.write_text("".join(f"file 'segment_{i:05d}.mp4'\n" for i in range(len(self._futures))))
        fd, tmp = tempfile.mkstemp(prefix=partial_prefix(self.path.name), suffix=self.path.suffix or ".mp4",
                                   dir=self.path.parent)
        os.close(fd)
        tmp = Path(tmp)
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
               "-f", "concat", "-safe", "0", "-i", str(listing)]
        if self._audio is not None:
            cmd += ["-i", str(self._audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac"]
            cmd += ["-shortest"] if self._shortest else []
        cmd += ["-c:v", "copy", "-movflags", "+faststart", "-metadata", f"comment={OWN_TAG}", "-f", "mp4", str(tmp)]
        try:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  **child_kwargs())
            if done.returncode != 0:
                raise OutputError(f"{self.path}: joining the encoded segments failed "
                                  f"({last_error_line(done.stderr.decode(errors='replace'))})")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def close(self, ok: bool = True) -> None:
        """Wait for the encoders and join the segments into the file (``ok`` and no encoder error), or remove
        everything; raises the first encoder error when ``ok``; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not ok:  # the encoders stop at their next frame; their files go with the folder
                self._cancel.set()
            self._end_segment()
            self._pool.shutdown(wait=True)
            if ok:
                self._raise_failure()
                if self._written:
                    self._join()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "SegmentedPipeline":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


#: Seconds of video per segment when several encoders work at once (each segment starts with a key frame).
SEGMENT_SECONDS = 2.0


def encode_jobs(device: torch.device | str) -> int:
    """Default encoders working at once for `talksplat drive`: 1 on the CPU (rendering needs the cores), a quarter
    of the cores (at most 8) beside a GPU, which renders faster than one libx264 encodes."""
    if torch.device(device).type != "cuda":
        return 1
    return max(1, min(8, (os.cpu_count() or 1) // 4))


def frame_pipeline(path: str | os.PathLike, width: int, height: int, fps: float = 25.0,
                   audio_path: str | os.PathLike | None = None, shortest: bool = True, queue_size: int = 16,
                   quality: str = "standard", jobs: int = 1,
                   codec: str = "libx264") -> FramePipeline | SegmentedPipeline:
    """A :class:`FramePipeline` into a new :class:`VideoWriter` (same arguments; ``quality``: a :data:`QUALITY`
    name; ``codec``: see :class:`VideoWriter`); with ``jobs`` > 1 (libx264) a :class:`SegmentedPipeline` of that
    many encoders (segments of :data:`SEGMENT_SECONDS`, the cores shared among them)."""
    preset, crf = QUALITY[quality]
    if codec != "libx264":
        return FramePipeline(VideoWriter(path, width, height, fps=fps, crf=crf, audio_path=audio_path,
                                         shortest=shortest, preset=preset, codec=codec), queue_size=queue_size)
    if jobs > 1:
        return SegmentedPipeline(path, width, height, fps, audio_path, shortest, preset, crf, jobs)
    return FramePipeline(VideoWriter(path, width, height, fps=fps, crf=crf, audio_path=audio_path,
                                     shortest=shortest, preset=preset), queue_size=queue_size)


def write_frames(writer: VideoWriter, frames: Iterable[np.ndarray], queue_size: int = 16) -> int:
    """Encode ``frames`` into ``writer`` through a :class:`FramePipeline`: the producer (``frames``, e.g. a
    generator that renders batches on the GPU or the CPU) runs on the calling thread, the encoder on
    another.  The writer is closed here: renamed into place when every frame went through, removed when
    the producer or the encoder raised (Ctrl-C included); the first error is re-raised.  Returns the
    number of frames written.
    """
    with FramePipeline(writer, queue_size=queue_size) as out:
        for frame in frames:
            out.write(frame)
    return out.frames


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole (short) video: ([T, H, W, 3] uint8, fps).  For tests and small clips."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in gen]
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8), float(meta["fps"])
