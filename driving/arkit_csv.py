"""Rig parameters -> the Live Link Face CSV: ARKit blendshape curves for Unreal, Unity, Blender, Maya.

    check_arkit_rig(rig)                                   # OptionError unless the rig has the 52 ARKit units
    write_arkit_csv("talk.csv", seq, rig, fps=25.0)        # one row per frame of a RigSequence
    npz_to_arkit_csv("talk.npz", rig)                      # an existing drive OUT.npz -> talk.csv

The layout is the one Epic's Live Link Face iPhone app writes for a take (63 columns)::

    Timecode,BlendshapeCount,EyeBlinkLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,...,RightEyeRoll
    00:00:00:00.000,61,0.000000,...

* :data:`HEADER` is the format's definition: the header row byte for byte, as a real capture has it
  (``BlendshapeCount``, lower-case s; Jaw and Mouth Left/Right in the order ``JawRight,JawLeft`` and
  ``MouthRight,MouthLeft``, which is not ARKit's alphabetical order).  Verified against: the unit test
  of a Live Link Face exporter that compares its header with "a real LiveLinkFace capture's own header
  row" (``REAL_CAPTURE_HEADER``, pipeline/helpers/livelink_csv tests); an Unreal Editor exporter that
  writes the "real Live Link Face layout" (``Timecode,BlendshapeCount,`` + ``LLF_COLUMNS``, ARKit
  Remap V3 ``arkit_llf_csv.py``); and the CSV importer of the Blender LiveLinkFace add-on (N. Fisher,
  ``LIVE_LINK_FACE_HEADER``; the same 61 curve names and order, spelled ``BlendShapeCount``).
  Importers match the curve columns by name and read the count column by position.
* ``BlendshapeCount`` is 61 on every row: the 52 ARKit curves plus the 9 rotations.
* ``Timecode`` is ``HH:MM:SS:FF.mmm``: hours, minutes, seconds, then the frame within the second and
  its sub-frame fraction (a capture reads e.g. ``14:03:52:28.207``: frames counted at the app's
  timecode rate, 60 by default).  Here the rows are the drive's frames, so FF counts frames at the
  drive's fps from 00:00:00:00 and the fraction is ``.000`` (non-integer rates such as 29.97 give a
  fraction).  Import at that frame rate (importers that use the row index need nothing else).
* The 52 curves are the rig's ARKit units, clipped to [0, 1] (ARKit's range).  The rig's jaw joint
  also opens the mouth (tracking and the audio predictor split an opening between the ``jaw_open``
  unit and a rotation of the jaw about +x), and a target character has only the curve, so each
  ``jaw_open`` column is the unit plus the jaw's rotation about +x divided by the angle that the unit
  at 1.0 amounts to (:func:`jaw_open_angle`: fitted once from the rig's own geometry), clipped to
  [0, 1].
* The 9 rotations use the scale of Unreal's ARKit face conversion that Live Link Face streams:
  Euler angles mapped from -180..180 degrees to -1..1 (``AppleARKitConversion.h``, ``ToBlendShapeMap``:
  "Map the -180..180 range to -1..1", ``HeadYaw = Rotator.Yaw / 180``), i.e. radians / pi.  The
  head's rotation is ``global_rot`` then ``neck`` (the head relative to the camera), the eyes' are
  ``eyes`` (relative to the head; left = the subject's left).  Angles are Unreal ``FRotator`` style
  (yaw, then pitch, then roll, intrinsic) of the subject: HeadYaw > 0 turns the face to the subject's
  right, HeadPitch > 0 raises the chin, HeadRoll > 0 tilts the head towards the right shoulder; the
  same for each eye.  A target whose head turns the wrong way needs that axis negated (the app's own
  values flip with the phone's orientation and mirroring).

Which rig qualifies is read from the rig itself: its expression units must include all 52 ARKit names
(matched case-insensitively, so ARKit's ``eyeBlinkLeft`` fills ``EyeBlinkLeft``).  FLAME's PCA
components do not map to blendshapes: its avatars keep OUT.npz.  Rotations through :mod:`talksplat.render.rotation`.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from talksplat.core.errors import InputError, OptionError

#: The header row of a Live Link Face take, byte for byte (the format's definition; see the module doc).
HEADER_LINE = (
    "Timecode,BlendshapeCount,"
    "EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,EyeSquintLeft,EyeWideLeft,"
    "EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,"
    "JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,"
    "MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,"
    "MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,MouthShrugUpper,"
    "MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,MouthUpperUpRight,"
    "BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,CheekSquintLeft,"
    "CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,"
    "HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll"
)
HEADER: tuple[str, ...] = tuple(HEADER_LINE.split(","))
#: The 52 ARKit curve columns, in the file's order.
CURVES: tuple[str, ...] = HEADER[2:54]
#: The 9 rotation columns: head, left eye, right eye; yaw, pitch, roll each.
ROTATIONS: tuple[str, ...] = HEADER[54:]
#: The value of the BlendshapeCount column: curves + rotations.
BLENDSHAPE_COUNT = len(CURVES) + len(ROTATIONS)  # 61


# ------------------------------------------------------------------------------------------ the rig
def _assets(rig):
    """A HeadRig's :class:`~talksplat.rigs.base.RigAssets` (or the assets themselves)."""
    return getattr(rig, "assets", rig)


