"""gsplat 1.5.3's own ``rasterization()`` on CPU tensors: the CUDA backend's code path without a GPU.

Test mode, off by default.  With the environment variable ``TALKSPLAT_GSPLAT_REFERENCE=1`` the
"cuda" backend (:func:`talksplat.render.cuda.rasterization_cuda`) accepts CPU tensors, and
``backend="auto"`` picks it for them (see :func:`talksplat.render.rasterization.resolve_backend`),
so every command (fit, drive, view, bench, resume) runs our gsplat wrapper on the CPU.  The call
then goes to :func:`reference_rasterization`: gsplat's ``rendering.rasterization`` itself, the same
code object with the same arguments, whose five CUDA entry points are replaced by torch versions:

* ``fully_fused_projection``: gsplat's ``_torch_impl._fully_fused_projection`` (with
  ``_quat_scale_to_covar_preci``) for the differentiable outputs; radii are recomputed by the
  CUDA kernel's rules (``ProjectionEWA3DGSFused.cu``), which the torch reference does not have:
  depth culling inclusive of ``near_plane``/``far_plane``, opacity < 1/255 culled, the
  opacity-aware extent ``min(3.33, sqrt(2 ln(255 opacity)))``, ``radius_clip``.
* ``isect_tiles`` / ``isect_offset_encode``: ``_torch_impl._isect_offset_encode`` as is;
  ``_isect_tiles`` vectorised (gsplat's is a Python loop over Gaussians and tiles), same ids,
  stable sort as the CUDA radix sort.
* ``spherical_harmonics``: ``_torch_impl._spherical_harmonics`` (masked entries zero).
* ``rasterize_to_pixels``: the structure of ``_torch_impl._rasterize_to_pixels``; its two pieces
  that need CUDA or nerfacc are ported here: ``rasterize_to_indices_in_range`` (the kernel
  ``RasterizeToIndices3DGS.cu``: alpha < 1/255 or sigma < 0 skipped, a pixel stops before the
  Gaussian that would bring transmittance to <= 1e-4) and nerfacc's ``render_weight_from_alpha``
  / ``accumulate_along_rays``.  Backward is torch autograd; with ``absgrad`` the per-(Gaussian,
  pixel) |dL/dmeans2d| is summed into ``means2d.absgrad`` as gsplat's backward kernel does.

Only what our wrapper uses is supported: ``packed=False``, pinhole, "classic", no masks, no
distributed / UT / eval3d.  Meant for small scenes (tests): memory grows with the longest
per-tile Gaussian list times the tile's pixels.
"""

from __future__ import annotations

import functools
import math
import os
import types
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["REFERENCE_ENV", "reference_mode", "reference_rasterization"]

REFERENCE_ENV = "TALKSPLAT_GSPLAT_REFERENCE"
_ALPHA_THRESHOLD = 1.0 / 255.0
_PAIR_BUDGET = 1 << 22  # (intersection, pixel) pairs per dense chunk in rasterize_to_indices_in_range


