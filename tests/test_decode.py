"""Video decoding and audio extraction against the real ffmpeg binary (no mocks)."""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from talksplat.core.ffmpeg import ffmpeg_exe
from talksplat.data_prep.decode import VideoError, count_frames, extract_audio, iter_frames, probe_video, read_wav

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


# ---------------------------------------------------------------- damaged and truncated files

def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cut(src: Path, dst: Path, share: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * share)])
    return dst


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    """A healthy 3 s, 25 fps clip with audio (MP4 with the index first), its remuxes (index last,
    MPEG-TS, Matroska), copies cut at 30% / 70% of their bytes, and a clip whose audio runs 0.5 s
    past its video."""
    d = tmp_path_factory.mktemp("damaged")
    v = {"whole": d / "whole.mp4", "nofs": d / "nofs.mp4", "ts": d / "whole.ts", "mkv": d / "whole.mkv",
         "longaudio": d / "longaudio.mp4"}
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "3", *X264, "-c:a", "aac", "-movflags", "+faststart", str(v["whole"]))
    ffmpeg("-i", str(v["whole"]), "-c", "copy", str(v["nofs"]))
    ffmpeg("-i", str(v["whole"]), "-c", "copy", str(v["ts"]))
    ffmpeg("-i", str(v["whole"]), "-c", "copy", str(v["mkv"]))
    ffmpeg(*lavfi_src(25, 3), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=3.5", *X264,
           "-c:a", "aac", "-movflags", "+faststart", str(v["longaudio"]))
    for name in ("whole", "nofs", "ts", "mkv"):
        for pct in (30, 70):
            src = v[name]
            v[f"{name}{pct}"] = _cut(src, d / f"{src.stem}{pct}{src.suffix}", pct / 100)
    return v


