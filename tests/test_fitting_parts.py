"""Fitting building blocks: image losses/metrics, landmark region weights, 3DGS PLY export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from talksplat.avatar import init_avatar
from talksplat.fitting.losses import photometric_loss, psnr, ssim, ssim_map
from talksplat.fitting.ply import export_ply, ply_property_names, read_ply
from talksplat.fitting.regions import (LEFT_EYE, LIPS_OUTER, RIGHT_EYE, inter_ocular_distance, loss_weight_map,
                                       region_mask)

# ----------------------------------------------------------------------------------- losses


def _ssim_numpy(x: np.ndarray, y: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Independent SSIM: [H, W, C] float64, Gaussian window truncated to ``window`` taps, zero padding."""
    truncate = (window // 2) / sigma

    def blur(a):
        return np.stack([gaussian_filter(a[..., c], sigma, truncate=truncate, mode="constant", cval=0.0)
                         for c in range(a.shape[-1])], -1)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def test_ssim_identity_and_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 40, generator=g)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    values = []
    for level in (0.02, 0.1, 0.3):
        y = (x + level * torch.randn(x.shape, generator=g)).clamp(0, 1)
        values.append(float(ssim(x, y)))
    assert 1.0 > values[0] > values[1] > values[2]
    # [H, W, 3] input is accepted and agrees with the batched layout.
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    a = ssim(x[0].permute(1, 2, 0), y[0].permute(1, 2, 0))
    b = ssim(x[:1], y[:1])
    assert float(a) == pytest.approx(float(b), abs=1e-6)
    assert ssim_map(x, y).shape == (2, 3, 32, 40)
    assert ssim_map(x[0].permute(1, 2, 0), y[0].permute(1, 2, 0)).shape == (32, 40, 3)


def test_ssim_matches_scipy_reference():
    rng = np.random.default_rng(1)
    x = rng.random((32, 40, 3))
    y = np.clip(x + 0.15 * rng.normal(size=x.shape), 0, 1)
    ref = _ssim_numpy(x, y)
    ours = float(ssim(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)))
    assert abs(ours - ref) < 1e-4
    # Also on unrelated images (low SSIM).
    z = rng.random((32, 40, 3))
    assert abs(float(ssim(torch.tensor(x), torch.tensor(z))) - _ssim_numpy(x, z)) < 1e-4


def test_ssim_gradient_finite_difference():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    ssim(x, y).backward()
    idx = (0, 1, 3, 5)
    eps = 1e-6
    with torch.no_grad():
        xp, xm = x.clone(), x.clone()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (ssim(xp, y) - ssim(xm, y)) / (2 * eps)
    assert x.grad[idx].abs() > 1e-6
    assert float(x.grad[idx]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_psnr_known_values_and_mask():
    x = torch.full((16, 20, 3), 0.3)
    assert float(psnr(x + 0.1, x)) == pytest.approx(20.0, abs=1e-4)
    assert float(psnr(x + 0.01, x)) == pytest.approx(40.0, abs=1e-3)
    y = x.clone()
    y[:8] += 0.1  # error only in the top half
    y[8:] += 0.5  # ... and a large one below
    mask = torch.zeros(16, 20, dtype=torch.bool)
    mask[:8] = True
    assert float(psnr(y, x, mask)) == pytest.approx(20.0, abs=1e-4)
    assert float(psnr(y, x, mask.float())) == pytest.approx(20.0, abs=1e-4)
    assert float(psnr(y, x)) < 20.0
    # Batched images with a per-image mask.
    assert float(psnr(y[None].repeat(2, 1, 1, 1), x[None].repeat(2, 1, 1, 1), mask)) == pytest.approx(20.0, abs=1e-4)


def test_photometric_loss_weighting():
    g = torch.Generator().manual_seed(3)
    r = torch.rand(2, 24, 28, 3, generator=g)
    t = torch.rand(2, 24, 28, 3, generator=g)
    plain = photometric_loss(r, t)
    expected = 0.8 * (r - t).abs().mean() + 0.2 * (1 - ssim(r.permute(0, 3, 1, 2), t.permute(0, 3, 1, 2)))
    assert float(plain) == pytest.approx(float(expected), rel=1e-6)
    const = photometric_loss(r, t, weight=torch.full((24, 28), 3.7))
    assert float(const) == pytest.approx(float(plain), rel=1e-5)
    const_b = photometric_loss(r, t, weight=torch.full((2, 24, 28), 0.5))
    assert float(const_b) == pytest.approx(float(plain), rel=1e-5)
    # Single image layout.
    assert float(photometric_loss(r[0], t[0], lambda_dssim=0.0)) == pytest.approx(float((r[0] - t[0]).abs().mean()),
                                                                               rel=1e-6)
    # A weight that zeroes the right half ignores errors there (L1 only).
    w = torch.ones(24, 28)
    w[:, 14:] = 0
    t2 = t.clone()
    t2[:, :, 14:] = 5.0
    a = photometric_loss(r, t, weight=w, lambda_dssim=0.0)
    b = photometric_loss(r, t2, weight=w, lambda_dssim=0.0)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    r.requires_grad_(True)
    photometric_loss(r, t, weight=w, lambda_dssim=0.0).backward()  # SSIM windows would reach across
    assert r.grad is not None and torch.isfinite(r.grad).all()
    assert (r.grad[:, :, 14:] == 0).all() and (r.grad[:, :, :14] != 0).any()


# ----------------------------------------------------------------------------------- regions


def _circle(lm, indices, centre, radius, start_angle):
    n = len(indices)
    for k, i in enumerate(indices):
        a = start_angle + 2 * math.pi * k / n
        lm[i] = (centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a))


