"""FLAME loader: restricted unpickling, teeth generation, regions, HeadRig evaluation.

No real FLAME file is available (nor may one be committed or downloaded): the tests write a synthetic
pickle in FLAME's format -- real key names and shapes (5023 vertices, 9976 faces, 5 joints,
400 = 300 + 100 shape/expression components, 36 pose correctives, sparse J_regressor), ``shapedirs``
pickled as a chumpy-style ``chumpy.ch.Ch`` object under protocol 2 -- whose geometry is a head-like
open surface with a mouth slit, two eye openings, a neck opening and two closed eyeballs.
"""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from talksplat.rigs import HeadRig, load_rig
from talksplat.rigs.flame import FLAME_URL, FlameFormatError, boundary_loops, load_flame
from talksplat.render.rotation import axis_angle_to_matrix
from talksplat.rigs.safe_pickle import ChumpyObjectError, ForbiddenGlobalError, safe_load

# Synthetic head layout: L rings x N longitudes + a top pole, holes (ring row, first col, n cols).
L, N = 96, 40
THETA_MAX = 0.85 * np.pi
AXES = np.array([0.078, 0.115, 0.095])
MOUTH_ROW, MOUTH_COLS = 71, (17, 6)
EYE_ROW, EYE_COLS = 48, ((24, 2), (14, 2))  # left (+x) then right
EYE_R, EYE_S = 20, 31  # eyeball latitude divisions, segments: 2 + 19 * 31 = 591 vertices each


def _uv_sphere(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    pts = np.stack([np.sin(T) * np.sin(P), np.cos(T), np.sin(T) * np.cos(P)], -1).reshape(-1, 3)
    pts = np.concatenate([[(0, 1, 0)], pts, [(0, -1, 0)]], 0)
    r = lambda i, j: 1 + i * n_lon + j % n_lon  # noqa: E731
    f = []
    for j in range(n_lon):
        f += [(0, r(0, j), r(0, j + 1)), (len(pts) - 1, r(n_lat - 2, j + 1), r(n_lat - 2, j))]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            f += [(r(i, j), r(i + 1, j), r(i + 1, j + 1)), (r(i, j), r(i + 1, j + 1), r(i, j + 1))]
    return pts, np.array(f)


def _outward(v: np.ndarray, f: np.ndarray, centre: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return f if np.einsum("ij,ij->i", n, v[f].mean(1) - centre).sum() > 0 else f[:, ::-1]


def synthetic_flame(seed: int = 0) -> dict:
    """A FLAME-format dict (numpy) with a head-like geometry; exact FLAME counts."""
    rng = np.random.default_rng(seed)
    u = -1 + np.arange(N) * 2.0 / N
    phi = np.pi * u * (0.65 + 0.35 * np.abs(u))  # denser longitudes at the front (face)
    theta = THETA_MAX * np.arange(1, L + 1) / L
    T, P = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(T) * np.sin(P), np.cos(T), np.sin(T) * np.cos(P)], -1).reshape(-1, 3)
    head_v = np.concatenate([[(0, 1, 0)], ring], 0) * AXES
    vid = lambda i, k: 1 + (i - 1) * N + k % N  # ring i in 1..L  # noqa: E731
    holes = {(MOUTH_ROW, MOUTH_COLS[0] + c) for c in range(MOUTH_COLS[1])}
    for c0, n in EYE_COLS:
        holes |= {(EYE_ROW, c0 + c) for c in range(n)}
    hf = [(0, vid(1, k + 1), vid(1, k)) for k in range(N)]
    for i in range(1, L):
        for k in range(N):
            if (i, k) in holes:
                continue
            a, b, c, d = vid(i, k), vid(i, k + 1), vid(i + 1, k + 1), vid(i + 1, k)
            hf += [(a, c, b), (a, d, c)]
    hf = _outward(head_v, np.array(hf), np.zeros(3))
    verts, faces, eye_centres = [head_v], [hf], []
    sv, sf = _uv_sphere(EYE_R, EYE_S)
    for c0, n in EYE_COLS:  # eyeballs behind the eye openings
        hole = [vid(EYE_ROW + a, c0 + c) for a in (0, 1) for c in range(n + 1)]
        p = head_v[hole].mean(0)
        centre = p - 0.011 * p / np.linalg.norm(p)
        off = sum(len(x) for x in verts)
        verts.append(sv * 0.012 + centre)
        faces.append(_outward(sv, sf, np.zeros(3)) + off)
        eye_centres.append(centre)
    v = np.concatenate(verts, 0)
    f = np.concatenate(faces, 0)
    assert v.shape == (5023, 3) and f.shape == (9976, 3), (v.shape, f.shape)
    V = len(v)
    n_head = len(head_v)
    ring_of = np.concatenate([[0], np.repeat(np.arange(1, L + 1), N)])

    # Joints regressed as vertex averages (rows sum to 1): root = neck loop, neck = a ring above,
    # jaw = a ring at the jaw pivot height, eyes = eyeball vertices.
    groups = [np.flatnonzero(ring_of == L), np.flatnonzero(ring_of == L - 8), np.flatnonzero(ring_of == 63),
              np.arange(n_head, n_head + 591), np.arange(n_head + 591, V)]
    rows, cols, vals = [], [], []
    for j, g in enumerate(groups):
        rows += [j] * len(g)
        cols += list(g)
        vals += [1.0 / len(g)] * len(g)
    jreg = sp.csc_matrix((vals, (rows, cols)), shape=(5, V))

    w = np.zeros((V, 5))
    w[:n_head, 1] = 1.0
    front = head_v[:, 2] > 0
    jaw = front & (ring_of[:n_head] > MOUTH_ROW) & (ring_of[:n_head] < L - 12)
    w[:n_head][jaw] = [0, 0, 1, 0, 0]
    blend = ring_of[:n_head] >= L - 10
    w[:n_head][blend] = [0.5, 0.5, 0, 0, 0]
    w[:n_head][ring_of[:n_head] >= L - 6] = [1, 0, 0, 0, 0]
    w[n_head:n_head + 591, 3] = 1.0
    w[n_head + 591:, 4] = 1.0
    return {
        "v_template": v, "f": f.astype(np.uint32),
        "shapedirs": rng.normal(size=(V, 3, 400)) * 1e-4,
        "posedirs": rng.normal(size=(V, 3, 36)) * 1e-4,
        "J_regressor": jreg, "weights": w,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "J": jreg @ v, "bs_style": "lbs", "bs_type": "lrotmin",
    }


