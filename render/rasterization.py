"""Public functional API: :func:`rasterization` with backend dispatch (CPU / CUDA)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .cpu import rasterization_cpu

__all__ = ["rasterization", "resolve_backend"]


def resolve_backend(backend: str, device: torch.device) -> str:
    """"auto" -> "cuda" for CUDA tensors, else "cpu". "cuda" with non-CUDA tensors raises.

    Test mode ``TALKSPLAT_GSPLAT_REFERENCE=1`` (:mod:`talksplat.render.gsplat_reference`): "auto" and
    "cuda" give "cuda" for CPU tensors too (gsplat's own code with torch kernels); "cpu" stays "cpu".
    """
    from .gsplat_reference import reference_mode

    if backend == "auto":
        return "cuda" if device.type == "cuda" or (device.type == "cpu" and reference_mode()) else "cpu"
    if backend == "cuda":
        if device.type != "cuda" and not (device.type == "cpu" and reference_mode()):
            raise ValueError(
                f"backend='cuda' needs tensors on a CUDA device, got {device}; "
                "use backend='cpu' or 'auto', or move the tensors to CUDA"
            )
        return "cuda"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"backend='cpu' needs CPU tensors, got {device}")
        return "cpu"
    raise ValueError(f"unknown backend {backend!r} (expected 'auto', 'cpu' or 'cuda')")


def rasterization(
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
    backend: str = "auto",
) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterize 3D Gaussians into C images (gsplat 1.5.3 "classic" semantics).

    Args:
        means: [N, 3] metres, world.
        quats: [N, 4] rotations, wxyz, any norm (normalised internally).
        scales: [N, 3] linear scales (not log), metres.
        opacities: [N] in (0, 1) (not logits).
        colors: [N, 3] RGB in [0, 1], or [N, K, 3] SH coefficients when ``sh_degree`` is
            set (K >= (sh_degree+1)^2; colour = clamp_min(SH(dir) + 0.5, 0) with dir the
            normalised vector camera centre -> mean, as gsplat).
        viewmats: [C, 4, 4] world-to-camera, OpenCV (x right, y down, z forward).
        Ks: [C, 3, 3] pinhole intrinsics, pixels (pixel centres at integer + 0.5).
        width, height: image size, pixels.
        near_plane, far_plane: depth culling range, metres (camera z).
        radius_clip: Gaussians whose both pixel radii are <= this are culled.
        eps2d: pixels^2 added to the 2D covariance diagonal (anti-aliasing blur).
        sh_degree: None (colors are RGB) or 0..3.
        backgrounds: [C, 3] in [0, 1] or None (black).
        tile_size: tile edge in pixels; None = backend default (CPU: 8, CUDA: 16).
        absgrad: CUDA: gsplat's ``meta["means2d"].absgrad``. CPU: after backward,
            ``meta["means2d"].absgrad`` [C, N, 2] holds sum over pixels of |dL/dmeans2d|
            per pixel contribution (same definition as gsplat's kernel).
        backend: "auto" (CUDA if tensors are on CUDA, else CPU), "cpu" or "cuda". With
            ``TALKSPLAT_GSPLAT_REFERENCE=1`` "auto"/"cuda" run the CUDA backend's code on CPU
            tensors through gsplat's torch reference (a test mode; see ``resolve_backend``).

    Returns:
        colors [C, H, W, 3], alphas [C, H, W, 1], meta dict with
        "expected_depth" [C, H, W, 1] (sum w z / clamp(alpha, 1e-10), metres, camera z),
        "means2d" [C, N, 2] pixels (``retain_grad()`` is called when it requires grad, so
        ``meta["means2d"].grad`` is readable after backward, as densification needs),
        "radii" [C, N, 2] int32 pixels (0 = culled), "depths" [C, N] metres,
        "conics" [C, N, 3] 1/pixels^2, "opacities" [C, N], "width", "height",
        "n_cameras", "tile_size", "backend" ("cpu" or "cuda").

    Batches (gsplat's batch dimension): ``means`` [B, N, 3], ``quats`` [B, N, 4], ``scales`` [B, N, 3],
    ``opacities`` [B, N], ``colors`` [B, N, 3] or [B, N, K, 3], ``viewmats`` [B, C, 4, 4], ``Ks`` [B, C, 3, 3],
    ``backgrounds`` [B, C, 3]: B posed frames in one call (one gsplat launch on CUDA; a loop over frames on
    the CPU, which gains nothing from batching).  Outputs then have a leading B: colors [B, C, H, W, 3],
    meta "means2d" [B, C, N, 2], "radii" [B, C, N, 2], ... .  For rendering, not training: the batched meta's
    "means2d" gradient is not laid out per frame for densification, and ``absgrad`` needs single frames.
    """
    batched = means.dim() == 3
    if batched:
        return _rasterize_batch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                                far_plane, radius_clip, eps2d, sh_degree, backgrounds, tile_size, absgrad, backend)
    _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, backgrounds)
    which = resolve_backend(backend, means.device)
    kw = dict(
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree,
        backgrounds=backgrounds, tile_size=tile_size, absgrad=absgrad,
    )
    if which == "cuda":
        from .cuda import rasterization_cuda

        return rasterization_cuda(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw)
    return rasterization_cpu(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw)