def _synthetic_landmarks():
    """Eyes: circles of radius 5 around (45, 50) and (75, 50) with outer corners 33 at (40, 50) and
    263 at (80, 50) (inter-ocular distance 40); outer lips: circle of radius 10 around (60, 90)."""
    lm = np.full((478, 2), 60.0)
    _circle(lm, RIGHT_EYE, (45.0, 50.0), 5.0, math.pi)  # 33 first -> angle pi
    _circle(lm, LEFT_EYE, (75.0, 50.0), 5.0, 0.0)  # 263 first -> angle 0
    _circle(lm, LIPS_OUTER, (60.0, 90.0), 10.0, math.pi)
    return lm


def _dist(h, w, centre):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1])  # pixel centres at +0.5


def test_region_masks_cover_polygons():
    lm = _synthetic_landmarks()
    H, W = 120, 128
    assert inter_ocular_distance(lm) == pytest.approx(40.0)
    mouth = region_mask(lm, H, W, "mouth", dilate_frac=0.0)
    assert mouth.shape == (H, W) and mouth.dtype == bool
    d = _dist(H, W, (60.0, 90.0))
    assert mouth[d < 9.0].all()
    assert not mouth[d > 11.0].any()
    eyes = region_mask(lm, H, W, "eyes", dilate_frac=0.0)
    for c in ((45.0, 50.0), (75.0, 50.0)):
        assert eyes[_dist(H, W, c) < 4.0].all()
    far = (_dist(H, W, (45.0, 50.0)) > 6.0) & (_dist(H, W, (75.0, 50.0)) > 6.0)
    assert not eyes[far].any()
    assert not (eyes & mouth).any()
    with pytest.raises(ValueError):
        region_mask(lm, H, W, "nose")


def test_region_mask_dilation_grows():
    lm = _synthetic_landmarks()
    H, W = 120, 128
    base = region_mask(lm, H, W, "mouth", dilate_frac=0.0)
    grown = region_mask(lm, H, W, "mouth", dilate_frac=0.15)  # 0.15 * 40 = 6 px
    assert (grown >= base).all() and grown.sum() > base.sum()
    d = _dist(H, W, (60.0, 90.0))
    assert grown[d < 14.5].all()
    assert not grown[d > 17.5].any()
    assert not grown[:40].any()  # far away: empty


def test_loss_weight_map_values():
    lm = _synthetic_landmarks()
    H, W = 120, 128
    w = loss_weight_map(lm, H, W, mouth=2.0, eyes=1.5)
    assert w.shape == (H, W) and w.dtype == np.float32
    assert w[90, 60] == 2.0 and w[50, 45] == 1.5 and w[50, 75] == 1.5
    assert w[5, 5] == 1.0 and w[115, 120] == 1.0
    assert set(np.unique(w).tolist()) == {1.0, 1.5, 2.0}