class _FakeChumpy:
    """Registers a stand-in ``chumpy.ch.Ch`` only while pickling (the loader must never see it)."""

    def __enter__(self):
        mod, pkg = types.ModuleType("chumpy.ch"), types.ModuleType("chumpy")

        class Ch:
            def __init__(self, x):
                self.x = x
                self._dirty_vars = set()
                self.label = None
                self._itr = None

            def __getstate__(self):  # chumpy: __dict__ minus the weakref caches
                return dict(self.__dict__)

        Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
        mod.Ch, pkg.ch = Ch, mod
        self.saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
        return Ch

    def __exit__(self, *exc):
        for k, m in self.saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m


def write_flame(path, model: dict, chumpy_keys=("shapedirs",), protocol: int = 2):
    with _FakeChumpy() as Ch:
        d = {k: (Ch(v) if k in chumpy_keys else v) for k, v in model.items()}
        path.write_bytes(pickle.dumps(d, protocol=protocol))
    assert "chumpy.ch" not in sys.modules
    return path


@pytest.fixture(scope="module")
def flame_model() -> dict:
    return synthetic_flame()


@pytest.fixture(scope="module")
def flame_file(tmp_path_factory, flame_model):
    return write_flame(tmp_path_factory.mktemp("flame") / "generic_model.pkl", flame_model)


@pytest.fixture(scope="module")
def assets(flame_file):
    return load_flame(str(flame_file))


@pytest.fixture(scope="module")
def rig(assets):
    return HeadRig(assets)


def _mouth_loop(model) -> np.ndarray:
    loops = boundary_loops(model["f"].astype(np.int64))
    return min(loops, key=lambda lp: np.linalg.norm(model["v_template"][lp].mean(0) - [0, -0.045, 0.09]))


