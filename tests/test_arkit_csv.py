"""`talksplat drive --arkit-csv`: rig parameters -> the Live Link Face CSV (driving/arkit_csv.py)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from talksplat.core.errors import OptionError
from talksplat.driving.arkit_csv import (BLENDSHAPE_COUNT, CURVES, HEADER, ROTATIONS, check_arkit_rig, is_own_csv,
                                         npz_to_arkit_csv, timecode, write_arkit_csv, yaw_pitch_roll,
                                         rotation_matrices)
from talksplat.rigs.open_head import ARKIT_NAMES
from talksplat.rigs.sequence import RigSequence

# The header row of a real Live Link Face take (the reference the module's docstring cites).
TAKE_HEADER = (
    "Timecode,BlendshapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll"
)


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _sequence(rig, T=12, seed=0) -> RigSequence:
    """T frames on ``rig``: random units in [0, 1] (some out of range), the jaw opening over frames 6..,
    a small head and eye motion, and fps."""
    rng = np.random.default_rng(seed)
    seq = RigSequence.zeros(T, rig.num_expression, np.zeros(rig.num_shape, np.float32))
    expr = rng.uniform(-0.2, 1.2, size=(T, rig.num_expression)).astype(np.float32)
    jaw = np.zeros((T, 3), np.float32)
    jaw[6:, 0] = 0.25
    g = rng.normal(scale=0.1, size=(T, 3)).astype(np.float32)
    eyes = rng.normal(scale=0.1, size=(T, 2, 3)).astype(np.float32)
    seq = seq.with_frames(expression=expr, jaw=jaw, global_rot=g, eyes=eyes)
    seq.extras["fps"] = np.asarray(25.0)
    return seq


def test_header_is_the_take_header_and_covers_the_52_arkit_units():
    assert ",".join(HEADER) == TAKE_HEADER
    assert len(HEADER) == 63 and len(CURVES) == 52 and len(ROTATIONS) == 9 and BLENDSHAPE_COUNT == 61
    assert sorted(c.lower() for c in CURVES) == sorted(n.lower() for n in ARKIT_NAMES)


def test_rows_of_an_open_head_sequence(open_rig, tmp_path):
    seq = _sequence(open_rig)
    jaw_col = [c.lower() for c in CURVES].index(open_rig.assets.expression_names[
        open_rig.assets.expression_groups["jaw_open"][0]].lower())
    expr = seq.expression.copy()
    expr[:, open_rig.assets.expression_groups["jaw_open"][0]] = 0.1  # the same unit value in every frame
    seq = seq.with_frames(expression=expr)
    path = write_arkit_csv(tmp_path / "talk.csv", seq, open_rig, fps=25.0)
    rows = _read(path)
    drive_npz = RigSequence(seq.shape, seq.frames, {"fps": np.float32(25.0), "audio": np.asarray("talk.wav")})
    drive_npz.save(tmp_path / "talk.npz")  # the drive's OUT.npz beside it
    assert rows[0] == list(HEADER) and is_own_csv(path)
    body = rows[1:]
    assert len(body) == len(seq)
    assert all(len(r) == 63 and r[1] == "61" for r in body)
    values = np.array([[float(v) for v in r[2:]] for r in body])
    curves, rot = values[:, :52], values[:, 52:]
    assert curves.min() >= 0.0 and curves.max() <= 1.0
    assert curves.min() == 0.0 and curves.max() == 1.0  # the out-of-range units are clipped
    assert np.abs(rot).max() <= 1.0 and np.abs(rot).max() > 0.01
    # the jaw rotation opens the mouth in the curve too: frames 6.. (jaw +0.25 rad) > frames ..5 (closed)
    jaw_open = curves[:, jaw_col]
    assert np.allclose(jaw_open[:6], 0.1, atol=1e-5)
    assert (jaw_open[6:] > 0.5).all()
    # a unit that is not the jaw's is written as it is (clipped)
    other = [c.lower() for c in CURVES].index(open_rig.assets.expression_names[0].lower())
    assert np.allclose(curves[:, other], np.clip(seq.expression[:, 0], 0, 1), atol=1e-5)
    # timecodes: HH:MM:SS:FF.mmm, one frame apart at 25 fps
    times = []
    for r in body:
        hh, mm, ss, rest = r[0].split(":")
        ff, sub = rest.split(".")
        assert int(ff) < 25 and len(sub) == 3
        times.append(int(hh) * 3600 + int(mm) * 60 + int(ss) + (int(ff) + int(sub) / 1000) / 25)
    assert np.allclose(np.diff(times), 1 / 25) and times[0] == 0


def test_timecode_rolls_over_and_stays_monotonic():
    assert timecode(0, 25) == "00:00:00:00.000"
    assert timecode(24, 25) == "00:00:00:24.000"
    assert timecode(25, 25) == "00:00:01:00.000"
    assert timecode(25 * 3661 + 3, 25) == "01:01:01:03.000"
    for fps in (29.97, 23.976, 60.0):
        def seconds(tc):
            hh, mm, ss, rest = tc.split(":")
            return int(hh) * 3600 + int(mm) * 60 + int(ss) + float(rest) / fps
        t = [seconds(timecode(i, fps)) for i in range(400)]
        assert np.allclose(t, np.arange(400) / fps, atol=1e-3 / fps + 1e-9)
        assert all(float(timecode(i, fps).rsplit(":", 1)[1]) < math.ceil(fps) for i in range(400))


def test_rotation_signs():
    """Head yaw/pitch/roll in the rig frame (+x the subject's left, +y up, +z out of the face)."""
    a = 0.3
    ypr = yaw_pitch_roll(rotation_matrices(np.array([[0, a, 0], [a, 0, 0], [0, 0, a]])))
    assert np.allclose(ypr, [[-a, 0, 0], [0, -a, 0], [0, 0, a]], atol=1e-6)  # FRotator: yaw right, chin up +


def test_npz_conversion_and_non_arkit_rig(open_rig, sphere_rig, tmp_path):
    seq = _sequence(open_rig, T=5)
    seq.save(tmp_path / "talk.npz")
    out = npz_to_arkit_csv(tmp_path / "talk.npz", open_rig)
    assert out == tmp_path / "talk.csv" and len(_read(out)) == 6
    with pytest.raises(OptionError) as e:
        check_arkit_rig(sphere_rig)
    msg = str(e.value)
    assert "\n" not in msg and "--arkit-csv needs a rig with ARKit blendshapes" in msg
    assert sphere_rig.name in msg and "use OUT.npz" in msg
    sseq = RigSequence.zeros(3, sphere_rig.num_expression, np.zeros(sphere_rig.num_shape))
    with pytest.raises(OptionError):
        write_arkit_csv(tmp_path / "x.csv", sseq, sphere_rig, 25.0)
    assert not (tmp_path / "x.csv").exists()


def test_csv_output_is_checked_with_the_others(tmp_path):
    from talksplat.core.errors import OutputError
    from talksplat.driving.config import DriveConfig
    from talksplat.driving.drive import check_drive_outputs

    cfg = DriveConfig(avatar=tmp_path / "fit", audio=tmp_path / "speech.wav", out=tmp_path / "talk.mp4",
                      arkit_csv=True)
    (tmp_path / "talk.csv").write_text("name,value\n")
    with pytest.raises(OutputError, match="already exists"):
        check_drive_outputs(cfg, [])
    cfg.overwrite = True
    with pytest.raises(OutputError, match="not written by talksplat"):
        check_drive_outputs(cfg, [])
    (tmp_path / "talk.csv").write_text(",".join(HEADER) + "\n" + "00:00:00:00.000,61\n")
    with pytest.raises(OutputError, match="not written by talksplat"):
        check_drive_outputs(cfg, [])  # a Live Link Face take has the header too: the user's file
    seq = RigSequence.zeros(2, 52, np.zeros(3, np.float32))
    seq.extras.update(fps=np.float32(25.0), audio=np.asarray("talk.wav"))  # as drive writes OUT.npz
    seq.save(tmp_path / "talk.npz")
    (tmp_path / "talk.csv").write_text(",".join(HEADER) + "\n" + "00:00:00:00.000,61\n" * 2)
    check_drive_outputs(cfg, [])  # ours (rows = the frames of the drive's OUT.npz beside it): replaced
    (tmp_path / "talk.csv").write_text(",".join(HEADER) + "\n" + "00:00:00:00.000,61\n" * 3)
    with pytest.raises(OutputError, match="not written by talksplat"):
        check_drive_outputs(cfg, [])  # another length: not the CSV of this drive
    cfg.arkit_csv = False
    (tmp_path / "talk.csv").write_text("name,value\n")
    check_drive_outputs(cfg, [])  # without the flag OUT.csv is not an output
