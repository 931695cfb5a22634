"""Tests of talksplat.render (CPU backend) against an independent dense reference,
gsplat's pure-torch projection, finite differences, and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talksplat.render import (
    intrinsics,
    look_at,
    orbit_cameras,
    project_gaussians,
    rasterization,
    sh_to_rgb,
)

# ----------------------------------------------------------------------------- reference


def _ref_rotmat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix from a wxyz quaternion via the axis-angle / Rodrigues formula."""
    q = q / np.linalg.norm(q)
    w, v = q[0], q[1:]
    s = np.linalg.norm(v)
    if s < 1e-15:
        return np.eye(3)
    axis = v / s
    ang = 2.0 * math.atan2(s, w)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(ang) * Kx + (1 - math.cos(ang)) * Kx @ Kx


def reference_render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=None,
                     eps2d=0.3, near=0.01, far=1e10):
    """Straightforward per-Gaussian / dense-pixel numpy float64 renderer.

    Returns colors [C,H,W,3], alphas [C,H,W,1], expected depth [C,H,W,1].
    """
    means = np.asarray(means, np.float64)
    C = viewmats.shape[0]
    out_c = np.zeros((C, H, W, 3))
    out_a = np.zeros((C, H, W, 1))
    out_d = np.zeros((C, H, W, 1))
    py, px = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    for ci in range(C):
        V = np.asarray(viewmats[ci], np.float64)
        K = np.asarray(Ks[ci], np.float64)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        items = []
        for i in range(means.shape[0]):
            p = V[:3, :3] @ means[i] + V[:3, 3]
            if not (near <= p[2] <= far):
                continue
            Rg = _ref_rotmat(np.asarray(quats[i], np.float64))
            S = np.diag(np.asarray(scales[i], np.float64))
            cov = V[:3, :3] @ (Rg @ S @ S @ Rg.T) @ V[:3, :3].T
            # Jacobian at the fov-clamped point (gsplat rule: 1.3x the half-fov limits)
            limx_p = (W - cx) / fx + 0.3 * 0.5 * W / fx
            limx_n = cx / fx + 0.3 * 0.5 * W / fx
            limy_p = (H - cy) / fy + 0.3 * 0.5 * H / fy
            limy_n = cy / fy + 0.3 * 0.5 * H / fy
            u = min(max(p[0] / p[2], -limx_n), limx_p)
            v = min(max(p[1] / p[2], -limy_n), limy_p)
            J = np.array([[fx / p[2], 0, -fx * u / p[2]], [0, fy / p[2], -fy * v / p[2]]])
            cov2 = J @ cov @ J.T + eps2d * np.eye(2)
            conic = np.linalg.inv(cov2)
            m2 = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
            col = colors[ci][i] if colors.ndim == 3 else colors[i]
            items.append((p[2], m2, conic, float(opacities[i]), np.asarray(col, np.float64)))
        items.sort(key=lambda t: t[0])
        T = np.ones((H, W))
        done = np.zeros((H, W), bool)
        acc = np.zeros((H, W, 3))
        dep = np.zeros((H, W))
        for z, m2, conic, o, col in items:
            dx = m2[0] - px
            dy = m2[1] - py
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            alpha = np.minimum(0.999, o * np.exp(-sigma))
            use = (sigma >= 0) & (alpha >= 1.0 / 255.0) & ~done
            nT = T * (1 - alpha)
            stop = use & (nT <= 1e-4)
            done |= stop
            use &= ~stop
            wgt = np.where(use, alpha * T, 0.0)
            acc += wgt[..., None] * col
            dep += wgt * z
            T = np.where(use, nT, T)
        bg = np.zeros(3) if backgrounds is None else np.asarray(backgrounds[ci], np.float64)
        out_c[ci] = acc + T[..., None] * bg
        out_a[ci, ..., 0] = 1 - T
        out_d[ci, ..., 0] = dep / np.maximum(1 - T, 1e-10)
    return out_c, out_a, out_d


# ----------------------------------------------------------------------------- scenes