# ----------------------------------------------------------------------------------- PLY


def _random_avatar(rig):
    avatar = init_avatar(rig, per_face=1, sh_degree=1)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        avatar.sh_rest.copy_(torch.randn(avatar.sh_rest.shape, generator=g))
        avatar.local_means.add_(0.1 * torch.randn(avatar.local_means.shape, generator=g))
        avatar.local_quats.copy_(torch.randn(avatar.local_quats.shape, generator=g))
        avatar.log_scales.add_(0.2 * torch.randn(avatar.log_scales.shape, generator=g))
        avatar.opacity_logits.copy_(torch.randn(avatar.opacity_logits.shape, generator=g))
    return avatar


def test_export_ply_roundtrip(sphere_rig, tmp_path):
    avatar = _random_avatar(sphere_rig)
    n = avatar.num_gaussians
    path = export_ply(avatar, sphere_rig, tmp_path / "out" / "avatar.ply")
    assert [p.name for p in path.parent.iterdir()] == ["avatar.ply"]  # no temp file left behind
    raw = path.read_bytes()
    assert raw.startswith(b"ply\nformat binary_little_endian 1.0\n")
    header = raw[:raw.index(b"end_header")].decode()
    assert f"comment talksplat rig {sphere_rig.name} {sphere_rig.checksum}\n" in header
    assert f"element vertex {n}\n" in header
    assert "property int binding\n" in header

    data = read_ply(path)
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "binding"])
    assert list(data) == names
    assert ply_property_names(1) == names[:-1]
    assert all(v.shape == (n,) for v in data.values())
    assert data["x"].dtype == np.float32 and data["binding"].dtype == np.int32

    with torch.no_grad():
        means, quats, scales = avatar.posed_geometry(sphere_rig.template[None], sphere_rig.faces)
    xyz = np.stack([data["x"], data["y"], data["z"]], 1)
    np.testing.assert_allclose(xyz, means[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.stack([data["nx"], data["ny"], data["nz"]], 1), 0.0)
    sc = np.exp(np.stack([data[f"scale_{i}"] for i in range(3)], 1))
    np.testing.assert_allclose(sc, scales[0].numpy(), rtol=1e-5)
    rot = np.stack([data[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(rot, quats[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rot, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.stack([data[f"f_dc_{i}"] for i in range(3)], 1), avatar.sh_dc[:, 0].detach().numpy())
    # f_rest is channel-major: f_rest_{c * (K-1) + j} = sh_rest[:, j, c].
    rest = avatar.sh_rest.detach().numpy()  # [N, 3, 3] = [N, K-1, channel]
    for c in range(3):
        for j in range(3):
            np.testing.assert_array_equal(data[f"f_rest_{c * 3 + j}"], rest[:, j, c])
    np.testing.assert_allclose(data["opacity"], avatar.opacity_logits.detach().numpy())
    np.testing.assert_array_equal(data["binding"], avatar.binding.numpy())


def test_export_ply_posed_vertices_and_errors(sphere_rig, tmp_path):
    avatar = _random_avatar(sphere_rig)
    v = sphere_rig.template * 1.5 + torch.tensor([0.0, 0.1, -0.2])
    path = export_ply(avatar, sphere_rig, tmp_path / "posed.ply", vertices=v.numpy())
    data = read_ply(path)
    with torch.no_grad():
        means, _, scales = avatar.posed_geometry(v[None], sphere_rig.faces)
    np.testing.assert_allclose(np.stack([data["x"], data["y"], data["z"]], 1), means[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.exp(data["scale_0"]), scales[0, :, 0].numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="vertices"):
        export_ply(avatar, sphere_rig, tmp_path / "bad.ply", vertices=v[:10])
    assert not (tmp_path / "bad.ply").exists()

    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1.0\n")
    with pytest.raises(ValueError, match="ascii.ply"):
        read_ply(ascii_ply)
    list_ply = tmp_path / "list.ply"
    list_ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement face 1\n"
                         b"property list uchar int vertex_indices\nend_header\n")
    with pytest.raises(ValueError, match="list.ply"):
        read_ply(list_ply)
    truncated = tmp_path / "short.ply"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="short.ply"):
        read_ply(truncated)