# ----------------------------------------------------------------------------- loading
def test_shapes_and_chumpy_roundtrip(assets, flame_model):
    V = 5023
    Vt = assets.template.shape[0]
    assert Vt > V and assets.faces.shape[0] > 9976
    assert np.array_equal(assets.faces[:9976], flame_model["f"].astype(np.int64))
    assert assets.shapedirs.shape == (Vt, 3, 300) and assets.exprdirs.shape == (Vt, 3, 100)
    assert assets.posedirs.shape == (36, Vt * 3)
    assert assets.joint_regressor.shape == (5, Vt) and assets.weights.shape == (Vt, 5)
    assert assets.parents.tolist() == [-1, 0, 1, 1, 1]
    # FLAME's vertices first and unchanged; the chumpy-pickled shapedirs came through exactly.
    np.testing.assert_array_equal(assets.template[:V], flame_model["v_template"].astype(np.float32))
    sd = flame_model["shapedirs"].astype(np.float32)
    np.testing.assert_array_equal(assets.shapedirs[:V], sd[:, :, :300])
    np.testing.assert_array_equal(assets.exprdirs[:V], sd[:, :, 300:])
    np.testing.assert_array_equal(assets.posedirs[:, :V * 3],
                                  flame_model["posedirs"].reshape(-1, 36).T.astype(np.float32))
    np.testing.assert_allclose(assets.joint_regressor[:, :V], flame_model["J_regressor"].toarray(), atol=1e-7)
    # Generated vertices: no blendshapes, correctives or regressor weight.
    assert not assets.shapedirs[V:].any() and not assets.exprdirs[V:].any()
    assert not assets.posedirs[:, V * 3:].any() and not assets.joint_regressor[:, V:].any()
    assert assets.semantic_joints == {"global": 0, "neck": 1, "jaw": 2, "eye_left": 3, "eye_right": 4}
    assert assets.name == "flame2020" and assets.meta["source_file"] == "generic_model.pkl"
    assert len(assets.meta["sha256"]) == 64 and assets.meta["variant"] == "flame2020"


def test_safe_load_all_protocols(flame_model, tmp_path):
    small = {"a": np.arange(6.0).reshape(2, 3), "s": sp.csc_matrix(np.eye(3)), "r": sp.csr_matrix(np.eye(2)),
             "i": np.arange(3, dtype=np.uint32), "x": np.float64(2.5), "t": "lbs"}
    for proto in range(6):
        with _FakeChumpy() as Ch:
            blob = pickle.dumps({**small, "c": Ch(small["a"].astype(np.float32))}, protocol=proto)
        out = safe_load(blob, filename=f"proto{proto}.pkl")
        np.testing.assert_array_equal(out["a"], small["a"])
        assert out["c"].dtype == np.float32 and np.array_equal(out["c"], small["a"])
        assert isinstance(out["s"], sp.csc_matrix) and (out["s"].toarray() == np.eye(3)).all()
        assert isinstance(out["r"], sp.csr_matrix) and out["x"] == 2.5 and out["t"] == "lbs"


def _py2_pickle(model: dict) -> bytes:
    """Bytes laid out as Python 2's cPickle protocol 2 writes them (str = SHORT_BINSTRING/BINSTRING,
    old module paths), which Python 3 cannot produce: numpy arrays, a chumpy Ch with its bookkeeping
    (a set), and a scipy.sparse.csc.csc_matrix built with NEWOBJ + __dict__ state."""
    import struct

    def s(x: str) -> bytes:
        b = x.encode("latin1")
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def glob(mod: str, name: str) -> bytes:
        return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"

    def integer(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    def arr(a: np.ndarray) -> bytes:
        a = np.ascontiguousarray(a)
        dt = glob("numpy", "dtype") + s(a.dtype.str[1:]) + b"K\x00K\x01\x87R" + b"(K\x03" + s(a.dtype.str[0]) \
            + b"NNN" + integer(-1) + integer(-1) + b"K\x00tb"
        shape = b"(" + b"".join(integer(n) for n in a.shape) + b"t"
        return (glob("numpy.core.multiarray", "_reconstruct") + glob("numpy", "ndarray") + b"K\x00\x85" + s("b")
                + b"\x87R" + b"(K\x01" + shape + dt + b"\x89" + s(a.tobytes().decode("latin1")) + b"tb")

    def value(v) -> bytes:
        if isinstance(v, tuple):  # ("ch", array) or ("csc", matrix)
            kind, x = v
            if kind == "ch":
                return (glob("chumpy.ch", "Ch") + b")\x81}(" + s("x") + arr(x) + s("_dirty_vars")
                        + glob("__builtin__", "set") + b"]\x85R" + s("label") + b"Nub")
            x = x.tocsc()
            return (glob("scipy.sparse.csc", "csc_matrix") + b")\x81}(" + s("_shape") + b"(" + integer(x.shape[0])
                    + integer(x.shape[1]) + b"t" + s("data") + arr(x.data) + s("indices") + arr(x.indices)
                    + s("indptr") + arr(x.indptr) + s("maxprint") + integer(50) + s("format") + s("csc") + b"ub")
        if isinstance(v, str):
            return s(v)
        return arr(np.asarray(v))

    body = b"".join(s(k) + value(v) for k, v in model.items())
    return b"\x80\x02}(" + body + b"u."


def test_python2_byte_layout(tmp_path, flame_model):
    m = dict(flame_model, shapedirs=("ch", flame_model["shapedirs"]), J_regressor=("csc", flame_model["J_regressor"]))
    del m["J"]
    p = tmp_path / "female_model.pkl"
    p.write_bytes(_py2_pickle(m))
    raw = safe_load(p.read_bytes(), filename=str(p))
    np.testing.assert_array_equal(raw["shapedirs"], flame_model["shapedirs"])
    assert isinstance(raw["J_regressor"], sp.csc_matrix) and raw["bs_style"] == "lbs"
    np.testing.assert_array_equal(raw["J_regressor"].toarray(), flame_model["J_regressor"].toarray())
    a = load_flame(p)
    assert a.name == "flame2020" and a.template.shape[0] > 5023


def test_flame2023_plain_numpy_protocol4(flame_model, tmp_path):
    p = write_flame(tmp_path / "flame2023_Open.pkl", flame_model, chumpy_keys=(), protocol=4)
    a = load_flame(p)
    assert a.name == "flame2023_open" and "CC-BY-4.0" in a.meta["licence"]
    np.testing.assert_array_equal(a.template[:5023], flame_model["v_template"].astype(np.float32))


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, eval, "subprocess.Popen"])
def test_forbidden_global_refused(tmp_path, func):
    import subprocess

    marker = tmp_path / "PWNED"
    func = subprocess.Popen if func == "subprocess.Popen" else func
    arg = f"touch {marker}" if func is os.system else (
        f"open({str(marker)!r}, 'w')" if func is eval else ["touch", str(marker)])
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "payload": _Evil(func, arg)}, protocol=2))
    with pytest.raises(ForbiddenGlobalError) as e:
        load_flame(bad)
    msg = str(e.value)
    assert str(bad) in msg and func.__name__ in msg and "allow-list" in msg
    assert not marker.exists()