def small_scene(n=12, seed=0, dtype=torch.float64, W=24, H=20, C=2):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.5, 0.4, 0.3], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.02 + 0.06 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.3 + 0.6 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    eyes = [(0.1, -0.05, 1.2), (-0.4, 0.2, 1.0), (0.0, 0.0, -1.1)]
    viewmats = torch.stack([look_at(torch.tensor(e, dtype=dtype), torch.zeros(3, dtype=dtype)) for e in eyes[:C]])
    K = intrinsics(fov_deg=40.0, width=W, height=H, dtype=dtype)
    K[0, 2] += 0.7  # off-centre principal point
    Ks = K[None].repeat(C, 1, 1)
    Ks[-1, 0, 0] *= 1.1
    bgs = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.3, 0.1], [0.0, 0.0, 0.0]], dtype=dtype)[:C]
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, viewmats=viewmats,
                Ks=Ks, width=W, height=H, backgrounds=bgs)


def _render(sc, **kw):
    args = dict(sc)
    args.update(kw)
    return rasterization(**args, backend="cpu")


def _check_against_reference(sc, tol=1e-4, **kw):
    col, alp, meta = _render(sc, **kw)
    rc, ra, rd = reference_render(sc["means"].numpy(), sc["quats"].numpy(), sc["scales"].numpy(),
                                  sc["opacities"].numpy(), sc["colors"].numpy(), sc["viewmats"].numpy(),
                                  sc["Ks"].numpy(), sc["width"], sc["height"],
                                  None if sc["backgrounds"] is None else sc["backgrounds"].numpy())
    np.testing.assert_allclose(col.detach().numpy(), rc, atol=tol, rtol=0)
    np.testing.assert_allclose(alp.detach().numpy(), ra, atol=tol, rtol=0)
    # expected depth is only meaningful where something was rendered
    m = ra > 1e-3
    np.testing.assert_allclose(meta["expected_depth"].detach().numpy()[m], rd[m], atol=tol, rtol=0)
    assert ra.max() > 0.5  # the scene is actually visible
    return col, alp, meta


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_matches_dense_reference(tile_size):
    sc = small_scene(n=12, seed=1)
    _check_against_reference(sc, tile_size=tile_size)


def test_matches_reference_float32_and_saturation():
    # many overlapping opaque Gaussians: exercises the 1e-4 transmittance termination
    sc = small_scene(n=40, seed=3, dtype=torch.float64, C=1)
    sc["opacities"] = torch.full_like(sc["opacities"], 0.98)
    sc["opacities"][::3] = 0.9995  # above the 0.999 alpha clamp
    sc["scales"] = sc["scales"] * 1.5
    col, alp, _ = _check_against_reference(sc)
    assert (alp > 1 - 1e-3).any()
    sc32 = {k: (v.float() if torch.is_tensor(v) else v) for k, v in sc.items()}
    c32, a32, _ = _render(sc32)
    assert c32.dtype == torch.float32
    np.testing.assert_allclose(c32.numpy(), col.numpy(), atol=2e-4)


def test_non_multiple_image_size_and_no_background():
    sc = small_scene(n=10, seed=4, W=37, H=29)
    sc["backgrounds"] = None
    _check_against_reference(sc, tile_size=8)


def _add_outside_fov(sc, k=4):
    """Append big Gaussians whose centres are beyond gsplat's 1.3x fov clamp but whose
    footprint still reaches into the image (exercises the Jacobian clamping)."""
    dt = sc["means"].dtype
    m = torch.tensor([[0.9, 0.0, 0.0], [-0.9, 0.1, 0.0], [0.0, 0.75, 0.1], [0.8, -0.7, 0.0]], dtype=dt)[:k]
    sc = dict(sc)
    sc["means"] = torch.cat([sc["means"], m])
    sc["quats"] = torch.cat([sc["quats"], torch.tensor([[1.0, 0.2, 0.1, 0.0]], dtype=dt).repeat(k, 1)])
    sc["scales"] = torch.cat([sc["scales"], torch.full((k, 3), 0.25, dtype=dt)])
    sc["opacities"] = torch.cat([sc["opacities"], torch.full((k,), 0.5, dtype=dt)])
    sc["colors"] = torch.cat([sc["colors"], torch.rand(k, 3, dtype=dt, generator=torch.Generator().manual_seed(0))])
    return sc


