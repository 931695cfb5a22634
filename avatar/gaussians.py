"""The Gaussian avatar: 3D Gaussians bound to the triangles of a head rig.

Each Gaussian has a parent face (``binding``).  Its mean, rotation and scale are stored in the
parent face's local frame (:func:`talksplat.avatar.binding.face_frames`), in face units, so that
posing the rig carries the Gaussians along.  Colour is spherical harmonics (degree 0..3),
opacity a logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from talksplat.render.sh import num_sh_bases
from talksplat.render.rotation import matrix_to_quat, quat_multiply

from .binding import face_frames

#: The avatar's trainable parameters, in constructor and file order (after ``binding``): the trainer keeps one
#: optimizer per name, the densification strategies replace each (``talksplat.fitting.strategy.ops``).
PARAM_NAMES: tuple[str, ...] = ("local_means", "local_quats", "log_scales", "sh_dc", "sh_rest", "opacity_logits")
#: Every tensor of an avatar: the ``binding`` buffer, then :data:`PARAM_NAMES` (constructor and file order).
TENSOR_NAMES: tuple[str, ...] = ("binding",) + PARAM_NAMES


@dataclass
class WorldGaussians:
    """Gaussians of one posed frame, in world space.

    means [N, 3] metres; quats [N, 4] unit wxyz; scales [N, 3] metres (linear);
    opacities [N] in (0, 1); sh [N, K, 3] SH coefficients, K = (sh_degree + 1)^2.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor
    sh_degree: int


class GaussianAvatar(nn.Module):
    """Gaussians bound to a rig's faces.

    Parameters (all [N, ...], trainable):
        local_means:   [N, 3] face units, in the parent face's frame.
        local_quats:   [N, 4] wxyz (unnormalised), rotation relative to the parent face's frame.
        log_scales:    [N, 3] log of the scale in face units.
        sh_dc:         [N, 1, 3] SH DC coefficient.
        sh_rest:       [N, K - 1, 3] higher SH coefficients (K = (sh_degree + 1)^2).
        opacity_logits:[N] logit of opacity.
    Buffers:
        binding: [N] int64 parent face index.
    Attributes:
        rig_name, rig_checksum: identify the rig the avatar belongs to.
        sh_degree: int.
    """

    def __init__(self, binding: torch.Tensor, local_means: torch.Tensor, local_quats: torch.Tensor,
                 log_scales: torch.Tensor, sh_dc: torch.Tensor, sh_rest: torch.Tensor,
                 opacity_logits: torch.Tensor, rig_name: str, rig_checksum: str, sh_degree: int):
        super().__init__()
        n = binding.shape[0]
        expected = {"local_means": (n, 3), "local_quats": (n, 4), "log_scales": (n, 3), "sh_dc": (n, 1, 3),
                    "sh_rest": (n, num_sh_bases(sh_degree) - 1, 3), "opacity_logits": (n,)}
        given = dict(zip(PARAM_NAMES, (local_means, local_quats, log_scales, sh_dc, sh_rest, opacity_logits)))
        for k, shape in expected.items():
            if tuple(given[k].shape) != shape:
                raise ValueError(f"GaussianAvatar: '{k}' has shape {tuple(given[k].shape)}, expected {shape}")
        self.register_buffer("binding", binding.to(torch.int64))
        for k, v in given.items():
            setattr(self, k, nn.Parameter(v.float().contiguous()))
        self.rig_name = rig_name
        self.rig_checksum = rig_checksum
        self.sh_degree = sh_degree

    @property
    def num_gaussians(self) -> int:
        return self.binding.shape[0]

    @property
    def opacities(self) -> torch.Tensor:
        """[N] in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def sh(self) -> torch.Tensor:
        """[N, K, 3] all SH coefficients."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    def world(self, vertices: torch.Tensor, faces: torch.Tensor) -> list[WorldGaussians]:
        """Pose the Gaussians on posed rig vertices.

        Args:
            vertices: [B, V, 3] metres, posed rig vertices (``rig(params).vertices``).
            faces: [F, 3] the rig's faces.
        Returns:
            B :class:`WorldGaussians` (means/quats/scales differ per frame, appearance is shared).
        """
        means, quats, scales = self.posed_geometry(vertices, faces)
        opac, sh = self.opacities, self.sh
        return [WorldGaussians(means[b], quats[b], scales[b], opac, sh, self.sh_degree)
                for b in range(vertices.shape[0])]

    def posed_geometry(self, vertices: torch.Tensor, faces: torch.Tensor):
        """[B, V, 3] -> means [B, N, 3] metres, unit quats [B, N, 4] wxyz, scales [B, N, 3] metres."""
        origins, rotations, fscale = face_frames(vertices, faces)
        o = origins[:, self.binding]  # [B, N, 3]
        R = rotations[:, self.binding]  # [B, N, 3, 3]
        s = fscale[:, self.binding, None]  # [B, N, 1]
        means = torch.einsum("bnij,bnj->bni", R, self.local_means[None] * s) + o
        q_face = matrix_to_quat(R)
        q_local = self.local_quats / self.local_quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        quats = quat_multiply(q_face, q_local[None].expand_as(q_face))
        scales = torch.exp(self.log_scales)[None] * s
        return means, quats, scales