def test_reduce_abuse_refused():
    """Allowed callables only build what FLAME needs, whatever arguments the pickle gives them."""
    import codecs
    import collections
    import copyreg

    class Args:
        def __init__(self, func, *args):
            self.func, self.args = func, args

        def __reduce__(self):
            return (self.func, self.args)

    reconstruct = np.zeros(1).__reduce__()[0]
    for obj in (Args(copyreg._reconstructor, collections.OrderedDict, object, None),
                Args(reconstruct, collections.OrderedDict, (0,), b"b"),
                Args(np.dtype, 5),
                Args(codecs.encode, "eJwDAAAAAAE=", "zlib")):
        with pytest.raises(pickle.UnpicklingError, match="abuse.pkl"):
            safe_load(pickle.dumps({"x": obj}, protocol=2), filename="abuse.pkl")


def test_chumpy_operation_refused(tmp_path):
    mod, pkg = types.ModuleType("chumpy.reordering"), types.ModuleType("chumpy")

    class Select:
        def __getstate__(self):
            return {"a": np.zeros(3), "idxs": np.arange(2)}

    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    mod.Select = Select
    sys.modules["chumpy"], sys.modules["chumpy.reordering"] = pkg, mod
    try:
        blob = pickle.dumps({"shapedirs": Select()}, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.reordering"]
    with pytest.raises(ChumpyObjectError, match="(?i)re-export") as e:
        safe_load(blob, filename="ops.pkl")
    assert "chumpy.reordering.Select" in str(e.value) and "'shapedirs'" in str(e.value)


def test_chumpy_operation_in_used_or_unused_key(tmp_path, flame_model):
    mod, pkg = types.ModuleType("chumpy.ch_ops"), types.ModuleType("chumpy")

    class dot:  # noqa: N801 - chumpy's own spelling
        def __getstate__(self):
            return {"a": np.zeros(3), "b": np.zeros(3)}

    dot.__module__, dot.__qualname__ = "chumpy.ch_ops", "dot"
    mod.dot = dot
    sys.modules["chumpy"], sys.modules["chumpy.ch_ops"] = pkg, mod
    try:
        unused = pickle.dumps(dict(flame_model, J=dot()), protocol=2)  # 'J' is not used by the loader
        used = pickle.dumps(dict(flame_model, posedirs=dot()), protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch_ops"]
    (tmp_path / "flame2023.pkl").write_bytes(unused)
    assert load_flame(tmp_path / "flame2023.pkl").template.shape[0] > 5023
    (tmp_path / "flame2023.pkl").write_bytes(used)
    with pytest.raises(ChumpyObjectError, match="'posedirs'.*chumpy.ch_ops.dot"):
        load_flame(tmp_path / "flame2023.pkl")


def test_missing_file_and_env(tmp_path, monkeypatch, flame_file):
    monkeypatch.delenv("TALKSPLAT_FLAME", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        load_flame(str(tmp_path / "nope.pkl"))
    assert FLAME_URL in str(e.value) and "nope.pkl" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="TALKSPLAT_FLAME"):
        load_flame(None)
    monkeypatch.setenv("TALKSPLAT_FLAME", str(flame_file))
    assert load_flame().template.shape[0] > 5023


def test_missing_key_named(tmp_path, flame_model):
    p = write_flame(tmp_path / "flame2023.pkl", {k: v for k, v in flame_model.items() if k != "shapedirs"},
                    chumpy_keys=())
    with pytest.raises(FlameFormatError) as e:
        load_flame(p)
    assert "'shapedirs'" in str(e.value) and "flame2023.pkl" in str(e.value)
    bad = dict(flame_model, posedirs=flame_model["posedirs"][:, :, :20])
    p = write_flame(tmp_path / "flame2023_no_jaw.pkl", bad, chumpy_keys=())
    with pytest.raises(FlameFormatError, match="'posedirs'"):
        load_flame(p)


def test_unusual_geometry(tmp_path, flame_model):
    # Eyeballs not skinned to the eye joints: found as the closed components around them.
    w = flame_model["weights"].copy()
    w[1 + L * N:] = [0, 1, 0, 0, 0]
    a = load_flame(write_flame(tmp_path / "flame2023.pkl", dict(flame_model, weights=w), chumpy_keys=()))
    np.testing.assert_array_equal(a.regions["eyes"], np.arange(1 + L * N, 5023))
    # No mouth opening (hole filled): a clear error, not a crash or teeth in the neck.
    vid = lambda i, k: 1 + (i - 1) * N + k  # noqa: E731
    fill = []
    for k in range(MOUTH_COLS[0], MOUTH_COLS[0] + MOUTH_COLS[1]):
        a_, b_, c_, d_ = vid(MOUTH_ROW, k), vid(MOUTH_ROW, k + 1), vid(MOUTH_ROW + 1, k + 1), vid(MOUTH_ROW + 1, k)
        fill += [(a_, c_, b_), (a_, d_, c_)]
    f = np.concatenate([flame_model["f"], np.array(fill, np.uint32)])
    p = write_flame(tmp_path / "closed.pkl", dict(flame_model, f=f), chumpy_keys=())
    with pytest.raises(FlameFormatError, match="mouth opening"):
        load_flame(p)


# ----------------------------------------------------------------------------- rig evaluation
def _rot_about(p: torch.Tensor, aa, centre: torch.Tensor) -> torch.Tensor:
    R = axis_angle_to_matrix(torch.tensor(aa, dtype=torch.float32))
    return (p - centre) @ R.T + centre


def test_zero_params_is_template(rig, assets):
    out = rig(rig.zero_params())
    torch.testing.assert_close(out.vertices[0], torch.as_tensor(assets.template), atol=1e-6, rtol=0)


def test_jaw_moves_lower_teeth_only(rig):
    p = rig.zero_params()
    rest = rig(p)
    p.jaw[:] = torch.tensor([0.3, 0.0, 0.0])
    out = rig(p)
    up, lo, tongue = rig.region("upper_teeth"), rig.region("lower_teeth"), rig.region("tongue")
    torch.testing.assert_close(out.vertices[0, up], rest.vertices[0, up], atol=1e-6, rtol=0)
    jaw_j = rest.joints[0, 2]
    for idx in (lo, tongue):
        torch.testing.assert_close(out.vertices[0, idx], _rot_about(rest.vertices[0, idx], [0.3, 0, 0], jaw_j),
                                   atol=1e-5, rtol=0)
    assert (out.vertices[0, lo, 1] < rest.vertices[0, lo, 1] - 1e-3).float().mean() > 0.5  # opens downwards


def test_neck_moves_upper_teeth_rigidly(rig):
    p = rig.zero_params()
    rest = rig(p)
    p.neck[:] = torch.tensor([0.1, 0.4, 0.0])
    out = rig(p)
    neck_j = rest.joints[0, 1]
    for name in ("upper_teeth", "lower_teeth"):
        idx = rig.region(name)
        torch.testing.assert_close(out.vertices[0, idx], _rot_about(rest.vertices[0, idx], [0.1, 0.4, 0], neck_j),
                                   atol=1e-5, rtol=0)


def test_teeth_behind_mouth(assets, flame_model):
    v = flame_model["v_template"]
    loop = _mouth_loop(flame_model)
    P = v[loop]
    t = assets.template
    up, lo = t[assets.regions["upper_teeth"]], t[assets.regions["lower_teeth"]]
    lip_y, front = np.median(P[:, 1]), P[:, 2].max()
    assert up[:, 1].min() >= lip_y - 1e-6 and lo[:, 1].max() <= lip_y + 1e-6
    for teeth in (up, lo):
        assert teeth[:, 2].max() < front - 1e-3  # behind the lips
        assert teeth[:, 2].max() > front - 0.015  # ... but close behind them
        assert abs(teeth[:, 0].mean()) < 1e-3  # centred
        assert teeth[:, 0].max() < AXES[0] and teeth[:, 0].min() > -AXES[0]
    inner = t[5023:]
    assert (((inner / AXES) ** 2).sum(1) < 1.0).all(), "mouth interior must stay inside the head"
    # Each tooth box and the tongue are closed and outward-facing (positive signed volume).
    f = assets.faces[9976:]
    tri = assets.template[f]
    assert np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() > 0
    assert set(assets.face_regions) >= {"mouth_interior", "eyeballs"}
    assert np.array_equal(np.sort(assets.face_regions["mouth_interior"]), np.arange(9976, assets.faces.shape[0]))


def test_regions(assets, flame_model):
    v = flame_model["v_template"]
    loop = _mouth_loop(flame_model)
    lips = assets.regions["lips"]
    assert set(loop.tolist()) <= set(lips.tolist())
    lv = v[lips]
    assert lv[:, 1].max() > v[loop, 1].max() + 0.003 and lv[:, 1].min() < v[loop, 1].min() - 0.003
    assert np.linalg.norm(lv - v[loop].mean(0), axis=1).max() < 0.05
    n_head = 1 + L * N
    np.testing.assert_array_equal(assets.regions["eyes"], np.arange(n_head, 5023))
    assert np.array_equal(assets.regions["teeth"], np.arange(5023, 5023 + len(assets.regions["teeth"])))
    neck = set(assets.regions["neck"].tolist())
    assert set(range(1 + (L - 1) * N, n_head)) <= neck  # the neck loop
    face = set(assets.regions["face"].tolist())
    nose = 1 + (60 - 1) * N + N // 2  # front centre, between eyes and mouth
    back = 1 + (60 - 1) * N  # same ring, back of the head
    assert nose in face and back not in face and not face & neck
    assert not face & set(assets.regions["eyes"].tolist())
    assert len(assets.face_regions["eyeballs"]) == 2 * 2 * EYE_S * (EYE_R - 1)


def test_load_rig_end_to_end(flame_file):
    rig = load_rig(f"flame:{flame_file}")
    assert rig.name == "flame2020" and rig.num_vertices > 5023
    p = rig.zero_params(2)
    p.expression[:, 0] = 1.0
    p.eyes[0, 0] = torch.tensor([0.0, 0.3, 0.0])
    out = rig(p)
    assert out.vertices.shape == (2, rig.num_vertices, 3) and torch.isfinite(out.vertices).all()
    eye_l = rig.region("eyes")[:591]
    assert not torch.allclose(out.vertices[0, eye_l], out.vertices[1, eye_l])


# ----------------------------------------------------------------------------- damaged files
def test_error_classes():
    from talksplat.core.errors import InputError, TalksplatError
    from talksplat.rigs.flame import RigFileError

    assert issubclass(RigFileError, TalksplatError) and issubclass(RigFileError, FileNotFoundError)
    assert issubclass(FlameFormatError, InputError) and issubclass(FlameFormatError, ValueError)
    for cls in (ForbiddenGlobalError, ChumpyObjectError):
        assert issubclass(cls, TalksplatError) and issubclass(cls, pickle.UnpicklingError)


def _tiny_flame(rng) -> dict:
    """FLAME's keys and layout on a closed tetrahedron (4 vertices): reads, then has no mouth opening."""
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]) * 0.05
    jreg = sp.csc_matrix(np.full((5, 4), 0.25))
    return {"v_template": v, "f": np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.uint32),
            "shapedirs": rng.normal(size=(4, 3, 310)) * 1e-3, "posedirs": rng.normal(size=(4, 3, 36)) * 1e-3,
            "J_regressor": jreg, "weights": np.eye(5)[[1, 1, 2, 3]],
            "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
            "J": jreg @ v, "bs_style": "lbs"}


