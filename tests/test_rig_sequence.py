"""RigSequence: the one per-frame rig parameter schema and its .npz layout (rigs/sequence.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from talksplat.core.errors import InputError
from talksplat.rigs import RigParams, RigSequence
from talksplat.rigs.sequence import FIELDS, FRAME_FIELDS, FRAME_TAILS

T, E, S = 7, 3, 2  # the sphere rig: 3 expressions, 2 shape coefficients


def _arrays(T: int = T, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float64 arrays in the sequence layout (written by hand, as older talksplat versions did)."""
    rng = np.random.default_rng(seed)
    out = {"shape": rng.normal(size=S)}
    for k in FRAME_FIELDS:
        tail = (E,) if k == "expression" else FRAME_TAILS[k]
        out[k] = rng.normal(size=(T,) + tail)
    return out


def test_fields_come_from_rig_params():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(RigParams)}
    assert FIELDS[0] == "shape" and "shape" not in FRAME_FIELDS
    assert FRAME_TAILS["eyes"] == (2, 3) and FRAME_TAILS["jaw"] == (3,) and FRAME_TAILS["expression"] == (None,)


def test_save_load_round_trip_with_extras(tmp_path):
    a = _arrays()
    seq = RigSequence.from_arrays({**a, "fps": np.float32(30), "audio": np.asarray("talk.wav")}, "test")
    assert len(seq) == T and seq.num_expression == E and seq.num_shape == S and seq.fps == 30.0
    path = seq.save(tmp_path / "talk.npz")
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left
    back = RigSequence.load(path)
    assert back.source == str(path) and back.fps == 30.0 and str(back.extras["audio"]) == "talk.wav"
    for k in FIELDS:
        assert back.arrays()[k].dtype == np.float32
        np.testing.assert_allclose(back.arrays()[k], a[k].astype(np.float32), err_msg=k)
    np.testing.assert_array_equal(back.jaw, back.frames["jaw"])  # fields are attributes too
    with np.load(path) as z:  # the layout: one flat npz, every field under its own name
        assert set(z.files) == set(FIELDS) | {"fps", "audio"}


@pytest.mark.parametrize("layout", ["rig_params", "tuned_params", "talk"])
def test_previous_layouts_load(tmp_path, layout):
    """The three files written before RigSequence existed (same arrays, different extras) still load."""
    a = _arrays(seed=1)
    path = tmp_path / f"{layout}.npz"
    if layout == "rig_params":  # DatasetWriter: float32 shape + the fields
        np.savez(path, shape=a["shape"].astype(np.float32), **{k: a[k].astype(np.float32) for k in FRAME_FIELDS})
    elif layout == "tuned_params":  # the fit: the tuned values plus the tracked ones as original_*
        np.savez(path, **a, original_shape=a["shape"], **{f"original_{k}": a[k] + 1 for k in FRAME_FIELDS})
    else:  # talksplat drive: the fields, fps, the audio file name
        np.savez(path, **a, fps=np.float32(25), audio=np.asarray("talk.wav"))
    seq = RigSequence.load(path)
    np.testing.assert_allclose(seq.expression, a["expression"].astype(np.float32))
    if layout == "tuned_params":
        np.testing.assert_allclose(seq.extras["original_jaw"], a["jaw"] + 1)
        assert seq.fps is None
        assert seq[2:4].extras["original_jaw"].shape == (2, 3)  # per-frame extras slice with the frames
    if layout == "talk":
        assert seq.fps == 25.0 and seq[1:3].fps == 25.0


def test_slicing_and_frames():
    seq = RigSequence.from_arrays(_arrays(), "test")
    part = seq[2:5]
    assert len(part) == 3 and part.num_shape == S
    np.testing.assert_array_equal(part.neck, seq.neck[2:5])
    np.testing.assert_array_equal(seq[[0, 6]].eyes, seq.eyes[[0, 6]])
    one = seq[4]
    assert len(one) == 1 and one.eyes.shape == (1, 2, 3)
    assert len(seq[-1]) == 1 and np.array_equal(seq[-1].jaw[0], seq.jaw[-1])
    f = seq.frame(3)
    assert set(f) == set(FIELDS) and f["eyes"].shape == (2, 3) and f["expression"].shape == (E,)
    np.testing.assert_array_equal(f["translation"], seq.translation[3])


