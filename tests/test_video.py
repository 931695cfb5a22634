"""H.264 writing through the real ffmpeg of imageio-ffmpeg: frames come back, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest

from talksplat.render.video import VideoWriter, read_video, write_frames


def test_video_roundtrip(tmp_path):
    path = tmp_path / "clip.mp4"
    T, H, W = 12, 48, 64
    with VideoWriter(path, W, H, fps=12) as w:
        for t in range(T):
            frame = np.zeros((H, W, 3), np.float32)
            frame[:, : (t + 1) * W // T] = (0.9, 0.2, 0.1)  # a growing red bar
            w.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    frames, fps = read_video(path)
    assert frames.shape == (T, H, W, 3) and fps == pytest.approx(12)
    # The bar's right edge grows frame by frame (lossy codec: compare the red fraction).
    red = (frames[..., 0] > 128) & (frames[..., 1] < 128)
    widths = red.mean(axis=(1, 2))
    assert np.all(np.diff(widths) > 0)
    assert widths[-1] > 0.95


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 32, 32) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("renderer crashed")
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "x.mp4", 33, 32)
    assert list(tmp_path.iterdir()) == []


def _bars(T: int, H: int = 32, W: int = 48):
    for t in range(T):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[:, : (t + 1) * W // T] = (230, 50, 20)
        yield frame


def test_write_frames_encodes_on_a_thread_in_order(tmp_path):
    import threading

    path = tmp_path / "piped.mp4"
    seen = []

    def produce():
        for f in _bars(20):
            seen.append(threading.current_thread().name)
            yield f

    assert write_frames(VideoWriter(path, 48, 32, fps=10), produce(), queue_size=2) == 20
    assert set(seen) == {threading.current_thread().name}  # the producer ran on the caller's thread
    frames, _ = read_video(path)
    widths = ((frames[..., 0] > 128) & (frames[..., 1] < 128)).mean(axis=(1, 2))
    assert len(frames) == 20 and np.all(np.diff(widths) > 0)
    assert not any(t.name == "talksplat-encode" for t in threading.enumerate())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["piped.mp4"]


def test_write_frames_producer_failure_leaves_nothing(tmp_path):
    def produce():
        yield from _bars(5)
        raise KeyboardInterrupt  # Ctrl-C while rendering

    with pytest.raises(KeyboardInterrupt):
        write_frames(VideoWriter(tmp_path / "x.mp4", 48, 32), produce(), queue_size=1)
    assert list(tmp_path.iterdir()) == []


def test_write_frames_encoder_failure_is_raised_on_the_callers_thread(tmp_path):
    def produce():
        yield from _bars(3)
        yield np.zeros((16, 16, 3), np.uint8)  # wrong size: the encoder thread refuses it
        yield from _bars(50)

    with pytest.raises(ValueError, match="expected"):
        write_frames(VideoWriter(tmp_path / "y.mp4", 48, 32), produce(), queue_size=1)
    assert list(tmp_path.iterdir()) == []


def test_frame_pipeline_context_manager(tmp_path):
    import threading

    from talksplat.render.video import frame_pipeline

    path = tmp_path / "ctx.mp4"
    with frame_pipeline(path, 48, 32, fps=10, queue_size=2) as out:
        for f in _bars(12):
            out.write(f)
        assert not path.exists()  # renamed into place only when the block is left
    assert out.frames == 12 and len(read_video(path)[0]) == 12
    assert not any(t.name == "talksplat-encode" for t in threading.enumerate())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctx.mp4"]

    # an encoder error is raised on the caller's thread (at the latest on leaving) and leaves nothing
    with pytest.raises(ValueError, match="expected"):
        with frame_pipeline(tmp_path / "bad.mp4", 48, 32) as out:
            out.write(np.zeros((16, 16, 3), np.uint8))
    # an error of the caller's leaves nothing either
    with pytest.raises(RuntimeError):
        with frame_pipeline(tmp_path / "stop.mp4", 48, 32) as out:
            for f in _bars(3):
                out.write(f)
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctx.mp4"]


def _smooth(T: int, H: int = 64, W: int = 96) -> np.ndarray:
    """[T, H, W, 3] uint8: a soft blob moving across a gradient (compresses well, so PSNR is meaningful)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        blob = np.exp(-((x - 10 - 2.5 * t) ** 2 + (y - H / 2) ** 2) / 120.0)
        out[t, ..., 0] = 60 + 150 * blob
        out[t, ..., 1] = 40 + x
        out[t, ..., 2] = 90 + 0.5 * y + 20 * np.sin(t / 3)
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def test_segmented_pipeline_joins_segments_in_order_with_the_audio(tmp_path):
    """Three encoders on 7-frame segments: every frame comes back in its place, the audio is muxed, the file is
    tagged as ours, and the segments' folder is gone."""
    import subprocess
    import threading

    from talksplat.core.ffmpeg import ffmpeg_exe, has_own_tag
    from talksplat.driving.audio import write_wav
    from talksplat.render.video import SegmentedPipeline

    T = 31  # four full segments and a short one
    frames = _smooth(T)
    wav = tmp_path / "tone.wav"
    write_wav(wav, (0.2 * np.sin(np.arange(int(16000 * T / 25)) * 0.05)).astype(np.float32), 16000)
    path = tmp_path / "seg.mp4"
    with SegmentedPipeline(path, 96, 64, 25, wav, False, "veryfast", 16, jobs=3, segment=7) as out:
        for f in frames:
            out.write(f)
        assert not path.exists()
    assert out.frames == T
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and fps == pytest.approx(25)
    psnr = _psnr(decoded, frames)
    assert psnr.min() > 40, psnr  # a frame out of place would score far lower against its neighbour's truth
    assert (_psnr(decoded[1:], frames[:-1]) < psnr[1:] - 3).all()  # and the frames are distinguishable
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    assert "Audio: aac" in probe and "Duration: 00:00:01.2" in probe
    assert has_own_tag(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.mp4", "tone.wav"]
    assert not any(t.name.startswith("talksplat-encode") for t in threading.enumerate())


def test_segmented_pipeline_failures_leave_nothing(tmp_path):
    from talksplat.render.video import frame_pipeline

    # an encoder's error (a frame of the wrong size in the second segment) reaches the caller
    with pytest.raises(ValueError, match="expected"):
        with frame_pipeline(tmp_path / "bad.mp4", 96, 64, fps=5, jobs=2) as out:  # 10-frame segments
            for f in _smooth(12):
                out.write(f)
            out.write(np.zeros((16, 16, 3), np.uint8))
            for f in _smooth(30):
                out.write(f)
    # the caller's error (Ctrl-C while rendering) stops the encoders
    with pytest.raises(KeyboardInterrupt):
        with frame_pipeline(tmp_path / "stop.mp4", 96, 64, fps=5, jobs=2) as out:
            for f in _smooth(25):
                out.write(f)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_download_yields_cpu_batches_in_order():
    """render.device.download on the CPU (the CUDA branch: tests/test_cuda.py): the same arrays, in order."""
    import torch

    from talksplat.render.device import download

    batches = [torch.full((2, 4, 6, 3), i, dtype=torch.uint8) for i in range(3)]
    got = list(download(iter(batches)))
    assert [int(a[0, 0, 0, 0]) for a in got] == [0, 1, 2] and all(a.shape == (2, 4, 6, 3) for a in got)


def test_encoder_choice_and_arguments():
    """`--encoder`: libx264 or NVIDIA's h264_nvenc (the bundled ffmpeg has it; this machine has no NVENC, so the
    real probe fails and `auto` stays on libx264; `nvenc` is refused in one line naming the flag)."""
    from talksplat.core.errors import OptionError
    from talksplat.render.video import encoder_args, nvenc_available, pick_encoder

    assert encoder_args("libx264", "veryfast", 16)[:6] == ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt",
                                                           "yuv420p"]
    nv = encoder_args("h264_nvenc", "veryfast", 16)
    assert nv[:2] == ["-c:v", "h264_nvenc"] and nv[nv.index("-cq") + 1] == "16"
    with pytest.raises(ValueError):
        encoder_args("mpeg4", "fast", 10)
    assert pick_encoder("libx264", "cuda") == "libx264" and pick_encoder("auto", "cpu") == "libx264"
    import torch

    if torch.cuda.is_available() and nvenc_available():
        pytest.skip("this machine's GPU has NVENC: the refusal below cannot happen here")
    assert pick_encoder("auto", "cuda") == "libx264"
    with pytest.raises(OptionError, match="--encoder nvenc") as e:
        pick_encoder("nvenc", "cuda")
    assert "\n" not in str(e.value)
