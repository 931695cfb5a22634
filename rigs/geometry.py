"""Triangle-mesh geometry helpers (torch, batched, differentiable): face and vertex normals.

Rotations live in :mod:`talksplat.render.rotation`.
"""

from __future__ import annotations

import torch

__all__ = ["face_normals", "vertex_normals"]


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
