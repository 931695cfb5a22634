"""Per-triangle local frames that Gaussians are bound to (as in GaussianAvatars).

For a triangle (v0, v1, v2) the frame is:
  origin   = centroid (v0 + v1 + v2) / 3
  axis a0  = unit(v1 - v0)                       (along the first edge)
  axis a1  = unit(cross(a0, v2 - v0))            (the face normal, outward for CCW faces)
  axis a2  = cross(a0, a1)                       (in the face plane; [a0 a1 a2] right-handed)
  scale s  = (|v1 - v0| + |a2 . (v2 - v0)|) / 2  (metres, a length typical of the face)

A Gaussian bound to the face stores its mean in face units in that frame, so
  world_mean  = R @ (local_mean * s) + origin,   R = [a0 | a1 | a2]
  world_rot   = R * local_rot
  world_scale = local_scale * s
which is exactly covariant under rigid motions and uniform scaling of the mesh.
"""

from __future__ import annotations

import torch


def face_frames(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local frames of every face.

    Args:
        vertices: [B, V, 3] metres.
        faces: [F, 3] int64.
    Returns:
        origins [B, F, 3] metres, rotations [B, F, 3, 3] (columns a0, a1, a2; det +1),
        scales [B, F] metres.
    """
    v0 = vertices[:, faces[:, 0]]
    v1 = vertices[:, faces[:, 1]]
    v2 = vertices[:, faces[:, 2]]
    origins = (v0 + v1 + v2) / 3.0
    e0 = v1 - v0
    e1 = v2 - v0
    a0 = _unit(e0)
    a1 = _unit(torch.cross(a0, e1, dim=-1))
    a2 = torch.cross(a0, a1, dim=-1)  # unit since a0 ⟂ a1; right-handed [a0, a1, a2]
    rotations = torch.stack([a0, a1, a2], dim=-1)
    s0 = e0.norm(dim=-1)
    s1 = (a2 * e1).sum(-1).abs()
    scales = (s0 + s1) / 2.0
    return origins, rotations, scales


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