def test_outside_fov_clamp_matches_reference():
    sc = _add_outside_fov(small_scene(n=6, seed=9, C=1))
    radii, means2d, *_ = project_gaussians(sc["means"], sc["quats"], sc["scales"], sc["viewmats"], sc["Ks"],
                                           sc["width"], sc["height"], opacities=sc["opacities"])
    K = sc["Ks"][0]
    lim = (sc["width"] - K[0, 2]) / K[0, 0] + 0.3 * 0.5 * sc["width"] / K[0, 0]
    pc = sc["means"] @ sc["viewmats"][0, :3, :3].T + sc["viewmats"][0, :3, 3]
    outside = (pc[:, 0] / pc[:, 2]).abs() > lim
    assert ((radii[0] > 0).all(-1) & outside).any()  # some visible Gaussian is beyond the clamp
    _check_against_reference(sc)


def test_projection_matches_gsplat_torch_impl():
    from gsplat.cuda._torch_impl import _fully_fused_projection

    from talksplat.render import quat_scale_to_covar

    sc = _add_outside_fov(small_scene(n=26, seed=5, C=3, W=40, H=30))
    covars = quat_scale_to_covar(sc["quats"], sc["scales"])
    r_ref, m_ref, d_ref, c_ref, _ = _fully_fused_projection(
        sc["means"], covars, sc["viewmats"], sc["Ks"], 40, 30, eps2d=0.3, near_plane=0.01, far_plane=1e10
    )
    radii, means2d, depths, conics, _ = project_gaussians(
        sc["means"], sc["quats"], sc["scales"], sc["viewmats"], sc["Ks"], 40, 30, eps2d=0.3
    )
    assert radii.shape == r_ref.shape == (3, 30, 2) and radii.dtype == torch.int32
    assert torch.equal(radii, r_ref.to(torch.int32))
    v = (radii > 0).all(-1)
    assert v.sum() > 10
    torch.testing.assert_close(means2d[v], m_ref[v], atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(depths, d_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(conics[v], c_ref[v], atol=1e-8, rtol=1e-7)


def test_opacity_aware_radii_and_radius_clip():
    sc = small_scene(n=30, seed=5, C=1, W=40, H=30)
    r_plain, *_ = project_gaussians(sc["means"], sc["quats"], sc["scales"], sc["viewmats"], sc["Ks"], 40, 30)
    op = sc["opacities"].clone()
    op[0] = 0.5 / 255.0
    r_op, *_ = project_gaussians(sc["means"], sc["quats"], sc["scales"], sc["viewmats"], sc["Ks"], 40, 30, opacities=op)
    assert (r_op[0, 0] == 0).all()
    assert (r_op <= r_plain).all() and (r_op < r_plain).any()
    r_clip, *_ = project_gaussians(sc["means"], sc["quats"], sc["scales"], sc["viewmats"], sc["Ks"], 40, 30,
                                   radius_clip=1e6)
    assert (r_clip == 0).all()


def _loss_weights(C, H, W, dtype, seed=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(C, H, W, 3, generator=g, dtype=dtype), torch.rand(C, H, W, 1, generator=g, dtype=dtype),
            torch.rand(C, H, W, 1, generator=g, dtype=dtype))


@pytest.mark.parametrize("clamped", [False, True])
def test_gradients_match_finite_differences(clamped):
    sc = small_scene(n=6, seed=11, W=16, H=12, C=2)
    if clamped:  # a big, nearly opaque Gaussian whose alpha hits the 0.999 clamp near its centre
        dt = sc["means"].dtype
        sc["means"] = torch.cat([sc["means"], torch.tensor([[0.03, -0.02, -0.3]], dtype=dt)])
        sc["quats"] = torch.cat([sc["quats"], torch.tensor([[1.0, 0.1, 0.2, 0.3]], dtype=dt)])
        sc["scales"] = torch.cat([sc["scales"], torch.tensor([[0.9, 1.1, 1.0]], dtype=dt)])
        sc["opacities"] = torch.cat([sc["opacities"], torch.tensor([0.99995], dtype=dt)])
        sc["colors"] = torch.cat([sc["colors"], torch.tensor([[0.3, 0.6, 0.2]], dtype=dt)])
    wc, wa, wd = _loss_weights(2, 12, 16, torch.float64)
    names = ["means", "quats", "scales", "opacities", "colors"]

    def loss_fn(*params):
        args = dict(sc)
        args.update(dict(zip(names, params)))
        col, alp, meta = rasterization(**args, backend="cpu", tile_size=4)
        return (col * wc).sum() + (alp * wa).sum() + (meta["expected_depth"] * wd * alp).sum()

    params = [sc[k].clone().requires_grad_(True) for k in names]
    loss = loss_fn(*params)
    grads = torch.autograd.grad(loss, params)
    eps = 1e-6
    rng = np.random.default_rng(0)
    for pi, (p, gr) in enumerate(zip(params, grads)):
        flat = p.detach().reshape(-1)
        idx = rng.choice(flat.numel(), size=min(8, flat.numel()), replace=False)
        for j in idx:
            pp = [q.detach().clone() for q in params]
            pm = [q.detach().clone() for q in params]
            pp[pi].view(-1)[j] += eps
            pm[pi].view(-1)[j] -= eps
            fd = (loss_fn(*pp) - loss_fn(*pm)).item() / (2 * eps)
            an = gr.reshape(-1)[j].item()
            assert abs(fd - an) <= 1e-5 + 1e-4 * abs(fd), (names[pi], int(j), fd, an)


def test_gradcheck_small():
    sc = small_scene(n=4, seed=12, W=10, H=8, C=1)
    names = ["means", "scales", "opacities", "colors"]

    wc, wa, _ = _loss_weights(1, 8, 10, torch.float64, seed=3)

    def f(*params):
        args = dict(sc)
        args.update(dict(zip(names, params)))
        col, alp, meta = rasterization(**args, backend="cpu", tile_size=4)
        # a few weighted sums (one backward per output element keeps gradcheck fast)
        return (col * wc).sum(dim=(0, 1, 2)), (alp * wa).sum()[None]

    params = tuple(sc[k].clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_means2d_grad_and_absgrad_readable():
    sc = small_scene(n=12, seed=1)
    means = sc["means"].clone().requires_grad_(True)
    args = dict(sc, means=means)
    col, alp, meta = rasterization(**args, backend="cpu", absgrad=True)
    (col.sum() + alp.sum()).backward()
    m2 = meta["means2d"]
    assert m2.shape == (2, 12, 2)
    assert m2.grad is not None and m2.grad.shape == (2, 12, 2)
    visible = (meta["radii"] > 0).all(-1)
    assert m2.grad[visible].abs().sum() > 0
    assert (m2.grad[~visible] == 0).all()
    assert hasattr(m2, "absgrad") and m2.absgrad.shape == (2, 12, 2)
    assert (m2.absgrad >= m2.grad.abs() - 1e-9).all()
    assert means.grad is not None and torch.isfinite(means.grad).all()


def test_empty_scene():
    sc = small_scene(n=5, seed=2)
    for k in ["means", "quats", "scales", "opacities", "colors"]:
        sc[k] = sc[k][:0]
    col, alp, meta = _render(sc)
    assert col.shape == (2, 20, 24, 3)
    torch.testing.assert_close(col, sc["backgrounds"][:, None, None, :].expand_as(col))
    assert (alp == 0).all()
    assert meta["radii"].shape == (2, 0, 2) and meta["means2d"].shape == (2, 0, 2)


def test_behind_camera_and_offscreen():
    sc = small_scene(n=8, seed=2, C=1)
    means = sc["means"].clone()
    means[:4, 2] = 5.0  # behind the camera (camera at z=1.2 looking at -z)
    means[4:, 0] = 3.0  # far off to the side
    sc["means"] = means.requires_grad_(True)
    col, alp, meta = _render(sc)
    assert (meta["radii"] == 0).all()
    torch.testing.assert_close(col, sc["backgrounds"][:, None, None, :].expand_as(col).detach())
    assert (alp == 0).all()
    (col.sum() + alp.sum()).backward()
    assert torch.isfinite(sc["means"].grad).all()


def test_multi_camera_equals_single():
    sc = small_scene(n=15, seed=6, C=3)
    col, alp, meta = _render(sc)
    for ci in range(3):
        sc1 = dict(sc, viewmats=sc["viewmats"][ci : ci + 1], Ks=sc["Ks"][ci : ci + 1],
                   backgrounds=sc["backgrounds"][ci : ci + 1])
        c1, a1, m1 = _render(sc1)
        torch.testing.assert_close(col[ci : ci + 1], c1, atol=1e-12, rtol=0)
        torch.testing.assert_close(alp[ci : ci + 1], a1, atol=1e-12, rtol=0)
        torch.testing.assert_close(meta["expected_depth"][ci : ci + 1], m1["expected_depth"], atol=1e-10, rtol=0)
        assert torch.equal(meta["radii"][ci], m1["radii"][0])


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colors(degree):
    from gsplat.cuda._torch_impl import _spherical_harmonics

    sc = small_scene(n=10, seed=8, C=2)
    K = (degree + 1) ** 2 + 1  # more coefficients than needed are allowed
    g = torch.Generator().manual_seed(degree)
    coeffs = 0.5 * torch.randn(10, K, 3, generator=g, dtype=torch.float64)
    # reference colours: gsplat's torch SH, dir = mean - camera centre
    Rv, tv = sc["viewmats"][:, :3, :3], sc["viewmats"][:, :3, 3]
    campos = -(Rv.transpose(1, 2) @ tv[..., None])[..., 0]
    dirs = sc["means"][None] - campos[:, None]
    ref_cols = torch.clamp_min(_spherical_harmonics(degree, dirs, coeffs[None].expand(2, -1, -1, -1)) + 0.5, 0.0)
    ours = sh_to_rgb(degree, dirs, coeffs[None].expand(2, -1, -1, -1))
    torch.testing.assert_close(ours, ref_cols, atol=1e-12, rtol=0)
    col, alp, _ = rasterization(**dict(sc, colors=coeffs), sh_degree=degree, backend="cpu")
    rc, ra, _ = reference_render(sc["means"].numpy(), sc["quats"].numpy(), sc["scales"].numpy(),
                                 sc["opacities"].numpy(), ref_cols.numpy(), sc["viewmats"].numpy(),
                                 sc["Ks"].numpy(), sc["width"], sc["height"], sc["backgrounds"].numpy())
    np.testing.assert_allclose(col.numpy(), rc, atol=1e-4)


def test_backend_dispatch_and_errors():
    sc = small_scene(n=3, seed=1)
    _, _, meta = rasterization(**sc)
    assert meta["backend"] == "cpu"
    with pytest.raises(ValueError, match="CUDA"):
        rasterization(**sc, backend="cuda")
    with pytest.raises(ValueError):
        rasterization(**sc, backend="metal")


def test_meta_contents():
    sc = small_scene(n=12, seed=1)
    col, alp, meta = _render(sc)
    C, N, H, W = 2, 12, 20, 24
    assert col.shape == (C, H, W, 3) and alp.shape == (C, H, W, 1)
    assert meta["expected_depth"].shape == (C, H, W, 1)
    assert meta["means2d"].shape == (C, N, 2) and meta["radii"].shape == (C, N, 2)
    assert meta["radii"].dtype == torch.int32
    assert meta["depths"].shape == (C, N) and meta["conics"].shape == (C, N, 3)
    assert meta["opacities"].shape == (C, N)
    assert (meta["width"], meta["height"], meta["n_cameras"], meta["backend"]) == (W, H, C, "cpu")
    assert isinstance(meta["tile_size"], int)


def test_camera_helpers():
    V = look_at(torch.tensor([0.0, 0.0, 0.6]), torch.zeros(3))
    # the target projects to the image centre, world up is image up (-y)
    p = V[:3, :3] @ torch.zeros(3) + V[:3, 3]
    assert p[2] > 0 and abs(p[0]) < 1e-6 and abs(p[1]) < 1e-6
    up = V[:3, :3] @ torch.tensor([0.0, 1.0, 0.0])
    assert up[1] < -0.99
    right = V[:3, :3] @ torch.tensor([1.0, 0.0, 0.0])  # camera on +z looking at -z: +x is image right
    assert right[0] > 0.99
    assert torch.allclose(V[:3, :3] @ V[:3, :3].T, torch.eye(3), atol=1e-6)
    K = intrinsics(fov_deg=90.0, width=200, height=100)
    assert abs(K[0, 0].item() - 100.0) < 1e-4 and K[0, 2] == 100 and K[1, 2] == 50
    Vs = orbit_cameras(8, 0.6)
    assert Vs.shape == (8, 4, 4)
    for Vi in Vs:
        c = -(Vi[:3, :3].T @ Vi[:3, 3])
        assert abs(c.norm().item() - 0.6) < 1e-5
        assert (Vi[:3, :3] @ (torch.zeros(3) - c))[2] > 0  # looks at the target


def test_framing_camera_fits_the_points_in_view():
    """The bounding sphere of the points fills the view height / margin; yaw 90 looks from the subject's left (+x)."""
    from talksplat.render.camera import camera_centers, framing_camera

    g = torch.Generator().manual_seed(0)
    pts = torch.randn(500, 3, generator=g) * torch.tensor([0.08, 0.12, 0.1]) + torch.tensor([0.0, 1.6, 0.05])
    for yaw, pitch in ((0.0, 0.0), (90.0, 10.0), (-30.0, -20.0)):
        V, K = framing_camera(pts, 200, 100, fov_deg=30.0, yaw_deg=yaw, pitch_deg=pitch, margin=1.2)
        lo, hi = pts.min(0).values, pts.max(0).values
        center, radius = (lo + hi) / 2, float((hi - lo).norm() / 2)
        cam = V[:3, :3] @ pts.T + V[:3, 3:]  # [3, N]
        uv = (K @ cam)[:2] / cam[2]
        assert (cam[2] > 0).all()
        c = V[:3, :3] @ center + V[:3, 3]
        assert abs(c[0]) < 1e-5 and abs(c[1]) < 1e-5  # the centre projects to the image centre
        # the sphere's angular radius is atan(1 / margin * tan(fov / 2)) (small-angle): its image spans 100 / 1.2
        assert float((uv[1] - 50).abs().max()) < 50 / 1.2 + 1
        d = camera_centers(V) - center
        assert abs(float(d.norm()) - 1.2 * radius / math.tan(math.radians(15))) < 1e-4
        assert abs(float(d[1] / d.norm()) - math.sin(math.radians(pitch))) < 1e-5
        assert abs(math.degrees(math.atan2(float(d[0]), float(d[2]))) - yaw) < 1e-3
        assert abs(float(K[0, 0]) - 50 / math.tan(math.radians(15))) < 1e-3 and float(K[0, 2]) == 100


def _many_small_scene(n=300, seed=0, W=64, H=48, dtype=torch.float64):
    """Many small, strongly anisotropic Gaussians (stress the tile culling and chunking)."""
    g = torch.Generator().manual_seed(seed)
    sc = small_scene(n=n, seed=seed, W=W, H=H, C=2, dtype=dtype)
    sc["scales"] = (0.002 + 0.02 * torch.rand(n, 3, generator=g, dtype=dtype)) * torch.tensor(
        [1.0, 0.15, 0.5], dtype=dtype)
    sc["opacities"] = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=dtype)
    return sc


def test_tile_min_sigma_is_exact():
    from talksplat.render.cpu import _tile_min_sigma

    g = torch.Generator().manual_seed(0)
    n = 400
    A = torch.randn(n, 2, 2, generator=g, dtype=torch.float64)
    cov = A @ A.transpose(1, 2) + 0.05 * torch.eye(2, dtype=torch.float64)
    con = torch.linalg.inv(cov)
    mx = torch.rand(n, generator=g, dtype=torch.float64) * 12 - 3
    my = torch.rand(n, generator=g, dtype=torch.float64) * 12 - 3
    x0 = torch.full((n,), 1.5, dtype=torch.float64)
    x1, y0, y1 = x0 + 4.0, x0.clone(), x0 + 4.0
    got = _tile_min_sigma(mx, my, 0.5 * con[:, 0, 0], con[:, 0, 1], 0.5 * con[:, 1, 1], x0, x1, y0, y1)
    gx, gy = torch.meshgrid(torch.linspace(1.5, 5.5, 161, dtype=torch.float64),
                            torch.linspace(1.5, 5.5, 161, dtype=torch.float64), indexing="ij")
    dx = mx[:, None, None] - gx
    dy = my[:, None, None] - gy
    dense = (0.5 * con[:, 0, 0, None, None] * dx * dx + con[:, 0, 1, None, None] * dx * dy
             + 0.5 * con[:, 1, 1, None, None] * dy * dy).flatten(1).min(1).values
    assert (got <= dense + 1e-9).all()  # never over-culls
    assert ((dense - got) / (1 + dense)).max() < 0.05  # and is tight (up to grid resolution)
    assert (got == 0).any() and (got > 0.1).any()


@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_tile_culling_and_chunking_do_not_change_image(tile_size):
    from talksplat.render import cpu

    sc = _many_small_scene()
    args = {k: sc[k] for k in ["means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "width", "height"]}
    radii, means2d, depths, conics, _ = cpu.project_gaussians(
        sc["means"], sc["quats"], sc["scales"], sc["viewmats"], sc["Ks"], 64, 48, opacities=sc["opacities"])
    op = sc["opacities"][None].expand(2, -1)
    feats = torch.cat([sc["colors"][None].expand(2, -1, -1), depths[..., None]], -1)
    outs = []
    for cull, chunk in [(False, 1 << 22), (True, 1 << 22), (True, 1)]:
        plan = cpu.isect_tiles(means2d, radii, depths, conics, op, 64, 48, tile_size, chunk_pairs=chunk,
                               ellipse_cull=cull)
        outs.append((plan, cpu.rasterize_to_pixels(means2d, conics, feats, op, plan)))
    (p0, (r0, a0)), (p1, (r1, a1)), (p2, (r2, a2)) = outs
    assert p1.n_isects < p0.n_isects  # culling does something here
    assert len(p2.chunks) > len(p1.chunks) >= 1
    for r, a in [(r1, a1), (r2, a2)]:
        torch.testing.assert_close(r, r0, atol=1e-12, rtol=0)
        torch.testing.assert_close(a, a0, atol=1e-12, rtol=0)
    col, alp, _ = rasterization(**args, backgrounds=sc["backgrounds"], backend="cpu", tile_size=tile_size)
    rc, ra, _ = reference_render(sc["means"].numpy(), sc["quats"].numpy(), sc["scales"].numpy(),
                                 sc["opacities"].numpy(), sc["colors"].numpy(), sc["viewmats"].numpy(),
                                 sc["Ks"].numpy(), 64, 48, sc["backgrounds"].numpy())
    np.testing.assert_allclose(col.numpy(), rc, atol=1e-4)
    np.testing.assert_allclose(alp.numpy(), ra, atol=1e-4)


@pytest.mark.parametrize("save_budget,chunk_pairs", [(0, 1), (1 << 30, 1 << 22)])
def test_gradients_saved_and_recomputed_paths_agree(save_budget, chunk_pairs):
    from talksplat.render.cpu import rasterization_cpu

    sc = _many_small_scene(n=120, seed=3, W=40, H=32)
    wc, wa, _ = _loss_weights(2, 32, 40, torch.float64)
    names = ["means", "quats", "scales", "opacities", "colors"]

    def grads(**kw):
        params = {k: sc[k].clone().requires_grad_(True) for k in names}
        args = dict(sc, **params)
        col, alp, meta = rasterization_cpu(**args, **kw)
        ((col * wc).sum() + (alp * wa).sum() + meta["expected_depth"].sum()).backward()
        return [params[k].grad for k in names] + [meta["means2d"].grad]

    ref = grads(chunk_pairs=1 << 22, save_budget=1 << 30, tile_size=8)
    got = grads(chunk_pairs=chunk_pairs, save_budget=save_budget, tile_size=8)
    for r, g_ in zip(ref, got):
        torch.testing.assert_close(g_, r, atol=1e-10, rtol=1e-8)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (gsplat backend)")
def test_cuda_backend_matches_cpu():
    sc = _many_small_scene(n=300, seed=1, W=64, H=48, dtype=torch.float32)
    sc = _add_outside_fov(sc)
    names = ["means", "quats", "scales", "opacities", "colors"]
    cpu_p = {k: sc[k].clone().requires_grad_(True) for k in names}
    gpu_p = {k: sc[k].cuda().requires_grad_(True) for k in names}
    wc = torch.rand(2, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    res = {}
    for name, params, dev in [("cpu", cpu_p, "cpu"), ("cuda", gpu_p, "cuda")]:
        args = dict(sc, **params)
        args.update({k: sc[k].to(dev) for k in ["viewmats", "Ks", "backgrounds"]})
        col, alp, meta = rasterization(**args, backend=name, absgrad=True)
        assert meta["backend"] == name
        ((col * wc.to(dev)).sum() + alp.sum()).backward()
        res[name] = (col.detach().cpu(), alp.detach().cpu(), meta["expected_depth"].detach().cpu(),
                     meta["radii"].cpu(), meta["means2d"].grad.cpu(), meta["means2d"].absgrad.cpu(),
                     {k: params[k].grad.cpu() for k in names})
    c, g = res["cpu"], res["cuda"]
    torch.testing.assert_close(g[0], c[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(g[1], c[1], atol=1e-3, rtol=0)
    m = c[1] > 0.05
    torch.testing.assert_close(g[2][m], c[2][m], atol=1e-3, rtol=1e-3)
    assert (g[3] - c[3]).abs().max() <= 1  # float32 ceil() rounding can differ by one pixel
    torch.testing.assert_close(g[4], c[4], atol=1e-3, rtol=1e-2)
    torch.testing.assert_close(g[5], c[5], atol=1e-3, rtol=1e-2)
    for k in names:
        torch.testing.assert_close(g[6][k], c[6][k], atol=1e-3, rtol=1e-2)


def test_absgrad_matches_per_pixel_definition():
    """absgrad = sum over pixels of |d L_p / d means2d| (per component), L_p the loss at pixel p."""
    sc = small_scene(n=5, seed=13, W=10, H=8, C=1)
    wc, wa, _ = _loss_weights(1, 8, 10, torch.float64)
    sc["means"] = sc["means"].clone().requires_grad_(True)
    col, alp, meta = rasterization(**sc, backend="cpu", absgrad=True, tile_size=4)
    m2 = meta["means2d"]
    per_pixel = (col * wc).sum(-1) + (alp * wa).sum(-1)  # [1, H, W]
    per_pixel.sum().backward(retain_graph=True)
    absgrad = m2.absgrad.clone()
    ref = torch.zeros_like(m2)
    for y in range(8):
        for x in range(10):
            (g,) = torch.autograd.grad(per_pixel[0, y, x], m2, retain_graph=True)
            ref += g.abs()
    assert ref.abs().sum() > 0
    torch.testing.assert_close(absgrad, ref, atol=1e-10, rtol=1e-8)


def test_float32_matches_float64_on_head_scene():
    """float32 numerics (matmul-based sigma, cumprod transmittance) against float64.
    Rare pixels may differ by ~1/255 where a pair sits at the alpha / termination cut."""
    from talksplat.benchmarks.rasterizer import head_scene

    sc = head_scene(3000, 128)
    c32, a32, m32 = rasterization(**sc, backend="cpu")
    sc64 = {k: (v.double() if torch.is_tensor(v) else v) for k, v in sc.items()}
    c64, a64, m64 = rasterization(**sc64, backend="cpu")
    assert a64.mean() > 0.2
    d = (c32.double() - c64).abs()
    assert d.mean() < 1e-5 and d.max() < 5e-3
    assert (a32.double() - a64).abs().mean() < 1e-5
    m = a64 > 0.5
    assert (m32["expected_depth"].double() - m64["expected_depth"])[m].abs().max() < 1e-3
