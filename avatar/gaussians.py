"""The Gaussian avatar: 3D Gaussians bound to the triangles of a head rig.

Each Gaussian has a parent face (``binding``).  Its mean, rotation and scale are stored in the
parent face's local frame (:func:`talksplat.avatar.binding.face_frames`), in face units, so that
posing the rig carries the Gaussians along.  Colour is spherical harmonics (degree 0..3) plus, optionally,
linear colour blendshapes driven by the frame's expression (``sh_dc_blend``, see
:mod:`talksplat.avatar.appearance`); opacity a logit.
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
PARAM_NAMES: tuple[str, ...] = ("local_means", "local_quats", "log_scales", "sh_dc", "sh_rest", "opacity_logits",
                                "sh_dc_blend", "means_blend")
#: The torso's bust proxy (:mod:`talksplat.avatar.torso`), buffers beside ``binding``: Gaussians whose
#: ``binding`` is F + j (F the rig's face count) are bound to the proxy's face j.
TORSO_NAMES: tuple[str, ...] = ("torso_vertices", "torso_faces")
#: Every tensor of an avatar: the ``binding`` buffer, :data:`PARAM_NAMES`, then :data:`TORSO_NAMES` (constructor
#: and file order).
TENSOR_NAMES: tuple[str, ...] = ("binding",) + PARAM_NAMES + TORSO_NAMES
#: Tensors an avatar file may lack (files written before they existed): name -> what they default to.
OPTIONAL_TENSORS: dict[str, str] = {"sh_dc_blend": "[N, 0, 3]: no colour blendshapes (static colour)",
                                    "means_blend": "[N, 0, 3]: no position blendshapes (the rig alone moves them)",
                                    "torso_vertices": "[0, 3]: no torso (the head only)",
                                    "torso_faces": "[0, 3]: no torso"}


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
        sh_dc_blend:   [N, D, 3] colour blendshapes: SH DC offset per unit of the frame's appearance code
                       (:func:`talksplat.avatar.appearance.appearance_code`, D = E + 3); D = 0 (the default,
                       and what old files load as) is a static colour.
        means_blend:   [N, D, 3] position blendshapes: offset of ``local_means`` (face units) per unit of the same
                       code (wrinkles and lip shapes the rig's blendshapes lack); D = 0 (the default): none.
    Buffers:
        binding: [N] int64 parent face index: a rig face (< F), or F + j for the torso's proxy face j.
        torso_vertices: [P, 3] metres, the bust proxy relative to the rig's root joint at rest (P = 0: no torso,
            the head only; :mod:`talksplat.avatar.torso`).  torso_faces: [Fp, 3] int64.
    Attributes:
        rig_name, rig_checksum: identify the rig the avatar belongs to.
        sh_degree: int.
    """

    def __init__(self, binding: torch.Tensor, local_means: torch.Tensor, local_quats: torch.Tensor,
                 log_scales: torch.Tensor, sh_dc: torch.Tensor, sh_rest: torch.Tensor,
                 opacity_logits: torch.Tensor, rig_name: str, rig_checksum: str, sh_degree: int,
                 sh_dc_blend: torch.Tensor | None = None, means_blend: torch.Tensor | None = None,
                 torso_vertices: torch.Tensor | None = None, torso_faces: torch.Tensor | None = None):
        super().__init__()
        n = binding.shape[0]
        if sh_dc_blend is None:
            sh_dc_blend = torch.zeros(n, 0, 3, dtype=sh_dc.dtype, device=sh_dc.device)
        if means_blend is None:
            means_blend = torch.zeros(n, 0, 3, dtype=local_means.dtype, device=local_means.device)
        d = sh_dc_blend.shape[1] if sh_dc_blend.dim() == 3 else -1
        dm = means_blend.shape[1] if means_blend.dim() == 3 else -1
        expected = {"local_means": (n, 3), "local_quats": (n, 4), "log_scales": (n, 3), "sh_dc": (n, 1, 3),
                    "sh_rest": (n, num_sh_bases(sh_degree) - 1, 3), "opacity_logits": (n,),
                    "sh_dc_blend": (n, max(d, 0), 3), "means_blend": (n, max(dm, 0), 3)}
        given = dict(zip(PARAM_NAMES, (local_means, local_quats, log_scales, sh_dc, sh_rest, opacity_logits,
                                       sh_dc_blend, means_blend)))
        for k, shape in expected.items():
            if tuple(given[k].shape) != shape:
                raise ValueError(f"GaussianAvatar: '{k}' has shape {tuple(given[k].shape)}, expected {shape}")
        if d > 0 and dm > 0 and d != dm:
            raise ValueError(f"GaussianAvatar: colour and position blendshapes take codes of {d} and {dm}")
        self.register_buffer("binding", binding.to(torch.int64))
        tv = torch.zeros(0, 3) if torso_vertices is None else torso_vertices
        tf = torch.zeros(0, 3, dtype=torch.int64) if torso_faces is None else torso_faces
        if tv.dim() != 2 or tv.shape[1] != 3 or tf.dim() != 2 or tf.shape[1] != 3 or (len(tf) > 0) != (len(tv) > 0):
            raise ValueError(f"GaussianAvatar: torso proxy of shapes {tuple(tv.shape)} / {tuple(tf.shape)}, expected "
                             "[P, 3] vertices and [Fp, 3] faces (both empty: no torso)")
        if len(tf) and (int(tf.min()) < 0 or int(tf.max()) >= len(tv)):
            raise ValueError(f"GaussianAvatar: torso faces name vertices outside 0..{len(tv) - 1}")
        self.register_buffer("torso_vertices", tv.float().to(binding.device).contiguous())
        self.register_buffer("torso_faces", tf.to(torch.int64).to(binding.device).contiguous())
        for k, v in given.items():
            setattr(self, k, nn.Parameter(v.float().contiguous()))
        self.rig_name = rig_name
        self.rig_checksum = rig_checksum
        self.sh_degree = sh_degree

    @property
    def num_gaussians(self) -> int:
        return self.binding.shape[0]

    @property
    def has_torso(self) -> bool:
        """Whether the avatar has torso Gaussians on a bust proxy (posing needs torso poses)."""
        return self.torso_faces.shape[0] > 0

    def mesh(self, vertices: torch.Tensor, faces: torch.Tensor,
             torso: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The triangles the Gaussians bind to: the rig's, then the posed bust proxy's (with a torso).

        Args:
            vertices: [B, V, 3] metres, posed rig.  faces: [F, 3].  torso: [B, 4, 4] torso poses
                (:func:`talksplat.avatar.torso.torso_poses`); needed when :attr:`has_torso`.
        Returns:
            vertices [B, V + P, 3], faces [F + Fp, 3].
        """
        if not self.has_torso:
            return vertices, faces
        if torso is None:
            raise ValueError("this avatar has a torso: posing it needs torso poses (talksplat.avatar.torso)")
        from .torso import posed_bust

        bust = posed_bust(self.torso_vertices, torso.to(vertices.dtype))
        if bust.shape[0] != vertices.shape[0]:
            bust = bust.expand(vertices.shape[0], -1, -1)
        return torch.cat([vertices, bust], 1), torch.cat([faces, self.torso_faces + vertices.shape[1]])

    @property
    def code_size(self) -> int:
        """D, the length of the appearance code the colour and position blendshapes take (0: neither)."""
        return max(self.sh_dc_blend.shape[1], self.means_blend.shape[1])

    @property
    def opacities(self) -> torch.Tensor:
        """[N] in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def sh(self) -> torch.Tensor:
        """[N, K, 3] all SH coefficients."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    def sh_at(self, code: torch.Tensor | None) -> torch.Tensor:
        """SH coefficients of B frames: ``sh_dc + sh_dc_blend @ code`` beside ``sh_rest``.

        Args:
            code: [B, D] the frames' appearance codes (:func:`talksplat.avatar.appearance.appearance_code`),
                or None (the neutral face: code 0).
        Returns:
            [B, N, K, 3]; without colour blendshapes (D = 0) or code, :attr:`sh` expanded (no copy), so such
            an avatar renders exactly as a static one.
        """
        if code is None or self.sh_dc_blend.shape[1] == 0:
            B = 1 if code is None else code.shape[0]
            return self.sh[None].expand(B, -1, -1, -1)
        if code.dim() != 2 or code.shape[1] != self.code_size:
            raise ValueError(f"appearance code has shape {tuple(code.shape)}, but the avatar's colour blendshapes "
                             f"take [B, {self.code_size}] (was it fitted on another rig?)")
        # frame by frame, as a broadcast product and sum over D: on the CPU three times as fast as an einsum
        # (which permutes the [N, D, 3] tensor every call), forward and backward
        code = code.to(self.sh_dc.dtype)
        offset = torch.stack([(self.sh_dc_blend * c[None, :, None]).sum(dim=1) for c in code])  # [B, N, 3]
        dc = self.sh_dc[None] + offset[:, :, None]
        return torch.cat([dc, self.sh_rest[None].expand(code.shape[0], -1, -1, -1)], dim=2)

    def world(self, vertices: torch.Tensor, faces: torch.Tensor, code: torch.Tensor | None = None,
              torso: torch.Tensor | None = None) -> list[WorldGaussians]:
        """Pose the Gaussians on posed rig vertices.

        Args:
            vertices: [B, V, 3] metres, posed rig vertices (``rig(params).vertices``).
            faces: [F, 3] the rig's faces.
            code: [B, D] the frames' appearance codes (``appearance_code(params)``) for the colour
                blendshapes, or None (neutral colour).
            torso: [B, 4, 4] torso poses, for an avatar with a torso (:meth:`mesh`).
        Returns:
            B :class:`WorldGaussians` (means/quats/scales differ per frame; colour per frame when the avatar
            has colour blendshapes, else shared).
        """
        means, quats, scales = self.posed_geometry(vertices, faces, torso, code)
        opac = self.opacities
        B = vertices.shape[0]
        if code is not None and code.shape[0] != B:
            raise ValueError(f"{code.shape[0]} appearance codes for {B} frames")
        sh = self.sh_at(code)
        return [WorldGaussians(means[b], quats[b], scales[b], opac, sh[min(b, sh.shape[0] - 1)], self.sh_degree)
                for b in range(B)]

    def posed_geometry(self, vertices: torch.Tensor, faces: torch.Tensor, torso: torch.Tensor | None = None,
                       code: torch.Tensor | None = None):
        """[B, V, 3] (and [B, 4, 4] torso poses with a torso, :meth:`mesh`; [B, D] appearance codes for the
        position blendshapes, None: neutral) -> means [B, N, 3] metres, unit quats [B, N, 4] wxyz, scales
        [B, N, 3] metres."""
        origins, rotations, fscale = face_frames(*self.mesh(vertices, faces, torso))
        o = origins[:, self.binding]  # [B, N, 3]
        R = rotations[:, self.binding]  # [B, N, 3, 3]
        s = fscale[:, self.binding, None]  # [B, N, 1]
        local = self.local_means[None]
        if code is not None and self.means_blend.shape[1]:
            if code.dim() != 2 or code.shape[1] != self.means_blend.shape[1]:
                raise ValueError(f"appearance code has shape {tuple(code.shape)}, but the avatar's position "
                                 f"blendshapes take [B, {self.means_blend.shape[1]}]")
            c = code.to(local.dtype)  # frame by frame, as sh_at (no einsum permuting [N, D, 3] each call)
            local = local + torch.stack([(self.means_blend * ci[None, :, None]).sum(dim=1) for ci in c])
        means = torch.einsum("bnij,bnj->bni", R, local * s) + o
        q_face = matrix_to_quat(R)
        q_local = self.local_quats / self.local_quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        quats = quat_multiply(q_face, q_local[None].expand_as(q_face))
        scales = torch.exp(self.log_scales)[None] * s
        return means, quats, scales