def reference_mode() -> bool:
    """True when ``$TALKSPLAT_GSPLAT_REFERENCE`` is 1/true/yes/on (read at every call)."""
    return os.environ.get(REFERENCE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------- projection


def fully_fused_projection(
    means: Tensor,
    covars: Optional[Tensor],
    quats: Optional[Tensor],
    scales: Optional[Tensor],
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    packed: bool = False,
    sparse_grad: bool = False,
    calc_compensations: bool = False,
    camera_model: str = "pinhole",
    opacities: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Torch twin of ``gsplat.cuda._wrapper.fully_fused_projection`` (unpacked, pinhole).

    Args: means [..., N, 3] metres; quats [..., N, 4]; scales [..., N, 3] metres (covars must be
    None); viewmats [..., C, 4, 4]; Ks [..., C, 3, 3] pixels; opacities [..., N] or None.

    Returns radii [..., C, N, 2] int32 pixels (0 = culled), means2d [..., C, N, 2] pixels,
    depths [..., C, N] metres, conics [..., C, N, 3] 1/pixels^2, compensations [..., C, N] or None.
    """
    from gsplat.cuda._torch_impl import _fully_fused_projection, _persp_proj, _quat_scale_to_covar_preci, _world_to_cam

    if packed or sparse_grad or camera_model != "pinhole" or covars is not None:
        raise NotImplementedError("gsplat reference mode: only unpacked pinhole projection from quats/scales")
    covars3, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    _, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars3, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        calc_compensations=calc_compensations)
    with torch.no_grad():  # radii: the CUDA kernel's rules
        means_c, covars_c = _world_to_cam(means.detach(), covars3.detach(), viewmats)
        _, cov2d = _persp_proj(means_c, covars_c, Ks, width, height)
        cxx = cov2d[..., 0, 0] + eps2d
        cyy = cov2d[..., 1, 1] + eps2d
        cxy = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
        det = cxx * cyy - cxy * cxy
        z = depths.detach()
        valid = (z >= near_plane) & (z <= far_plane) & (det > 0)
        extend = torch.full_like(cxx, 3.33)
        if opacities is not None:
            op = torch.broadcast_to(opacities.detach()[..., None, :], cxx.shape)
            if compensations is not None:
                op = op * compensations.detach()
            valid = valid & (op >= _ALPHA_THRESHOLD)
            extend = torch.minimum(extend, torch.sqrt(2.0 * torch.log(op.clamp(min=_ALPHA_THRESHOLD) / _ALPHA_THRESHOLD)))
        rx = torch.ceil(extend * torch.sqrt(cxx.clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(cyy.clamp(min=0)))
        valid = valid & ~((rx <= radius_clip) & (ry <= radius_clip))
        mx, my = means2d.detach().unbind(-1)
        valid = valid & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.where(valid[..., None], torch.stack([rx, ry], dim=-1), 0.0).int()
    return radii, means2d, depths, conics, compensations


# ----------------------------------------------------------------------------- tiles


@torch.no_grad()
def isect_tiles(
    means2d: Tensor,
    radii: Tensor,
    depths: Tensor,
    tile_size: int,
    tile_width: int,
    tile_height: int,
    sort: bool = True,
    segmented: bool = False,
    packed: bool = False,
    n_images: Optional[int] = None,
    image_ids: Optional[Tensor] = None,
    gaussian_ids: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Vectorised ``gsplat.cuda._torch_impl._isect_tiles`` (same ids and order; unpacked).

    Args: means2d [..., N, 2] pixels, radii [..., N, 2] int pixels, depths [..., N] metres (float32).

    Returns tiles_per_gauss [..., N] int32, isect_ids [n_isects] int64 ((image << tile_bits | tile)
    << 32 | depth bits), flatten_ids [n_isects] int32 (index into I * N).
    """
    if packed:
        raise NotImplementedError("gsplat reference mode: packed isect_tiles")
    image_dims = means2d.shape[:-2]
    N = means2d.shape[-2]
    I = math.prod(image_dims)
    dev = means2d.device
    m = means2d.detach().reshape(I * N, 2) / tile_size
    r = radii.reshape(I * N, 2) / tile_size
    lim = torch.tensor([tile_width, tile_height], device=dev)
    tmin = torch.minimum(torch.floor(m - r).int().clamp(min=0), lim)
    tmax = torch.minimum(torch.ceil(m + r).int().clamp(min=0), lim)
    span = tmax - tmin  # [I*N, 2]
    counts = span.prod(dim=-1) * (radii.reshape(I * N, 2) > 0).all(dim=-1)
    idx = torch.repeat_interleave(torch.arange(I * N, device=dev), counts.long())
    first = torch.cumsum(counts.long(), 0) - counts.long()
    local = torch.arange(idx.numel(), device=dev) - first[idx]
    w = span[idx, 0].long()
    tx = tmin[idx, 0].long() + local % w.clamp(min=1)
    ty = tmin[idx, 1].long() + local // w.clamp(min=1)
    tile_n_bits = (tile_width * tile_height).bit_length()
    assert I.bit_length() + tile_n_bits + 32 <= 64
    depth_bits = depths.detach().float().reshape(I * N).view(torch.int32).long() & 0xFFFFFFFF
    hi = ((idx // N) << tile_n_bits) | (ty * tile_width + tx)
    isect_ids = (hi << 32) | depth_bits[idx]
    flatten_ids = idx.int()
    if sort:
        isect_ids, order = torch.sort(isect_ids, stable=True)
        flatten_ids = flatten_ids[order]
    return counts.reshape(image_dims + (N,)).int(), isect_ids, flatten_ids


def isect_offset_encode(isect_ids: Tensor, n_images: int, tile_width: int, tile_height: int) -> Tensor:
    """gsplat's ``_torch_impl._isect_offset_encode``: offsets [I, tile_height, tile_width] int32."""
    from gsplat.cuda._torch_impl import _isect_offset_encode

    return _isect_offset_encode(isect_ids, n_images, tile_width, tile_height)


def spherical_harmonics(degrees_to_use: int, dirs: Tensor, coeffs: Tensor, masks: Optional[Tensor] = None) -> Tensor:
    """gsplat's ``_torch_impl._spherical_harmonics``: dirs [..., 3], coeffs [..., K, 3] -> [..., 3]; 0 where masked."""
    from gsplat.cuda._torch_impl import _spherical_harmonics

    out = _spherical_harmonics(degrees_to_use, dirs, coeffs)
    if masks is not None:
        out = torch.where(masks[..., None], out, torch.zeros_like(out))
    return out


# ----------------------------------------------------------------------------- pixels


@torch.no_grad()
def rasterize_to_indices_in_range(
    range_start: int,
    range_end: int,
    transmittances: Tensor,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    image_width: int,
    image_height: int,
    tile_size: int,
    isect_offsets: Tensor,
    flatten_ids: Tensor,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Torch port of gsplat's CUDA ``rasterize_to_indices_in_range`` (``RasterizeToIndices3DGS.cu``).

    Per pixel, walks the tile's depth-sorted Gaussians in blocks ``[range_start, range_end)`` of
    tile_size^2 entries from the pixel's transmittance [..., H, W]; a Gaussian with sigma < 0 or
    alpha < 1/255 is skipped, the pixel stops before one that would bring transmittance <= 1e-4.

    Returns gaussian_ids [M] (in [0, N)), pixel_ids [M] (row-major in the image), image_ids [M],
    grouped by (image, pixel) row-major and in depth order within a pixel, as the kernel writes them.
    """
    image_dims = means2d.shape[:-2]
    N = means2d.shape[-2]
    I = math.prod(image_dims)
    th, tw = isect_offsets.shape[-2:]
    dev = means2d.device
    n_isects = flatten_ids.numel()
    block = tile_size * tile_size
    P = block
    off = isect_offsets.reshape(-1).long()
    ends = torch.cat([off[1:], torch.tensor([n_isects], device=dev)])
    lo = torch.minimum(off + range_start * block, ends)
    hi = torch.minimum(ends, off + min(range_end, 2**40) * block)
    lens = (hi - lo).clamp(min=0)
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    if n_isects == 0 or int(lens.max()) == 0:
        return empty, empty, empty
    m2 = means2d.detach().reshape(I * N, 2)
    con = conics.detach().reshape(I * N, 3)
    opa = opacities.detach().reshape(I * N)
    trans_all = transmittances.reshape(I * image_height * image_width)
    pu = torch.arange(P, device=dev) % tile_size
    pv = torch.arange(P, device=dev) // tile_size
    tiles = torch.nonzero(lens > 0).squeeze(1)
    out_g, out_pix = [], []
    # chunks of tiles with at most _PAIR_BUDGET (intersection, pixel) pairs
    L_t = lens[tiles]
    start = 0
    while start < tiles.numel():
        L = int(L_t[start])
        stop = start + 1
        while stop < tiles.numel() and (stop - start + 1) * max(L, int(L_t[stop])) * P <= _PAIR_BUDGET:
            L = max(L, int(L_t[stop]))
            stop += 1
        t = tiles[start:stop]
        start = stop
        k = torch.arange(L, device=dev)
        valid = k[None, :] < lens[t, None]  # [T, L]
        isect = (lo[t, None] + k[None, :]).clamp(max=n_isects - 1)
        g = flatten_ids[isect].long()  # [T, L], index into I * N
        img = t // (th * tw)
        tile_id = t % (th * tw)
        ix = (tile_id % tw)[:, None] * tile_size + pu[None, :]  # [T, P]
        iy = (tile_id // tw)[:, None] * tile_size + pv[None, :]
        inside = (ix < image_width) & (iy < image_height)
        pix = img[:, None] * image_height * image_width + iy * image_width + ix  # [T, P] global pixel id
        px = ix.to(m2.dtype) + 0.5
        py = iy.to(m2.dtype) + 0.5
        xy = m2[g]  # [T, L, 2]
        c = con[g]
        dx = xy[..., 0, None] - px[:, None, :]  # [T, L, P]
        dy = xy[..., 1, None] - py[:, None, :]
        sigma = 0.5 * (c[..., 0, None] * dx * dx + c[..., 2, None] * dy * dy) + c[..., 1, None] * dx * dy
        alpha = torch.clamp_max(opa[g][..., None] * torch.exp(-sigma), 0.999)
        use = valid[..., None] & (sigma >= 0) & (alpha >= _ALPHA_THRESHOLD) & inside[:, None, :]
        factor = torch.where(use, 1.0 - alpha, torch.ones_like(alpha))
        t0 = torch.where(inside, trans_all[pix.clamp(max=trans_all.numel() - 1)], torch.zeros_like(px))
        # the kernel's float32 order: ((T0 * f1) * f2) * ...
        next_trans = torch.cumprod(torch.cat([t0[:, None, :], factor], dim=1), dim=1)[:, 1:]
        keep = (use & (next_trans > 1e-4)).transpose(1, 2)  # [T, P, L]: per pixel, depth order
        gg = g[:, None, :].expand(-1, P, -1)
        pp = pix[:, :, None].expand(-1, -1, L)
        out_g.append(gg[keep])
        out_pix.append(pp[keep])
    g_all = torch.cat(out_g)
    pix_all = torch.cat(out_pix)
    order = torch.sort(pix_all, stable=True).indices
    g_all, pix_all = g_all[order], pix_all[order]
    hw = image_height * image_width
    return g_all % N, pix_all % hw, pix_all // hw


class _GatherMeans2d(torch.autograd.Function):
    """means2d [I*N, 2] gathered per pair; backward also sums |grad| per Gaussian into ``target.absgrad``."""

    @staticmethod
    def forward(ctx, flat: Tensor, index: Tensor, target: Tensor) -> Tensor:  # noqa: D401
        ctx.save_for_backward(index)
        ctx.n = flat.shape[0]
        ctx.target = target
        return flat[index]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        g = torch.zeros(ctx.n, 2, dtype=grad.dtype, device=grad.device).index_add_(0, index, grad)
        a = torch.zeros(ctx.n, 2, dtype=grad.dtype, device=grad.device).index_add_(0, index, grad.abs())
        ctx.target.absgrad = a.reshape(ctx.target.shape)
        return g, None, None


def accumulate(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, gaussian_ids: Tensor,
               pixel_ids: Tensor, image_ids: Tensor, image_width: int, image_height: int,
               absgrad: bool = False) -> Tuple[Tensor, Tensor]:
    """gsplat's ``_torch_impl.accumulate`` with nerfacc's two calls ported to torch.

    Pairs must be grouped per (image, pixel) and depth-ordered within a pixel.  Returns renders
    [..., H, W, channels] and alphas [..., H, W, 1] (from transmittance 1).
    """
    image_dims = means2d.shape[:-2]
    I = math.prod(image_dims)
    N = means2d.shape[-2]
    ch = colors.shape[-1]
    flat = image_ids * N + gaussian_ids
    if absgrad and means2d.requires_grad:
        xy = _GatherMeans2d.apply(means2d.reshape(I * N, 2), flat, means2d)
    else:
        xy = means2d.reshape(I * N, 2)[flat]
    px = (pixel_ids % image_width).to(xy.dtype) + 0.5
    py = (pixel_ids // image_width).to(xy.dtype) + 0.5
    dx = px - xy[:, 0]
    dy = py - xy[:, 1]
    c = conics.reshape(I * N, 3)[flat]
    sigmas = 0.5 * (c[:, 0] * dx ** 2 + c[:, 2] * dy ** 2) + c[:, 1] * dx * dy
    alphas = torch.clamp_max(opacities.reshape(I * N)[flat] * torch.exp(-sigmas), 0.999)
    rays = image_ids * image_height * image_width + pixel_ids
    total = I * image_height * image_width
    # nerfacc render_weight_from_alpha: weight = alpha * exclusive cumprod(1 - alpha) along each ray
    uq, counts = torch.unique_consecutive(rays, return_counts=True)
    seg = torch.repeat_interleave(torch.arange(uq.numel(), device=rays.device), counts)
    pos = torch.arange(rays.numel(), device=rays.device) - (torch.cumsum(counts, 0) - counts)[seg]
    width = int(counts.max()) if counts.numel() else 0
    dense = torch.ones(uq.numel(), width + 1, dtype=alphas.dtype, device=alphas.device)
    dense = dense.index_put((seg, pos + 1), 1.0 - alphas)
    trans = torch.cumprod(dense, dim=1)[seg, pos]
    weights = alphas * trans
    # nerfacc accumulate_along_rays
    renders = torch.zeros(total, ch, dtype=colors.dtype, device=colors.device).index_add(
        0, rays, weights[:, None] * colors.reshape(I * N, ch)[flat])
    accs = torch.zeros(total, 1, dtype=weights.dtype, device=weights.device).index_add(0, rays, weights[:, None])
    return (renders.reshape(image_dims + (image_height, image_width, ch)),
            accs.reshape(image_dims + (image_height, image_width, 1)))


def rasterize_to_pixels(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    image_width: int,
    image_height: int,
    tile_size: int,
    isect_offsets: Tensor,
    flatten_ids: Tensor,
    backgrounds: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
    packed: bool = False,
    absgrad: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Torch twin of ``gsplat.cuda._wrapper.rasterize_to_pixels`` (unpacked, no masks), one pass.

    Args: means2d [..., N, 2] pixels, conics [..., N, 3], colors [..., N, D], opacities [..., N],
    isect_offsets [..., tile_height, tile_width], flatten_ids [n_isects], backgrounds [..., D].

    Returns colors [..., H, W, D] and alphas [..., H, W, 1]; with ``absgrad``, backward sets
    ``means2d.absgrad`` [..., N, 2].
    """
    if packed or masks is not None:
        raise NotImplementedError("gsplat reference mode: packed or masked rasterize_to_pixels")
    image_dims = means2d.shape[:-2]
    trans = torch.ones(image_dims + (image_height, image_width), dtype=means2d.dtype, device=means2d.device)
    gs_ids, pixel_ids, image_ids = rasterize_to_indices_in_range(
        0, 2**31 - 1, trans, means2d, conics, opacities, image_width, image_height, tile_size, isect_offsets,
        flatten_ids)
    render_colors, render_alphas = accumulate(means2d, conics, opacities, colors, gs_ids, pixel_ids, image_ids,
                                              image_width, image_height, absgrad=absgrad)
    if backgrounds is not None:
        render_colors = render_colors + backgrounds[..., None, None, :] * (1.0 - render_alphas)
    return render_colors, render_alphas


@functools.lru_cache(maxsize=1)
def reference_rasterization():
    """``gsplat.rendering.rasterization`` (1.5.3) with its CUDA entry points bound to the torch twins above.

    The very function object's code, defaults and signature; only the module globals it looks the
    five kernels up in differ (a copy: gsplat's module is not modified).
    """
    import gsplat.rendering as gr

    fn = gr.rasterization
    glb = dict(fn.__globals__)
    glb.update(fully_fused_projection=fully_fused_projection, isect_tiles=isect_tiles,
               isect_offset_encode=isect_offset_encode, rasterize_to_pixels=rasterize_to_pixels,
               spherical_harmonics=spherical_harmonics)
    ref = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)
    ref.__kwdefaults__ = fn.__kwdefaults__
    ref.__doc__ = fn.__doc__
    return ref
