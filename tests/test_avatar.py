"""Gaussians bound to triangles: covariance under rigid motion and scaling, init, file round trip."""

from __future__ import annotations

import math

import pytest
import torch

from talksplat.avatar import AvatarFileError, init_avatar, load_avatar, read_header, save_avatar
from talksplat.avatar.binding import face_frames
from talksplat.render.rotation import axis_angle_to_matrix, quat_to_rotmat


def _random_avatar(rig, seed=0, per_face=3, sh_degree=2):
    """An initialised avatar with randomised local parameters (so nothing is special-cased)."""
    av = init_avatar(rig, per_face=per_face, sh_degree=sh_degree)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in av.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return av


def test_face_frames_are_rotations(sphere_rig):
    v = sphere_rig.template[None] + 0.001 * torch.randn(1, sphere_rig.num_vertices, 3)
    o, R, s = face_frames(v, sphere_rig.faces)
    eye = torch.eye(3).expand_as(R[0])
    assert torch.allclose(R[0].transpose(-1, -2) @ R[0], eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(R[0]), torch.ones(R.shape[1]), atol=1e-5)
    assert (s > 0).all()
    # The second axis is the outward normal of the (convex) sphere.
    assert ((R[0, :, :, 1] * o[0]).sum(-1) > 0).all()


def test_rigid_motion_moves_gaussians_rigidly(sphere_rig):
    av = _random_avatar(sphere_rig)
    v = sphere_rig.template[None].double()
    R = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64))
    t = torch.tensor([0.05, -0.2, 0.4], dtype=torch.float64)
    av = av.double()
    m0, q0, s0 = av.posed_geometry(v, sphere_rig.faces)
    m1, q1, s1 = av.posed_geometry(v @ R.T + t, sphere_rig.faces)
    assert torch.allclose(m1[0], m0[0] @ R.T + t, atol=1e-12)
    assert torch.allclose(quat_to_rotmat(q1[0]), R @ quat_to_rotmat(q0[0]), atol=1e-12)
    assert torch.allclose(s1, s0, atol=1e-14)


def test_scaling_the_mesh_scales_the_gaussians(sphere_rig):
    av = _random_avatar(sphere_rig, seed=1).double()
    v = sphere_rig.template[None].double()
    c = 1.7
    m0, q0, s0 = av.posed_geometry(v, sphere_rig.faces)
    m1, q1, s1 = av.posed_geometry(c * v, sphere_rig.faces)
    assert torch.allclose(m1, c * m0, atol=1e-12)
    assert torch.allclose(s1, c * s0, atol=1e-12)
    assert torch.allclose(quat_to_rotmat(q1), quat_to_rotmat(q0), atol=1e-12)


def test_posing_the_rig_carries_the_gaussians(sphere_rig):
    av = _random_avatar(sphere_rig, seed=2)
    p = sphere_rig.zero_params(1)
    p.global_rot[:] = torch.tensor([0.0, 0.5, 0.0])
    p.translation[:] = torch.tensor([0.0, 0.0, 1.0])
    m0, _, _ = av.posed_geometry(sphere_rig(sphere_rig.zero_params(1)).vertices, sphere_rig.faces)
    m1, _, _ = av.posed_geometry(sphere_rig(p).vertices, sphere_rig.faces)
    # Rigid: all pairwise distances kept, and the motion is not the identity.
    d0 = torch.cdist(m0[0], m0[0], compute_mode="donot_use_mm_for_euclid_dist")
    d1 = torch.cdist(m1[0], m1[0], compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.allclose(d0, d1, atol=1e-5)
    assert (m1 - m0).norm(dim=-1).min() > 0.5


def test_init_places_gaussians_on_the_surface(sphere_rig):
    av = init_avatar(sphere_rig, per_face=4, sh_degree=3)
    F = sphere_rig.num_faces
    assert av.num_gaussians == 4 * F
    assert av.sh.shape == (4 * F, 16, 3)
    means, quats, scales = av.posed_geometry(sphere_rig.template[None], sphere_rig.faces)
    o, R, s = face_frames(sphere_rig.template[None], sphere_rig.faces)
    # On the parent face's plane, near its centroid, and flat along the normal.
    offset = means[0] - o[0, av.binding]
    normal = R[0, av.binding, :, 1]
    assert (offset * normal).sum(-1).abs().max() < 1e-6
    assert (offset.norm(dim=-1) < 1.5 * s[0, av.binding]).all()
    assert (scales[0, :, 1] < scales[0, :, 0]).all()
    rgb = av.sh_dc[:, 0] * 0.28209479177387814 + 0.5
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert torch.allclose(av.opacities, torch.full_like(av.opacities, 0.95))


def test_save_load_roundtrip_is_bit_exact(sphere_rig, tmp_path):
    av = _random_avatar(sphere_rig, seed=3, sh_degree=3)
    path = save_avatar(av, tmp_path / "a" / "avatar.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["avatar.safetensors"]  # no temp file left
    back = load_avatar(path, rig_checksum=sphere_rig.checksum)
    for (name, a), (_, b) in zip(av.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    assert (back.rig_name, back.rig_checksum, back.sh_degree) == (av.rig_name, av.rig_checksum, 3)
    h = read_header(path)
    assert h["num_gaussians"] == av.num_gaussians and h["rig_checksum"] == sphere_rig.checksum


def test_load_refuses_other_rig_and_non_avatars(sphere_rig, tmp_path):
    path = save_avatar(init_avatar(sphere_rig, per_face=1), tmp_path / "avatar.safetensors")
    with pytest.raises(AvatarFileError, match="checksum"):
        load_avatar(path, rig_checksum="0" * 64)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(AvatarFileError, match="junk.safetensors"):
        load_avatar(junk)
    with pytest.raises(AvatarFileError, match="not found"):
        load_avatar(tmp_path / "missing.safetensors")


def test_rig_zero_params_and_rigid_global_motion(sphere_rig):
    out = sphere_rig(sphere_rig.zero_params(2))
    assert torch.equal(out.vertices[0], sphere_rig.template)
    p = sphere_rig.zero_params(1)
    p.global_rot[:] = torch.tensor([0.2, 0.1, -0.4])
    p.translation[:] = torch.tensor([0.1, 0.0, 0.0])
    v = sphere_rig(p).vertices[0]
    R = axis_angle_to_matrix(p.global_rot[0])
    root = sphere_rig.joint_regressor[0] @ sphere_rig.template
    expect = (sphere_rig.template - root) @ R.T + root + p.translation[0]
    assert torch.allclose(v, expect, atol=1e-6)


def test_rig_is_differentiable(sphere_rig):
    p = sphere_rig.zero_params(1)
    p.jaw.requires_grad_(True)
    p.expression.requires_grad_(True)
    v = sphere_rig(p).vertices
    v[0, sphere_rig.region("lips")].sum().backward()
    assert torch.isfinite(p.jaw.grad).all() and p.jaw.grad.abs().sum() > 0
    assert p.expression.grad.abs().sum() > 0
    assert math.isfinite(float(v.detach().sum()))
