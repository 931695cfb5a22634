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
