"""Property test of every file reader: damaged files give one line, never a traceback or a NaN.

Each reader gets random bytes, its valid file truncated at random offsets, and the valid file with a
NaN or Inf injected into a random array (or number, for JSON).  It must either return a result whose
numbers are all finite, or raise a :class:`TalksplatError` whose message is one line naming the file.
(The FLAME pickle, NeRF-import and cameras.json readers have the same test in test_flame.py and
test_multiview_io.py.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import Inputs

from talksplat.core.errors import TalksplatError

TRIALS = 12  # per damage kind and file: 36 damaged versions of each file


def _finite(x) -> bool:
    import torch

    if isinstance(x, torch.Tensor):
        return not x.dtype.is_floating_point or bool(torch.isfinite(x).all())
    a = np.asarray(x)
    return a.dtype.kind != "f" or bool(np.isfinite(a).all())


def _damaged_versions(path: Path, seed: int):
    """(kind, bytes) of damaged copies of ``path``: random bytes, truncations, NaN/Inf injected."""
    rng = np.random.default_rng(seed)
    data = path.read_bytes()
    for _ in range(TRIALS):
        yield "random", rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
    for _ in range(TRIALS):
        yield "truncated", data[: int(rng.integers(0, len(data)))]
    for _ in range(TRIALS):
        yield "nan", _inject(path, data, rng)


def _inject(path: Path, data: bytes, rng) -> bytes:
    bad = float(rng.choice([np.nan, np.inf, -np.inf]))
    if path.suffix == ".json":
        text = data.decode()
        numbers = [m for m in re.finditer(r"(?<![\w.\"])-?\d+\.\d+(?:e-?\d+)?", text)]
        m = numbers[int(rng.integers(len(numbers)))]
        return (text[:m.start()] + json.dumps(bad) + text[m.end():]).encode()
    if path.suffix == ".npz":
        import io

        with np.load(io.BytesIO(data)) as z:
            arrays = {k: z[k].copy() for k in z.files}
        keys = [k for k, v in arrays.items() if v.dtype.kind == "f" and v.size]
        k = keys[int(rng.integers(len(keys)))]
        arrays[k].reshape(-1)[int(rng.integers(arrays[k].size))] = bad
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()
    if path.suffix == ".safetensors":
        from safetensors.torch import load, save

        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        t = load(data)
        keys = [k for k, v in t.items() if v.dtype.is_floating_point and v.numel()]
        k = keys[int(rng.integers(len(keys)))]
        t[k].view(-1)[int(rng.integers(t[k].numel()))] = bad
        return save(t, metadata=meta)
    raise AssertionError(path)


def _check(read, target: Path, source: Path, tmp: Path, seed: int, restore=None) -> dict:
    """Write each damaged version of ``source`` to ``target``, call ``read()``; tally the outcomes."""
    outcomes = {"loaded": 0, "refused": 0}
    for i, (kind, data) in enumerate(_damaged_versions(source, seed)):
        target.write_bytes(data)
        try:
            result = read()
        except TalksplatError as e:
            msg = str(e)
            assert "\n" not in msg and msg.strip(), (kind, i, msg)
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"{target.name}, {kind} #{i}: {type(e).__name__}: {e}") from e
        else:
            assert all(_finite(v) for v in result), (kind, i, "a non-finite value got through")
            outcomes["loaded"] += 1
        if restore is not None:
            restore()
    return outcomes


@pytest.fixture(scope="module")
def rig():
    from talksplat.rigs import load_rig

    return load_rig("open")


@pytest.mark.parametrize("name", ["rig_params.npz", "transforms.json", "meta.json", "landmarks.npz"])
def test_dataset_reader(small_inputs: Inputs, tmp_path, name):
    from talksplat.data_prep.dataset import check_files, load_dataset

    ds = tmp_path / "ds"
    shutil.copytree(small_inputs.dataset, ds)

    def read():
        d = load_dataset(ds)
        check_files(d)
        return [d.shape, *d.params.values(), *(f.K for f in d.frames), *(f.c2w for f in d.frames),
                *d.landmarks.values()]

    out = _check(read, ds / name, small_inputs.dataset / name, tmp_path, seed=hash(name) % 1000)
    assert out["refused"] >= 2 * TRIALS  # random bytes and NaN are always refused


def test_avatar_reader(small_inputs: Inputs, tmp_path, rig):
    from talksplat.avatar.io import load_avatar

    path = tmp_path / "avatar.safetensors"
    out = _check(lambda: list(load_avatar(path, rig=rig).state_dict().values()), path,
                 small_inputs.fit / "avatar.safetensors", tmp_path, seed=1)
    assert out["refused"] == 3 * TRIALS


def test_predictor_reader(small_inputs: Inputs, tmp_path, rig):
    from talksplat.driving.predictor import load_predictor

    path = tmp_path / "driver.safetensors"

    def read():
        d = load_predictor(path, rig_checksum=rig.checksum)
        return [d.mean, d.std, d.rest, *d.model.state_dict().values()]

    out = _check(read, path, small_inputs.fit / "driver.safetensors", tmp_path, seed=2)
    assert out["refused"] == 3 * TRIALS


def test_fit_folder_reader(small_inputs: Inputs, tmp_path):
    from talksplat.driving.fit_reader import open_fit

    fit = tmp_path / "fit"
    shutil.copytree(small_inputs.fit, fit)
    out = _check(lambda: list(open_fit(fit).tracked.arrays().values()), fit / "tuned_params.npz",
                 small_inputs.fit / "tuned_params.npz", tmp_path, seed=3)
    assert out["refused"] >= 2 * TRIALS  # a NaN in the unused original_* arrays is harmless


def test_parameters_file_reader(small_inputs: Inputs, tmp_path, rig):
    from talksplat.viewer.inputs import load_params_file

    src = tmp_path / "src.npz"
    T = 5
    np.savez(src, shape=np.zeros(rig.num_shape, np.float32), expression=np.zeros((T, rig.num_expression), np.float32),
             jaw=np.zeros((T, 3), np.float32), neck=np.zeros((T, 3), np.float32), global_rot=np.zeros((T, 3), np.float32),
             translation=np.zeros((T, 3), np.float32), eyes=np.zeros((T, 2, 3), np.float32), fps=np.float32(25))
    path = tmp_path / "p.npz"

    def read():
        seq = load_params_file(path, rig)
        return [seq.shape, seq.fps, *seq.frames.values()]

    out = _check(read, path, src, tmp_path, seed=4)
    assert out["refused"] == 3 * TRIALS


def test_audio_reader(small_inputs: Inputs, tmp_path):
    """Audio has no NaN to inject into 16-bit PCM: random bytes and truncations only."""
    from talksplat.driving.audio import decode_audio

    path = tmp_path / "a.wav"
    rng = np.random.default_rng(5)
    data = small_inputs.wav.read_bytes()
    for i in range(2 * TRIALS):
        path.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes() if i % 2 else
                         data[: int(rng.integers(0, len(data)))])
        try:
            x = decode_audio(path)
        except TalksplatError as e:
            assert "\n" not in str(e) and str(path) in str(e)
        else:
            assert x.size and np.isfinite(x).all()


def test_video_probe(small_inputs: Inputs, tmp_path):
    from talksplat.data_prep.decode import iter_frames, probe_video

    path = tmp_path / "v.mp4"
    rng = np.random.default_rng(6)
    data = small_inputs.clip.read_bytes()
    for i in range(TRIALS):
        path.write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() if i % 3 == 0 else
                         data[: int(rng.integers(1, len(data)))])
        try:
            probe_video(path)
            frames = list(iter_frames(path, 25.0))
        except TalksplatError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path))
        else:
            assert frames  # a file that reads reads whole


def test_stage_records(tmp_path):
    """A damaged stage record counts as none (the stage reruns) rather than failing the run."""
    from talksplat.stages import StageRunner

    runner = StageRunner(tmp_path)
    (tmp_path / "stages").mkdir()
    rng = np.random.default_rng(7)
    good = json.dumps({"version": 1, "key": "k", "run_id": "r"}).encode()
    for i in range(TRIALS):
        data = good[: int(rng.integers(0, len(good)))] if i % 2 else rng.integers(0, 256, 200, np.uint8).tobytes()
        (tmp_path / "stages" / "fit.json").write_bytes(data)
        assert runner.read_record("fit") is None
