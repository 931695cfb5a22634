"""Render a posed avatar: rig parameters -> rig vertices (and appearance code) -> bound Gaussians ->
rasterization."""

from __future__ import annotations

import torch

from talksplat.render import rasterization, resolve_backend
from talksplat.rigs.base import HeadRig, RigParams

from .appearance import appearance_code
from .gaussians import GaussianAvatar
from .torso import rig_torso_poses


def pose_inputs(avatar: GaussianAvatar, rig: HeadRig, params: RigParams, torso: torch.Tensor | None = None):
    """What posing ``avatar`` by ``params`` (batch B) takes: the rig's output (vertices [B, V, 3], joints), the
    appearance code [B, D] of the blendshapes (None without them) and the torso poses [B, 4, 4] (``torso`` as given,
    else frame by frame from ``params``, not smoothed; None without a torso)."""
    out = rig(params)
    code = appearance_code(params) if avatar.code_size else None
    if avatar.has_torso and torso is None:
        torso = rig_torso_poses(rig, params, out.joints)
    return out, code, torso


def render_avatar(avatar: GaussianAvatar, rig: HeadRig, params: RigParams, viewmats: torch.Tensor,
                  Ks: torch.Tensor, width: int, height: int, backgrounds: torch.Tensor | None = None,
                  backend: str = "auto", torso: torch.Tensor | None = None, **raster_kwargs):
    """Render B posed frames, each seen by its own C cameras.

    Args:
        params: rig parameters with batch size B (they pose the rig and, through
            :func:`~talksplat.avatar.appearance.appearance_code`, drive the avatar's colour blendshapes).
        viewmats: [C, 4, 4] world-to-camera (OpenCV), shared by all frames, or [B, C, 4, 4].
        Ks: [C, 3, 3] or [B, C, 3, 3] pixels.
        backgrounds: [C, 3] or None (black).
        torso: [B, 4, 4] torso poses for an avatar with a torso (:func:`~talksplat.avatar.torso.torso_poses` of
            the whole sequence, smoothed); None: posed frame by frame from ``params`` (not smoothed).
    Returns:
        colors [B, C, H, W, 3], alphas [B, C, H, W, 1], metas (list of B rasterization meta dicts).

    On the CUDA backend, B > 1 frames without autograd (drive, bench, viewer) go to gsplat in one batched
    call; ``metas`` is then one batched meta ([B, C, N, 2] "means2d", ...).  With autograd (training), or on
    the CPU rasterizer, each frame is rasterized on its own and ``metas`` has one meta per frame.
    """
    out, code, torso = pose_inputs(avatar, rig, params, torso)
    verts = out.vertices
    B = verts.shape[0]
    if viewmats.dim() == 3:
        viewmats = viewmats[None].expand(B, *viewmats.shape)
        Ks = Ks[None].expand(B, *Ks.shape)
    if B > 1 and not torch.is_grad_enabled() and resolve_backend(backend, verts.device) == "cuda":
        # one gsplat launch for the B frames (rendering only: training reads per-frame metas)
        means, quats, scales = avatar.posed_geometry(verts, rig.faces, torso, code)
        opac = avatar.opacities
        sh = avatar.sh_at(code) if code is not None else avatar.sh[None].expand(B, -1, -1, -1)  # [B, N, K, 3]
        bg = None if backgrounds is None else backgrounds[None].expand(B, *backgrounds.shape)
        colors, alphas, meta = rasterization(means, quats, scales, opac[None].expand(B, *opac.shape),
                                             sh, viewmats, Ks, width, height,
                                             sh_degree=avatar.sh_degree, backgrounds=bg, backend=backend,
                                             **raster_kwargs)
        return colors, alphas, [meta]
    colors, alphas, metas = [], [], []
    for b, g in enumerate(avatar.world(verts, rig.faces, code, torso)):
        c, a, m = rasterization(g.means, g.quats, g.scales, g.opacities, g.sh, viewmats[b], Ks[b], width,
                                height, sh_degree=g.sh_degree, backgrounds=backgrounds, backend=backend,
                                **raster_kwargs)
        colors.append(c)
        alphas.append(a)
        metas.append(m)
    return torch.stack(colors), torch.stack(alphas), metas
