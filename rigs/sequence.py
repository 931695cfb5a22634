"""One schema for per-frame rig parameters: :class:`RigSequence` and its ``.npz`` layout.

A sequence is the identity ``shape`` [S] plus every other :class:`~talksplat.rigs.base.RigParams`
field with a leading time axis T (the fields are taken from ``RigParams`` itself, so a field added
there is stored, read and checked everywhere)::

    seq = RigSequence.load("avatar/tuned_params.npz").validate(rig)
    seq.jaw                        # [T, 3] axis-angle radians
    seq[10:20].to_params("cuda")   # RigParams, batch 10
    RigSequence.from_params(p, fps=25.0).save("talk.npz")

The same layout is the dataset's ``rig_params.npz``, a fit's ``tuned_params.npz`` (with the tracked
values as ``original_*``) and `talksplat drive`'s ``OUT.npz`` (with ``fps`` and ``audio``); see
docs/formats.md, "Rig parameter sequences".
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talksplat.core.checks import check_array
from talksplat.core.errors import InputError

from .base import RigParams

#: The per-frame fields, in :class:`RigParams` order: every field but the identity ``shape``.
FRAME_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RigParams) if f.name != "shape")
#: Every array of a sequence file besides the extras: ``shape`` [S] and the frame fields [T, ...].
FIELDS: tuple[str, ...] = ("shape",) + FRAME_FIELDS
#: Shape of one frame of each field (None: any size; expression [E] depends on the rig).  Rotations
#: (axis-angle) and the translation are 3-vectors; the eyes are two of them.
FRAME_TAILS: dict[str, tuple] = {k: {"expression": (None,), "eyes": (2, 3)}.get(k, (3,)) for k in FRAME_FIELDS}


@dataclass(eq=False)
class RigSequence:
    """Rig parameters over T frames (numpy, float32).

    Attributes:
        shape: [S] identity coefficients, shared by every frame.
        frames: :data:`FRAME_FIELDS` -> [T, ...]: expression [T, E] (open head: ARKit units, 0..1),
            global_rot / neck / jaw [T, 3] axis-angle radians, eyes [T, 2, 3] radians (left, right),
            translation [T, 3] metres.  Each field is also an attribute (``seq.jaw``).
        extras: other arrays stored in the same file: ``fps`` (0-d, frames per second), ``audio``
            (0-d string, a WAV file name relative to the file), ``original_<field>`` (the tracked
            values a fit started from), ...; per-frame extras ([T, ...]) are sliced with the frames.
        source: what the sequence was read from (a path, or a description); errors name it.
    """

    shape: np.ndarray
    frames: dict[str, np.ndarray]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "rig parameters"

    def __post_init__(self):
        self.shape = np.asarray(self.shape, np.float32)
        order = [k for k in FRAME_FIELDS if k in self.frames] + [k for k in self.frames if k not in FRAME_FIELDS]
        self.frames = {k: np.asarray(self.frames[k], np.float32) for k in order}

    # ------------------------------------------------------------------ access
    def __getattr__(self, name: str) -> np.ndarray:
        frames = self.__dict__.get("frames")
        if frames is not None and name in FRAME_FIELDS:
            return frames[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        """T, the number of frames."""
        return int(self.frames["expression"].shape[0])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def num_expression(self) -> int:
        return int(self.frames["expression"].shape[1])

    @property
    def num_shape(self) -> int:
        return int(self.shape.shape[0])

    @property
    def fps(self) -> float | None:
        """Frames per second when the file stores it (``fps``), else None."""
        return float(np.asarray(self.extras["fps"]).reshape(())) if "fps" in self.extras else None

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything the file holds: ``shape``, the frame fields, then the extras."""
        return {"shape": self.shape, **self.frames, **self.extras}

    def __getitem__(self, index) -> RigSequence:
        """The frames at ``index`` (a slice, an int, or an index / boolean array over T); the identity
        and the 0-d extras are kept, per-frame extras sliced with the frames."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if index != -1 else None)
        T = len(self)
        extras = {k: (v[index] if np.ndim(v) >= 1 and len(v) == T else v) for k, v in self.extras.items()}
        return RigSequence(self.shape, {k: v[index] for k, v in self.frames.items()}, extras, self.source)

    def frame(self, t: int) -> dict[str, np.ndarray]:
        """Frame ``t`` without the time axis, ``shape`` included (expression [E], eyes [2, 3], ...)."""
        out = {k: np.array(v[t], dtype=np.float32) for k, v in self.frames.items()}
        out["shape"] = np.array(self.shape, dtype=np.float32)
        return out

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], source: str = "rig parameters", finite: bool = True,
                    extras: bool = True) -> RigSequence:
        """Build from ``shape`` + the frame fields (+ anything else, kept as extras when ``extras``),
        checking the structure: every field present, one T >= 1, the per-frame shapes, numbers (and all
        finite when ``finite``).  :class:`InputError` naming ``source`` otherwise."""
        missing = [k for k in FIELDS if k not in arrays]
        if missing:
            raise InputError(f"{source}: missing arrays {missing} (expected {', '.join(FIELDS)})")
        shape = check_array(arrays["shape"], source, "shape", (None,), finite=finite)
        T = check_array(arrays["expression"], source, "expression", (None, None), finite=finite).shape[0]
        frames = {}
        for k in FRAME_FIELDS:
            a = np.asarray(arrays[k])
            if a.ndim >= 1 and a.shape[0] != T and a.ndim == 1 + len(FRAME_TAILS[k]):
                raise InputError(f"{source}: '{k}' has {a.shape[0]} frames, 'expression' has {T}")
            frames[k] = check_array(a, source, k, (T,) + FRAME_TAILS[k], finite=finite).astype(np.float32)
        if T < 1:
            raise InputError(f"{source}: the sequence has no frames")
        rest = {k: np.asarray(v) for k, v in arrays.items() if k not in FIELDS} if extras else {}
        return cls(shape.astype(np.float32), frames, rest, source)

    @classmethod
    def from_params(cls, params: RigParams, source: str = "rig parameters", **extras: Any) -> RigSequence:
        """From a :class:`RigParams` batch (B = T frames; the identity is taken from its first row);
        ``extras`` (``fps=25.0``, ...) are stored as arrays."""
        def np32(t) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        return cls(np32(params.shape[0]), {k: np32(getattr(params, k)) for k in FRAME_FIELDS},
                   {k: np.asarray(v) for k, v in extras.items()}, source)

    @classmethod
    def zeros(cls, num_frames: int, num_expression: int, shape: np.ndarray | None = None,
              source: str = "rig parameters") -> RigSequence:
        """``num_frames`` frames of the neutral face in the rig frame (every frame field zero) for the
        identity ``shape`` [S] (default: no identity coefficients, S = 0)."""
        tails = {**FRAME_TAILS, "expression": (num_expression,)}
        return cls(np.zeros(0) if shape is None else shape,
                   {k: np.zeros((num_frames,) + tails[k], np.float32) for k in FRAME_FIELDS}, source=source)

    def to_params(self, device=None) -> RigParams:
        """The whole sequence as one :class:`RigParams` batch (B = T) of float32 tensors on ``device``;
        slice first (``seq[s:e].to_params(device)``) to pose it in chunks."""
        import torch

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, np.float32), device=device)

        T = len(self)
        return RigParams(shape=t(self.shape)[None].expand(T, -1).contiguous(),
                         **{k: t(v) for k, v in self.frames.items()})

    def with_frames(self, **frames: np.ndarray) -> RigSequence:
        """A copy with some frame fields replaced (same T); extras kept."""
        return RigSequence(self.shape, {**self.frames, **{k: np.asarray(v, np.float32) for k, v in frames.items()}},
                           dict(self.extras), self.source)

    # ------------------------------------------------------------------ checks
    def validate(self, rig=None, finite: bool = True) -> RigSequence:
        """Check the structure (see :meth:`from_arrays`) and, with ``rig`` (a :class:`HeadRig`), that the
        identity and expression sizes are the rig's; returns ``self``.  :class:`InputError` naming
        :attr:`source`: ``"tuned_params.npz: 'expression' has shape (12, 7), expected [T, 52]: ..."``."""
        src = self.source
        RigSequence.from_arrays(self.arrays(), src, finite=False, extras=False)
        if finite:
            for k, v in (("shape", self.shape), *self.frames.items()):
                if not np.issubdtype(np.asarray(v).dtype, np.number) or not np.isfinite(v).all():
                    raise InputError(f"{src}: '{k}' holds non-numeric or non-finite values")
        if rig is not None:
            if self.num_shape != rig.num_shape:
                raise InputError(f"{src}: 'shape' has {self.num_shape} components, rig '{rig.name}' has "
                                 f"{rig.num_shape}")
            if self.num_expression != rig.num_expression:
                raise InputError(f"{src}: 'expression' has shape {tuple(self.expression.shape)}, expected "
                                 f"[T, {rig.num_expression}]: {self.num_expression} expression coefficients, but "
                                 f"rig '{rig.name}' has {rig.num_expression}")
        return self

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: str | os.PathLike, finite: bool = True, what: str = "file") -> RigSequence:
        """Read a sequence file (any of the layouts in the module doc: ``rig_params.npz``,
        ``tuned_params.npz``, a drive ``OUT.npz``) and check its structure (:meth:`from_arrays`).

        ``what`` names the kind of file in the unreadable-file message ("not a readable .npz {what}").
        One-line :class:`InputError` naming ``path`` for a missing, truncated or damaged file, a missing
        array, a wrong shape or (``finite``) a NaN / Inf."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - a damaged zip fails in many ways (BadZipFile, EOFError, ...)
            raise InputError(f"{path}: not a readable .npz {what} ({type(e).__name__})") from None
        return cls.from_arrays(arrays, str(path), finite=finite)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`arrays` as one uncompressed ``.npz`` atomically (temporary file, then renamed)."""
        from talksplat.core.files import atomic_write

        path = Path(path)
        with atomic_write(path) as tmp:
            np.savez(tmp, **self.arrays())
        return path