def test_to_params_and_back(sphere_rig):
    seq = RigSequence.from_arrays(_arrays(), "test")
    p = seq[1:4].to_params("cpu")
    assert isinstance(p, RigParams) and p.batch_size == 3
    assert p.shape.shape == (3, S) and p.eyes.shape == (3, 2, 3) and p.expression.dtype == torch.float32
    torch.testing.assert_close(p.jaw, torch.from_numpy(seq.jaw[1:4]))
    torch.testing.assert_close(p.shape[2], torch.from_numpy(seq.shape))
    with torch.no_grad():
        sphere_rig(p)  # poses the rig
    back = RigSequence.from_params(p, fps=25.0)
    assert back.fps == 25.0
    for k in FIELDS:
        np.testing.assert_array_equal(back.arrays()[k], seq[1:4].arrays()[k], err_msg=k)


def test_zeros_is_the_neutral_face(sphere_rig):
    seq = RigSequence.zeros(4, sphere_rig.num_expression, np.zeros(sphere_rig.num_shape))
    assert len(seq) == 4 and seq.validate(sphere_rig) is seq
    with torch.no_grad():
        v = sphere_rig(seq.to_params()).vertices
    torch.testing.assert_close(v[0], sphere_rig.template)


def _one_line_error(fn, *fragments):
    with pytest.raises(InputError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


@pytest.mark.parametrize("change, fragment", [
    ({"jaw": None}, "missing arrays ['jaw']"),
    ({"shape": None}, "missing arrays ['shape']"),
    ({"jaw": np.zeros((T, 2))}, f"'jaw' has shape [{T}, 2], expected [{T}, 3]"),
    ({"eyes": np.zeros((T, 6))}, "'eyes' has shape"),
    ({"neck": np.zeros((T - 3, 3))}, f"'neck' has {T - 3} frames, 'expression' has {T}"),
    ({"translation": np.full((T, 3), np.nan)}, "'translation' holds non-finite values"),
    ({"shape": np.array([0.0, np.inf])}, "'shape' holds non-finite values"),
    ({"expression": np.zeros(T)}, "'expression' has shape"),
    ({"neck": np.array(["a"] * T)}, "'neck' must hold numbers"),
    ({k: np.zeros((0,) + ((E,) if k == "expression" else FRAME_TAILS[k])) for k in FRAME_FIELDS}, "no frames"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, change, fragment):
    a = {**_arrays(), **change}
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in a.items() if v is not None})
    _one_line_error(lambda: RigSequence.load(path), str(path), fragment)


def test_unreadable_files(tmp_path):
    RigSequence.from_arrays(_arrays(), "x").save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    for name in ("cut.npz", "junk.npz"):
        _one_line_error(lambda: RigSequence.load(tmp_path / name), str(tmp_path / name), "not a readable .npz file")
    _one_line_error(lambda: RigSequence.load(tmp_path / "junk.npz", what="parameters file"),
                    "not a readable .npz parameters file")
    _one_line_error(lambda: RigSequence.load(tmp_path / "none.npz"), str(tmp_path / "none.npz"), "not found")


def test_validate_against_the_rig(tmp_path, sphere_rig):
    path = tmp_path / "p.npz"
    RigSequence.from_arrays(_arrays(), "x").save(path)
    assert RigSequence.load(path).validate(sphere_rig).num_expression == sphere_rig.num_expression
    RigSequence.from_arrays({**_arrays(), "expression": np.zeros((T, 5))}, "x").save(path)
    _one_line_error(lambda: RigSequence.load(path).validate(sphere_rig), str(path), f"'expression' has shape ({T}, 5)",
                    "5 expression coefficients")
    RigSequence.from_arrays({**_arrays(), "shape": np.zeros(9)}, "x").save(path)
    _one_line_error(lambda: RigSequence.load(path).validate(sphere_rig), "'shape' has 9 components")
    # Finiteness left to validate (the viewer's way): its own wording, still one line naming the file.
    np.savez(path, **{**_arrays(), "jaw": np.full((T, 3), np.nan)})
    seq = RigSequence.load(path, finite=False)
    _one_line_error(lambda: seq.validate(sphere_rig), str(path), "'jaw' holds non-numeric or non-finite values")
