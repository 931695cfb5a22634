"""Video decoding and audio extraction against the real ffmpeg binary (no mocks)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talksplat.data_prep.decode import (VideoError, count_frames, extract_audio, ffmpeg_exe, iter_frames,
                                        probe_video, read_wav)

from conftest import SHARED_DATA

GRID_CLIP = SHARED_DATA / "grid" / "bbaf2n.mpg"


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def lavfi_src(rate: float, seconds: float, size: str = "160x120") -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]


X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    v = {name: d / f"{name}.mp4" for name in ("av", "silent", "rotated", "vfr")}
    # 2 s at 30 fps, 160x120, with a 440 Hz tone at 44.1 kHz.
    ffmpeg(*lavfi_src(30, 2), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2",
           *X264, "-c:a", "aac", str(v["av"]))
    ffmpeg(*lavfi_src(30, 2), *X264, str(v["silent"]))
    # ffmpeg >= 6 ignores `-metadata:s:v:0 rotate=90`; the display matrix is set as an input option.
    ffmpeg("-display_rotation", "90", "-i", str(v["silent"]), "-c", "copy", str(v["rotated"]))
    # 1 s at 30 fps then 1 s at 10 fps: 40 frames over 2 s. (-bf 0: with B-frames the mp4 muxer
    # under-reports this file's duration as 1.87 s.)
    ffmpeg(*lavfi_src(30, 1), *lavfi_src(10, 1), "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
           "-fps_mode", "vfr", *X264, "-bf", "0", str(v["vfr"]))
    return v


def test_probe(videos):
    info = probe_video(videos["av"])
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert info.fps == pytest.approx(30)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.has_audio and info.audio_sample_rate == 44100
    silent = probe_video(videos["silent"])
    assert not silent.has_audio and silent.audio_sample_rate is None


def test_resampled_frame_count_shape_dtype(videos):
    info = probe_video(videos["av"])
    frames = list(iter_frames(videos["av"], fps=25))
    assert abs(len(frames) - 50) <= 1
    assert abs(len(frames) - count_frames(info, 25)) <= 1
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in frames)
    assert frames[0].std() > 10  # the test pattern, not a blank frame


def test_max_frames_and_scale(videos):
    frames = list(iter_frames(videos["av"], fps=10, max_frames=7, scale_to=(80, 64)))
    assert len(frames) == 7
    assert frames[0].shape == (64, 80, 3)


def test_rotation(videos):
    info = probe_video(videos["rotated"])
    # `-display_rotation 90` is counter-clockwise, i.e. 270 degrees clockwise.
    assert (info.width, info.height, info.rotation) == (120, 160, 270)
    upright = next(iter(iter_frames(videos["silent"], fps=5)))
    rotated = next(iter(iter_frames(videos["rotated"], fps=5)))
    assert rotated.shape == (160, 120, 3)
    ccw = np.rot90(upright, k=1).astype(np.float32)
    cw = np.rot90(upright, k=-1).astype(np.float32)
    assert np.abs(rotated - ccw).mean() < 2.0 < np.abs(rotated - cw).mean()


def test_variable_frame_rate_is_resampled(videos):
    info = probe_video(videos["vfr"])
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.fps == pytest.approx(20, abs=0.5)  # average rate: 40 frames / 2 s
    n = sum(1 for _ in iter_frames(videos["vfr"], fps=25))
    assert abs(n - info.duration * 25) <= 1


def test_extract_audio(videos, tmp_path):
    out = tmp_path / "a.wav"
    assert extract_audio(videos["av"], out)
    samples, rate = read_wav(out)
    assert rate == 16000 and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / rate - probe_video(videos["av"]).duration) <= 1 / 25
    assert 0.1 < np.abs(samples).max() <= 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temporary left behind


def test_no_audio_writes_nothing(videos, tmp_path):
    out = tmp_path / "a.wav"
    assert extract_audio(videos["silent"], out) is False
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    text = tmp_path / "clip.txt"
    text.write_text("hello, not a video\n")
    with pytest.raises(VideoError, match="not a video file") as e:
        probe_video(text)
    assert str(e.value).startswith(str(text)) and "\n" not in str(e.value)
    wav = tmp_path / "tone.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", str(wav))
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(wav)
    missing = tmp_path / "x.mp4"
    with pytest.raises(VideoError, match="no such file") as e:
        iter_frames(missing, fps=25)
    assert str(e.value).startswith(str(missing))


def test_min_duration(videos):
    with pytest.raises(VideoError, match=r"clip is 2\.00 s long, need at least 3 s"):
        probe_video(videos["av"], min_duration=3)


def test_early_close_stops_ffmpeg(videos):
    stream = iter_frames(videos["av"], fps=25)
    next(stream)
    proc = stream.process
    assert proc is not None and proc.poll() is None  # still running: the pipe holds it back
    stream.close()
    assert proc.returncode is not None
    assert not os.path.exists(f"/proc/{proc.pid}")  # killed and reaped, not a zombie
    with pytest.raises(StopIteration):
        next(stream)

    with iter_frames(videos["av"], fps=25) as stream:
        for _ in stream:
            break
    assert stream.process.returncode is not None


@pytest.mark.skipif(not GRID_CLIP.is_file(), reason=f"GRID clip not found at {GRID_CLIP} (shared test data)")
def test_grid_clip(tmp_path):
    info = probe_video(GRID_CLIP)
    assert (info.width, info.height, info.rotation) == (360, 288, 0)
    assert info.fps == pytest.approx(25)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    assert info.has_audio
    frames = sum(1 for _ in iter_frames(GRID_CLIP, fps=25))
    assert abs(frames - 75) <= 1
    assert extract_audio(GRID_CLIP, tmp_path / "grid.wav")
    samples, rate = read_wav(tmp_path / "grid.wav")
    assert rate == 16000
    assert len(samples) / rate == pytest.approx(2.98, abs=1 / 25)


def test_rotation_from_older_ffmpeg_output():
    """Older ffmpeg prints a `rotate` tag and/or a lower-case `displaymatrix` line (counter-clockwise angle)."""
    from talksplat.data_prep.decode import _rotation, _stream_blocks

    stderr = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mp4':
  Duration: 00:00:04.00, start: 0.000000, bitrate: 124 kb/s
  Stream #0:0(und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 1920x1080, 29.97 fps, 30 tbr (default)
    Metadata:
      rotate          : 90
      handler_name    : VideoHandler
    Side data:
      displaymatrix: rotation of -90.00 degrees
  Stream #0:1(und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, mono, fltp (default)
"""
    video = _stream_blocks(stderr, "Video")[0]
    assert _rotation(video) == 90
    assert _rotation([line for line in video if "displaymatrix" not in line]) == 90
    assert _rotation([line for line in video if "rotate" not in line]) == 90
    assert _rotation([video[0], "    Side data:", "      displaymatrix: rotation of 180.00 degrees"]) == 180
    assert len(_stream_blocks(stderr, "Audio")) == 1