def _frames_and_warnings(path: Path, **kw) -> tuple[list[np.ndarray], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(iter_frames(path, fps=25, **kw))
    return frames, [str(w.message) for w in caught]


def _one_line_about(message: str, path: Path) -> None:
    assert message.startswith(f"{path}: ") and "\n" not in message, message


def test_healthy_clips_decode_whole_without_warnings(damaged):
    hashes = {k: _sha256(p) for k, p in damaged.items()}
    for name in ("whole", "nofs", "ts", "mkv", "longaudio"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails the test
            info = probe_video(damaged[name])
            assert info.damage is None
            frames = list(iter_frames(damaged[name], fps=25))
            assert len(frames) == 75, name
        assert len(list(iter_frames(damaged[name], fps=25, allow_damaged=True))) == 75
    assert probe_video(damaged["longaudio"]).duration == pytest.approx(3.5, abs=0.05)  # 88 promised, 75 there
    assert {k: _sha256(p) for k, p in damaged.items()} == hashes


@pytest.mark.parametrize("name", ["whole30", "whole70"])
def test_truncated_mp4_raises_or_keeps_readable_frames(damaged, name, tmp_path):
    from talksplat.core.errors import InputError
    from talksplat.data_prep.decode import DamagedVideoWarning

    path = damaged[name]
    before = _sha256(path)
    # The MP4's boxes say it is longer than it is: probe_video already knows.
    for call in (lambda: probe_video(path), lambda: iter_frames(path, fps=25),
                 lambda: extract_audio(path, tmp_path / "a.wav")):
        with pytest.raises(VideoError, match="damaged or truncated video") as e:
            call()
        _one_line_about(str(e.value), path)
        assert isinstance(e.value, InputError)
    assert probe_video(path, allow_damaged=True).damage.startswith("its 'mdat' box runs to byte")

    frames, caught = _frames_and_warnings(path, allow_damaged=True)
    assert len(caught) == 1, caught
    _one_line_about(caught[0], path)
    assert f"kept the {len(frames)} readable frames of about 75 (" in caught[0] and "partial file" in caught[0]
    assert (5 <= len(frames) <= 30) if name == "whole30" else (35 <= len(frames) <= 65)
    assert all(f.shape == (120, 160, 3) for f in frames) and frames[-1].std() > 10

    with pytest.warns(DamagedVideoWarning, match="kept .* s of audio") as rec:
        assert extract_audio(path, tmp_path / "a.wav", allow_damaged=True)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    samples, rate = read_wav(tmp_path / "a.wav")
    assert 0 < len(samples) / rate < 2.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
    assert _sha256(path) == before


@pytest.mark.parametrize("name", ["nofs30", "nofs70"])
def test_mp4_cut_before_its_index_is_not_a_video(damaged, name):
    path = damaged[name]
    before = _sha256(path)
    for allow in (False, True):
        with pytest.raises(VideoError, match=r"not a video file \(damaged or truncated: moov atom not found\)") as e:
            iter_frames(path, fps=25, allow_damaged=allow)
        _one_line_about(str(e.value), path)
    assert _sha256(path) == before


@pytest.mark.parametrize("name", ["ts30", "ts70"])
def test_truncated_stream_is_judged_at_its_end(damaged, name):
    """MPEG-TS has no index to compare with: the stream starts, and ffmpeg's complaints at the end decide."""
    path = damaged[name]
    before = _sha256(path)
    stream = iter_frames(path, fps=25)
    n = 0
    with pytest.raises(VideoError, match="damaged or truncated video: decoded") as e:
        for _ in stream:
            n += 1
    assert n > 0
    _one_line_about(str(e.value), path)
    frames, caught = _frames_and_warnings(path, allow_damaged=True)
    assert len(frames) == n and len(caught) == 1
    _one_line_about(caught[0], path)
    assert f"kept the {n} readable frames" in caught[0]
    # Stopped early (max_frames, close) the stream is not judged: no error, no warning.
    frames, caught = _frames_and_warnings(path, max_frames=n - 2)
    assert len(frames) == n - 2 and caught == []
    assert _sha256(path) == before


def test_truncated_matroska(damaged):
    path = damaged["mkv70"]
    with pytest.raises(VideoError, match="damaged or truncated video: its Segment runs to byte") as e:
        probe_video(path)
    _one_line_about(str(e.value), path)
    frames, caught = _frames_and_warnings(path, allow_damaged=True)
    assert len(caught) == 1 and "File ended prematurely" in caught[0] and 35 <= len(frames) <= 65


def test_far_fewer_frames_than_promised(damaged):
    """No complaint from ffmpeg, but the stream ends long before the container's duration."""
    stream = iter_frames(damaged["whole"], fps=25)
    stream.info.duration = 6.0  # as if the container promised 150 frames
    with pytest.raises(VideoError, match=r"decoded 75 of about 150 frames \(the video ends after 3\.00 s of the "
                                         r"file's 6\.00 s; ffmpeg reported no error\)"):
        list(stream)
    stream = iter_frames(damaged["whole"], fps=25, allow_damaged=True)
    stream.info.duration = 3.9  # 98 promised, 23 missing: within the tolerance (1 s, 25%)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(stream)) == 75 and stream.damage is None


def test_all_grid_clips_are_whole(shared_data, tmp_path):
    clips = sorted((shared_data / "grid").glob("*.mpg"))
    assert clips
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for clip in clips:
            assert abs(sum(1 for _ in iter_frames(clip, fps=25)) - 75) <= 1, clip
            assert extract_audio(clip, tmp_path / "a.wav")


def test_damage_lines_from_real_ffmpeg_output():
    """What ffmpeg 9 prints with `-loglevel level+warning` for files cut short (see tests above)."""
    from talksplat.core.ffmpeg import last_error_line
    from talksplat.data_prep.decode import _damage_line

    mp4 = """[h264 @ 0x55e01acd7a40] [error] Invalid NAL unit size (405 > 269).
[h264 @ 0x55e01acd7a40] [error] missing picture in access unit with size 273
[in#0/mov,mp4,m4a,3gp,3g2,mj2 @ 0x55e01ac060c0] [error] stream 0, offset 0x43b8: partial file
[vist#0:0/h264 @ 0x55e01ac64cc0] [dec:h264 @ 0x55e01ac86400] [error] Decoding error: Invalid data found when processing input
"""
    assert _damage_line(mp4) == "stream 0, offset 0x43b8: partial file"
    assert last_error_line(mp4) == "Decoding error: Invalid data found when processing input"
    mpg = """[in#0/mpeg @ 0x55b0bae360c0] [warning] Packet corrupt (stream = 1, dts = 108745).
[mpeg1video @ 0x55b0bae6c9c0] [error] ac-tex damaged at 4 6
[vist#0:0/mpeg1video @ 0x55b0bae69000] [dec:mpeg1video @ 0x55b0bae62840] [warning] corrupt decoded frame
"""
    assert _damage_line(mpg) == "Packet corrupt (stream = 1, dts = 108745)"
    healthy = """[aist#0:1/pcm_s16le @ 0x55937ca695c0] [warning] Guessed Channel Layout: mono
[swscaler @ 0x7f07b0025e80] [warning] deprecated pixel format used, make sure you did set range correctly
[h264 @ 0x5] [info] something about a truncated title
"""
    assert _damage_line(healthy) is None
