"""Small rotation and triangle geometry helpers (torch, batched, differentiable).

pytorch3d has no installable build for our Python/torch, so the few pieces we need live here.
Quaternions are wxyz.
"""

from __future__ import annotations

import torch

from talksplat.render.cpu import quat_to_rotmat as quat_to_matrix  # [..., 4] wxyz -> [..., 3, 3]

__all__ = ["axis_angle_to_matrix", "quat_to_matrix", "matrix_to_quat", "quat_multiply", "face_normals",
           "vertex_normals"]


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """[..., 3] axis-angle (radians) -> [..., 3, 3] rotation matrices (Rodrigues).

    Differentiable everywhere, including at zero (uses a Taylor expansion for small angles).
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)  # [..., 1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    # sin(t)/t and (1-cos(t))/t^2 with series for small t.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    x, y, z = aa.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions wxyz with w >= 0.

    Branch-free (Shepperd-style selection of the best-conditioned candidate).
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22,
                     m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m00 - m11 + m22], -1),
    ], dim=-2)  # [..., 4 candidates, 4]
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = diag.argmax(-1, keepdim=True)  # [..., 1]
    q = torch.gather(cands, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of [..., 4] wxyz quaternions: rotation b then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[..., V, 3] vertices, [F, 3] faces -> [..., F, 3] unit normals (counter-clockwise = outward)."""
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[..., V, 3] vertices -> [..., V, 3] area-weighted unit vertex normals."""
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # area-weighted
    vn = torch.zeros_like(vertices)
    for i in range(3):
        vn = vn.index_add(-2, faces[:, i], fn)
    return vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