def arkit_columns(rig) -> list[int] | None:
    """For each of :data:`CURVES`, the index of the rig's expression unit of that name (case-insensitive);
    None when the rig lacks any of them."""
    index = {n.lower(): i for i, n in enumerate(_assets(rig).expression_names)}
    cols = [index.get(c.lower()) for c in CURVES]
    return None if any(i is None for i in cols) else cols


def check_arkit_rig(rig, option: str = "--arkit-csv") -> list[int]:
    """:func:`arkit_columns`, or a one-line OptionError naming the rig and its units."""
    cols = arkit_columns(rig)
    if cols is None:
        a = _assets(rig)
        names = list(a.expression_names)
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise OptionError(f"{option} needs a rig with ARKit blendshapes; this avatar's rig ({a.name}) has "
                          f"{len(names)} expression units ({shown or 'none'}), not the {len(CURVES)} ARKit "
                          "names; use OUT.npz")
    return cols


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)


def jaw_open_angle(rig) -> float | None:
    """The jaw rotation about +x (radians) that moves the jaw's vertices most like the rig's ``jaw_open``
    unit at 1.0 (least squares over a 0.005 rad grid up to 1.2 rad, rigid rotation about the jaw joint at
    rest); None when the rig has no such unit or the unit is not a jaw rotation (a rotation explains less
    than half of its motion)."""
    a = _assets(rig)
    units = a.expression_groups.get("jaw_open", [])
    jaw = a.semantic_joints["jaw"]
    on_jaw = np.asarray(a.weights)[:, jaw] > 0.5
    if not units or on_jaw.sum() < 3:
        return None
    template = np.asarray(a.template, np.float64)
    centre = np.asarray(a.joint_regressor, np.float64)[jaw] @ template
    rel = template[on_jaw] - centre
    d = np.asarray(a.exprdirs, np.float64)[on_jaw, :, units[0]]
    base = float((d ** 2).sum())
    if base <= 0:
        return None
    angles = np.arange(1, 241) * 0.005
    errors = [float((((rel @ _rot_x(t).T - rel) - d) ** 2).sum()) for t in angles]
    best = int(np.argmin(errors))
    return float(angles[best]) if errors[best] < 0.5 * base else None


# ------------------------------------------------------------------------------------------ rows
def rotation_matrices(aa) -> np.ndarray:
    """[..., 3] axis-angle (radians, numpy) -> [..., 3, 3] float64 rotation matrices
    (:func:`talksplat.render.rotation.axis_angle_to_matrix`)."""
    import torch

    from talksplat.render.rotation import axis_angle_to_matrix

    return axis_angle_to_matrix(torch.as_tensor(np.asarray(aa, np.float64))).numpy()


