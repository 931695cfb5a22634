"""CUDA backend: a thin wrapper over ``gsplat.rasterization`` (gsplat 1.5.3).

Not yet run with gsplat's CUDA kernels (no GPU so far).  Its code path is tested on the CPU: with
``TALKSPLAT_GSPLAT_REFERENCE=1`` this wrapper accepts CPU tensors and calls gsplat 1.5.3's own
``rasterization`` with the same arguments, its kernels replaced by torch twins
(:mod:`talksplat.render.gsplat_reference`), so the signature and the meta consumed here come from
gsplat's code (tests/test_gsplat_reference.py).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["rasterization_cuda"]


def rasterization_cuda(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    tile_size: Optional[int] = None,
    absgrad: bool = False,
) -> Tuple[Tensor, Tensor, Dict]:
    """gsplat classic rasterization in "RGB+ED" mode; same shapes as the CPU backend, plus gsplat's leading
    batch dimension (means [B, N, 3], viewmats [B, C, 4, 4], ... -> colors [B, C, H, W, 3]) in one launch.

    ``backgrounds`` is passed with 3 channels: gsplat 1.5.3 itself appends the zero
    depth channel for "RGB+ED" (rendering.py, "Rasterize to pixels" section), so padding
    it here would break the channel count.
    """
    from .gsplat_reference import reference_mode, reference_rasterization

    if means.is_cuda:
        import gsplat  # imported lazily: importing is cheap but keeps CPU-only users safe

        gsplat_rasterization = gsplat.rasterization
    elif reference_mode():
        gsplat_rasterization = reference_rasterization()  # test mode: gsplat's code, torch kernels
    else:
        raise RuntimeError("rasterization_cuda needs CUDA tensors (or TALKSPLAT_GSPLAT_REFERENCE=1 for the CPU test mode)")
    if means.dtype != torch.float32:
        raise TypeError("gsplat's CUDA kernels need float32 tensors")
    ts = int(tile_size or 16)
    render, alphas, meta = gsplat_rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=False,
        tile_size=ts,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        absgrad=absgrad,
        rasterize_mode="classic",
    )
    colors_out = render[..., :-1]
    meta = dict(meta)
    meta["expected_depth"] = render[..., -1:]
    if meta.get("means2d") is not None and meta["means2d"].requires_grad:
        # gsplat's strategies call retain_grad() themselves; doing it here too is harmless
        meta["means2d"].retain_grad()
    meta.setdefault("width", width)
    meta.setdefault("height", height)
    meta.setdefault("n_cameras", viewmats.shape[-3])
    meta["tile_size"] = ts
    meta["backend"] = "cuda"
    meta["gsplat_reference"] = not means.is_cuda
    return colors_out, alphas, meta