def _pickled(model: dict, fmt) -> bytes:
    """``fmt``: a pickle protocol (0-5, shapedirs as a chumpy Ch) or "py2" (Python 2's byte layout)."""
    if fmt == "py2":
        m = dict(model, shapedirs=("ch", model["shapedirs"]), J_regressor=("csc", model["J_regressor"]))
        del m["J"]
        return _py2_pickle(m)
    with _FakeChumpy() as Ch:
        return pickle.dumps(dict(model, shapedirs=Ch(model["shapedirs"])), protocol=fmt)


def _readable_prefix(path) -> str:
    return f"{path}: not a readable FLAME pickle ("


def test_corrupt_pickle_says_not_readable(tmp_path, flame_file):
    from talksplat.rigs.safe_pickle import FlamePickleError

    p = tmp_path / "generic_model.pkl"
    cases = {
        "random": (b"\x9d" + np.random.default_rng(0).bytes(500), "invalid load key, '\\x9d'."),
        "empty": (b"", "EOFError"),
        # BINBYTES8 of 2**50 bytes: refused before anything asks for that much memory
        "absurd_size": (b"\x80\x04\x8e" + (1 << 50).to_bytes(8, "little"), "(pickle data was truncated)"),
        "text": (b"hello FLAME\n", "Memo value not found at index 101"),  # pickle op h = BINGET
        # LONG_BINPUT with a damaged index: CPython would allocate and zero-fill a memo table that large
        "memo_index": (b"\x80\x02]r" + (0xFFFFFFF0).to_bytes(4, "little") + b".",
                       "memo index 4294967280 at byte 3 is out of range"),
    }
    for name, (data, reason) in cases.items():
        p.write_bytes(data)
        with pytest.raises(FlameFormatError) as e:
            load_flame(p)
        msg = str(e.value)
        assert msg.startswith(_readable_prefix(p)) and msg.endswith(")") and "\n" not in msg, (name, msg)
        assert reason in msg, (name, msg)
        assert isinstance(e.value, FlamePickleError) and isinstance(e.value, pickle.UnpicklingError)
    # the real (synthetic) model truncated: at its first bytes, inside the arrays, one byte short of the end
    data = flame_file.read_bytes()
    for cut in (1, 2, 57, 40_000, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(FlameFormatError) as e:
            load_flame(p)
        assert str(e.value).startswith(_readable_prefix(p)) and "\n" not in str(e.value), (cut, str(e.value))


def test_malformed_values_are_format_errors(tmp_path):
    rng = np.random.default_rng(3)
    tiny = _tiny_flame(rng)
    p = tmp_path / "flame2023.pkl"
    bad = {
        "v_template": ("abc", "key 'v_template' has shape []"),
        "f": (np.array([[0, 1, 2**40]], np.int64), "key 'f' has vertex indices outside"),
        "J_regressor": (sp.csc_matrix((1_000_000, 1_000_000)), "key 'J_regressor' is a sparse matrix"),
        "kintree_table": (np.array([[np.nan, 0, 1, 1, 1], [0, 1, 2, 3, 4]]), "key 'kintree_table' holds non-finite"),
        "weights": (np.array([["a"] * 5] * 4), "key 'weights' has shape [4, 5] dtype <U1"),
    }
    for key, (value, expected) in bad.items():
        p.write_bytes(pickle.dumps(dict(tiny, **{key: value}), protocol=4))
        with pytest.raises(FlameFormatError) as e:
            load_flame(p)
        assert str(e.value).startswith(f"{p}: ") and expected in str(e.value) and "\n" not in str(e.value)
    # the tiny model itself reads, then fails on its geometry (no mouth opening), still one line
    p.write_bytes(_pickled(tiny, 2))
    with pytest.raises(FlameFormatError, match="no open boundary"):
        load_flame(p)


@pytest.mark.parametrize("key", ["v_template", "shapedirs", "posedirs", "J_regressor", "weights"])
def test_nan_in_flame_arrays_refused(tmp_path, key):
    model = _tiny_flame(np.random.default_rng(4))
    if key == "J_regressor":
        jr = model[key].copy()
        jr.data[3] = np.nan
        model[key] = jr
    else:
        model[key] = model[key].copy()
        model[key].reshape(-1)[5] = np.inf if key == "weights" else np.nan
    p = tmp_path / "generic_model.pkl"
    for fmt in (2, 5, "py2"):
        p.write_bytes(_pickled(model, fmt))
        with pytest.raises(FlameFormatError) as e:
            load_flame(p)
        assert str(e.value) == f"{p}: key '{key}' holds non-finite values (NaN or Inf)"


def test_nan_in_full_size_model_refused(tmp_path, flame_model):
    sd = flame_model["shapedirs"].copy()
    sd[5000, 2, 399] = np.nan
    p = write_flame(tmp_path / "flame2023.pkl", dict(flame_model, shapedirs=sd))
    with pytest.raises(FlameFormatError) as e:
        load_flame(p)
    assert str(e.value) == f"{p}: key 'shapedirs' holds non-finite values (NaN or Inf)"


def test_property_damaged_flame_pickles(tmp_path, flame_file):
    """Random bytes, truncations at random offsets, random byte changes and NaN / Inf injected into
    the arrays: load_flame returns finite assets or raises a one-line TalksplatError, nothing else."""
    from talksplat.core.errors import TalksplatError

    rng = np.random.default_rng(1234)
    model = _tiny_flame(rng)
    formats = [0, 1, 2, 3, 4, 5, "py2"]
    valid = {fmt: _pickled(model, fmt) for fmt in formats}
    p = tmp_path / "generic_model.pkl"
    arrays = ["v_template", "shapedirs", "posedirs", "weights", "J_regressor"]
    for i in range(40):
        fmt = formats[int(rng.integers(len(formats)))]
        kind, key = i % 4, None
        if kind == 0:
            data = rng.bytes(int(rng.integers(0, 4096)))
        elif kind == 1:
            data = valid[fmt][:int(rng.integers(0, len(valid[fmt])))]
        elif kind == 2:
            b = bytearray(valid[fmt])
            for j in rng.integers(0, len(b), size=int(rng.integers(1, 4))):
                b[j] = int(rng.integers(0, 256))
            data = bytes(b)
        else:
            key = arrays[int(rng.integers(len(arrays)))]
            m = dict(model)
            a = m[key].copy()
            (a.data if key == "J_regressor" else a.reshape(-1))[int(rng.integers(a.nnz if key == "J_regressor"
                                                                                 else a.size))] = \
                [np.nan, np.inf, -np.inf][int(rng.integers(3))]
            m[key] = a
            data = _pickled(m, fmt)
        p.write_bytes(data)
        try:
            assets = load_flame(p)
        except TalksplatError as e:
            msg = str(e)
            assert msg.startswith(f"{p}: ") and "\n" not in msg, (i, msg)
            if key is not None:
                assert msg == f"{p}: key '{key}' holds non-finite values (NaN or Inf)", (i, msg)
        else:
            assert key is None, i
            assert all(np.all(np.isfinite(getattr(assets, k))) for k in ("template", "shapedirs", "exprdirs",
                                                                         "posedirs", "weights")), i
    # and the full-size model truncated at random offsets
    data = flame_file.read_bytes()
    for cut in rng.integers(0, len(data), size=2):
        p.write_bytes(data[:int(cut)])
        with pytest.raises(FlameFormatError) as e:
            load_flame(p)
        assert str(e.value).startswith(_readable_prefix(p)) and "\n" not in str(e.value)


def test_damaged_numpy_and_scipy_states_never_reach_their_kernels(tmp_path):
    """States numpy's dtype.__setstate__ and scipy's sparse kernels trust (found by fuzzing: each
    crashed the interpreter with a segmentation fault) are refused as damaged files."""
    p = tmp_path / "generic_model.pkl"
    # a dtype state that lost two of its Nones: numpy 1.26 segfaults applying it
    blob = pickle.dumps({"v_template": np.zeros((4, 3))}, protocol=2)
    full = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    assert blob.count(full) == 1
    p.write_bytes(blob.replace(full, b"NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"))
    with pytest.raises(FlameFormatError, match=r"not a readable FLAME pickle \(numpy dtype state .* refused\)"):
        load_flame(p)
    # array data that does not fill the array's shape
    short = pickle.dumps({"v_template": np.zeros((4, 3))}, protocol=2).replace(b"K\x04K\x03\x86", b"K\x05K\x03\x86")
    p.write_bytes(short)
    with pytest.raises(FlameFormatError, match="needs 120 bytes, the file holds 96"):
        load_flame(p)
    # compressed-sparse index pointers / indices out of range: scipy's toarray writes out of bounds
    for indptr, indices in (([0, 5, 10, 15, -7], None), (None, 99)):
        m = sp.csc_matrix(np.full((5, 4), 0.25))
        if indptr is not None:
            m.indptr = np.array(indptr, np.int32)
        if indices is not None:
            m.indices = m.indices.copy()
            m.indices[3] = indices
        p.write_bytes(pickle.dumps({"J_regressor": m}, protocol=2))
        with pytest.raises(FlameFormatError, match="malformed scipy csc_matrix"):
            load_flame(p)
