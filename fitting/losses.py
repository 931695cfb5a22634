"""Image losses and metrics for fitting: SSIM (as the 3DGS reference), the 3DGS photometric loss
with optional per-pixel weights, and PSNR.

Images are float in [0, 1].  :func:`ssim` / :func:`ssim_map` take ``[B, C, H, W]`` (channel-first,
as ``conv2d`` wants) or a single ``[H, W, C]`` image; :func:`photometric_loss` and :func:`psnr`
take the project layout ``[H, W, 3]`` or ``[B, H, W, 3]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_window", "ssim", "ssim_map", "photometric_loss", "psnr"]

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def gaussian_window(window: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> Tensor:
    """[window] normalised 1D Gaussian, centred on ``window // 2`` (as the 3DGS code)."""
    x = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur of [B, C, H, W] with zero padding ``window // 2`` (same size out)."""
    c = x.shape[1]
    k = g.numel()
    pad = k // 2
    gx = g.view(1, 1, 1, k).expand(c, 1, 1, k)
    gy = g.view(1, 1, k, 1).expand(c, 1, k, 1)
    x = F.conv2d(x, gx, padding=(0, pad), groups=c)
    return F.conv2d(x, gy, padding=(pad, 0), groups=c)


def ssim_map(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel, per-channel SSIM (Gaussian window, zero padding ``window // 2``, as 3DGS).

    Args:
        x, y: [B, C, H, W] or [H, W, C] images in [0, 1] (same shape).
        window: odd window width in pixels; sigma: its standard deviation in pixels.
    Returns:
        [B, C, H, W] (or [H, W, C] for [H, W, C] inputs) SSIM values, 1 where x == y.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    hwc = x.ndim == 3
    if hwc:
        x = x.permute(2, 0, 1)[None]
        y = y.permute(2, 0, 1)[None]
    elif x.ndim != 4:
        raise ValueError(f"ssim: expected [B, C, H, W] or [H, W, C], got {tuple(x.shape)}")
    g = gaussian_window(window, sigma, dtype=x.dtype, device=x.device)
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx = _blur(x * x, g) - mu_xx
    s_yy = _blur(y * y, g) - mu_yy
    s_xy = _blur(x * y, g) - mu_xy
    m = ((2.0 * mu_xy + C1) * (2.0 * s_xy + C2)) / ((mu_xx + mu_yy + C1) * (s_xx + s_yy + C2))
    return m[0].permute(1, 2, 0) if hwc else m


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM over pixels, channels and batch: scalar tensor (1 for identical images).

    Args: as :func:`ssim_map` ([B, C, H, W] or [H, W, C], values in [0, 1]).
    """
    return ssim_map(x, y, window, sigma).mean()


def _to_bhwc(img: Tensor, name: str) -> Tensor:
    if img.ndim == 3:
        return img[None]
    if img.ndim == 4:
        return img
    raise ValueError(f"{name}: expected [H, W, 3] or [B, H, W, 3], got {tuple(img.shape)}")


def photometric_loss(render: Tensor, target: Tensor, weight: Tensor | None = None,
                     lambda_dssim: float = 0.2, reduction: str = "mean") -> Tensor:
    """The 3DGS loss ``(1 - λ)·L1 + λ·(1 - SSIM)``, optionally weighted per pixel.

    Args:
        render, target: [H, W, 3] or [B, H, W, 3] images in [0, 1] (same shape).
        weight: optional [H, W] or [B, H, W] non-negative per-pixel weights. The L1 and D-SSIM maps
            are averaged with these weights and divided by the weight mean, so a constant weight
            gives exactly the unweighted loss.
        lambda_dssim: λ.
        reduction: "mean": one loss over every pixel of the batch (weights normalised over the batch);
            "none": [B], each image's loss (weights normalised per image; ``.mean()`` of it gives each
            image the same share whatever its weights).
    Returns:
        scalar loss tensor ("mean"), or [B] ("none").
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"photometric_loss: unknown reduction {reduction!r}")
    if render.shape != target.shape:
        raise ValueError(f"photometric_loss: shapes differ: {tuple(render.shape)} vs {tuple(target.shape)}")
    r = _to_bhwc(render, "photometric_loss")
    t = _to_bhwc(target, "photometric_loss")
    l1 = (r - t).abs()  # [B, H, W, 3]
    dssim = 1.0 - ssim_map(r.permute(0, 3, 1, 2), t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def reduce(x: Tensor) -> Tensor:  # over the whole batch ("mean") or per image ("none": [B])
        return x.mean((1, 2, 3)) if reduction == "none" else x.mean()

    if weight is None:
        return (1.0 - lambda_dssim) * reduce(l1) + lambda_dssim * reduce(dssim)
    w = weight.to(dtype=r.dtype, device=r.device)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or w.shape[-2:] != r.shape[1:3]:
        raise ValueError(f"photometric_loss: weight must be [H, W] or [B, H, W] matching the image "
                         f"{tuple(r.shape[1:3])}, got {tuple(weight.shape)}")
    w = w.expand(r.shape[0], -1, -1)[..., None]  # [B, H, W, 1]
    norm = reduce(w).clamp_min(1e-12)
    l1_w = reduce(w * l1) / norm
    dssim_w = reduce(w * dssim) / norm
    return (1.0 - lambda_dssim) * l1_w + lambda_dssim * dssim_w


def psnr(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (peak 1): ``-10 log10(MSE)``.

    Args:
        x, y: [H, W, 3] or [B, H, W, 3] (any [..., C] layout with the channel last).
        mask: optional bool or float [H, W] (or [B, H, W]) selecting pixels; the MSE is taken over
            the masked pixels only (all channels), float masks weight them.
    Returns:
        scalar float tensor, dB (inf for identical images; nan for an empty mask).
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    se = (x.detach().double() - y.detach().double()) ** 2
    if mask is None:
        mse = se.mean()
    else:
        m = mask.to(device=se.device, dtype=torch.float64)[..., None].expand_as(se)
        mse = (m * se).sum() / m.sum()
    return (-10.0 * torch.log10(mse)).float()