def _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, backgrounds) -> None:
    """One frame's shapes (see :func:`rasterization`): a ValueError naming the argument otherwise."""
    if viewmats.dim() != 3 or viewmats.shape[-2:] != (4, 4):
        raise ValueError(f"viewmats must be [C, 4, 4], got {tuple(viewmats.shape)}")
    if Ks.shape != (viewmats.shape[0], 3, 3):
        raise ValueError(f"Ks must be [C, 3, 3] matching viewmats, got {tuple(Ks.shape)}")
    N = means.shape[0]
    if means.shape != (N, 3) or quats.shape != (N, 4) or scales.shape != (N, 3) or opacities.shape != (N,):
        raise ValueError(
            "expected means [N,3], quats [N,4], scales [N,3], opacities [N]; got "
            f"{tuple(means.shape)}, {tuple(quats.shape)}, {tuple(scales.shape)}, {tuple(opacities.shape)}"
        )
    if sh_degree is not None:
        nb = (sh_degree + 1) ** 2
        if colors.dim() != 3 or colors.shape[0] != N or colors.shape[-1] != 3 or colors.shape[1] < nb:
            raise ValueError(f"with sh_degree={sh_degree} colors must be [N, K>={nb}, 3], got {tuple(colors.shape)}")
    elif colors.dim() != 2 or colors.shape[0] != N:
        raise ValueError(f"colors must be [N, 3] (or set sh_degree for [N, K, 3]), got {tuple(colors.shape)}")
    if backgrounds is not None and backgrounds.shape != (viewmats.shape[0], colors.shape[-1]):
        raise ValueError(f"backgrounds must be [C, {colors.shape[-1]}], got {tuple(backgrounds.shape)}")


def _rasterize_batch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
                     radius_clip, eps2d, sh_degree, backgrounds, tile_size, absgrad, backend):
    """B frames: every frame's shapes are checked, then one gsplat call (CUDA) or a loop (CPU)."""
    B = means.shape[0]
    if viewmats.dim() != 4 or viewmats.shape[0] != B:
        raise ValueError(f"with means [B={B}, N, 3], viewmats must be [B, C, 4, 4], got {tuple(viewmats.shape)}")
    args = (quats, scales, opacities, colors, Ks) + (() if backgrounds is None else (backgrounds,))
    if any(t.shape[0] != B for t in args):
        raise ValueError(f"with means [B={B}, N, 3] every per-Gaussian and per-camera argument needs the leading B; "
                         f"got {[tuple(t.shape) for t in args]}")
    for b in range(B):
        _check_shapes(means[b], quats[b], scales[b], opacities[b], colors[b], viewmats[b], Ks[b], sh_degree,
                      None if backgrounds is None else backgrounds[b])
    if absgrad:
        raise ValueError("absgrad needs single frames (means [N, 3]): densification reads one frame's meta")
    kw = dict(near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree,
              backgrounds=backgrounds, tile_size=tile_size)
    if resolve_backend(backend, means.device) == "cuda":
        from .cuda import rasterization_cuda

        return rasterization_cuda(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw)
    outs = [rasterization_cpu(means[b], quats[b], scales[b], opacities[b], colors[b], viewmats[b], Ks[b], width,
                              height, **{**kw, "backgrounds": None if backgrounds is None else backgrounds[b]})
            for b in range(B)]
    meta = {k: (torch.stack([o[2][k] for o in outs]) if isinstance(v, Tensor) else v) for k, v in outs[0][2].items()}
    return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), meta