def yaw_pitch_roll(R: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotations in the rig frame (+x the subject's left, +y up, +z out of the face) -> [..., 3]
    (yaw, pitch, roll) radians, FRotator style: R = Ry(-yaw) Rx(-pitch) Rz(roll); yaw > 0 turns the face to
    the subject's right, pitch > 0 raises the chin, roll > 0 lowers the right ear."""
    psi = np.arctan2(R[..., 0, 2], R[..., 2, 2])
    theta = np.arcsin(np.clip(-R[..., 1, 2], -1.0, 1.0))
    phi = np.arctan2(R[..., 1, 0], R[..., 1, 1])
    return np.stack([-psi, -theta, phi], -1)


def timecode(frame: int, fps: float) -> str:
    """``HH:MM:SS:FF.mmm`` of frame ``frame`` at ``fps``: FF the frame within the second, ``.mmm`` its
    sub-frame fraction (``.000`` for an integer rate)."""
    if float(fps).is_integer():
        rate = int(fps)
        seconds, ff, sub = frame // rate, frame % rate, 0.0
    else:
        t = frame / fps
        seconds = int(math.floor(t + 1e-9))
        pos = max(0.0, (t - seconds) * fps)
        ff, sub = int(pos), pos - int(pos)
        if round(sub, 3) >= 1.0:
            ff, sub = ff + 1, 0.0
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{ff:02d}.{int(round(sub * 1000)):03d}"


def arkit_rows(seq, rig, fps: float) -> list[list[str]]:
    """One row per frame of ``seq`` (a :class:`~talksplat.rigs.sequence.RigSequence` on ``rig``): the
    timecode at ``fps``, the count, the 52 curves in [0, 1], the 9 rotations (radians / pi); see the
    module doc.  OptionError for a rig without the ARKit units."""
    cols = check_arkit_rig(rig)
    expr = np.asarray(seq.expression, np.float64)
    curves = expr[:, cols].copy()
    angle = jaw_open_angle(rig)
    if angle is not None:
        opening = np.asarray(seq.jaw, np.float64)[:, 0] / angle
        for unit in _assets(rig).expression_groups.get("jaw_open", []):
            for j in np.flatnonzero(np.asarray(cols) == unit):
                curves[:, j] += opening
    curves = np.clip(curves, 0.0, 1.0)
    head = rotation_matrices(seq.global_rot) @ rotation_matrices(seq.neck)
    eyes = rotation_matrices(seq.eyes)  # [T, 2, 3, 3]
    rot = np.concatenate([yaw_pitch_roll(head), yaw_pitch_roll(eyes[:, 0]), yaw_pitch_roll(eyes[:, 1])], 1) / math.pi
    return [[timecode(t, fps), str(BLENDSHAPE_COUNT), *(f"{v:.6f}" for v in curves[t]), *(f"{v:.6f}" for v in rot[t])]
            for t in range(len(seq))]


# ------------------------------------------------------------------------------------------ files
def csv_path(out: str | os.PathLike) -> Path:
    """OUT.csv beside OUT.mp4 / OUT.npz."""
    return Path(out).with_suffix(".csv")


def is_own_csv(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CSV a drive wrote: this format's header, and as many rows as the frames of the
    drive's OUT.npz beside it.  The header alone is not enough: a Live Link Face take has it too, and a
    take is the user's file, never replaced."""
    from .drive import is_own_npz

    path = Path(path)
    npz = path.with_suffix(".npz")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if f.readline().rstrip("\r\n") != HEADER_LINE:
                return False
            rows = sum(1 for line in f if line.strip())
        if not is_own_npz(npz):
            return False
        with np.load(npz, allow_pickle=False) as z:
            return rows == len(z["expression"])
    except (OSError, UnicodeDecodeError, KeyError, ValueError):
        return False


def write_arkit_csv(path: str | os.PathLike, seq, rig, fps: float) -> Path:
    """Write :func:`arkit_rows` under :data:`HEADER` to ``path`` atomically; returns the path."""
    from talksplat.core.files import atomic_write

    rows = arkit_rows(seq, rig, fps)
    path = Path(path)
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(HEADER)
            w.writerows(rows)
    return path


def npz_to_arkit_csv(npz: str | os.PathLike, rig, out: str | os.PathLike | None = None,
                     fps: float | None = None) -> Path:
    """Convert an existing parameters file (a drive OUT.npz: its ``fps`` is used unless ``fps`` is given)
    made on ``rig`` to OUT.csv (or ``out``); returns the CSV's path.  InputError for a file without a
    frame rate, OptionError for a rig without the ARKit units."""
    from talksplat.rigs.sequence import RigSequence

    check_arkit_rig(rig, option="the CSV")
    seq = RigSequence.load(npz).validate(rig)
    fps = fps or seq.fps
    if not fps or fps <= 0:
        raise InputError(f"{npz}: no frame rate ('fps') in the file; pass fps=")
    return write_arkit_csv(csv_path(npz) if out is None else out, seq, rig, float(fps))
