"""Real spherical harmonics (degrees 0..3) with gsplat's conventions.

Colours from SH coefficients are evaluated exactly as gsplat does it:
``colour = clamp_min(SH(dir) + 0.5, 0)`` where ``dir`` is the normalised vector
from the camera centre to the Gaussian mean (world frame). The basis ordering and
signs are those of gsplat / the Inria 3DGS code (Sloan's ordering).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SH_C0", "num_sh_bases", "sh_bases", "eval_sh", "sh_to_rgb", "rgb_to_sh"]

SH_C0 = 0.28209479177387814


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients for ``degree`` (0..3): (degree+1)^2."""
    return (degree + 1) ** 2


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Evaluate the real SH basis.

    Args:
        degree: 0..3.
        dirs: [..., 3] unit directions (world frame, unitless).

    Returns:
        [..., (degree+1)^2] basis values.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"sh degree must be in 0..3, got {degree}")
    out = [torch.full_like(dirs[..., 0], 0.2820947917738781)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (2.0 * zz - xx - yy),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree >= 3:
        out += [
            -0.5900435899266435 * y * (3 * xx - yy),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (4 * zz - xx - yy),
            0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
            -0.4570457994644658 * x * (4 * zz - xx - yy),
            1.445305721320277 * z * (xx - yy),
            -0.5900435899266435 * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Raw SH colour (no +0.5 offset, no clamp).

    Args:
        degree: SH degree to use, 0..3.
        dirs: [..., 3] view directions (any norm; normalised here).
        coeffs: [..., K, 3] coefficients, K >= (degree+1)^2 (extra ones ignored).

    Returns:
        [..., 3].
    """
    nb = num_sh_bases(degree)
    if coeffs.shape[-2] < nb:
        raise ValueError(f"need at least {nb} SH coefficients for degree {degree}, got {coeffs.shape[-2]}")
    dirs = torch.nn.functional.normalize(dirs, p=2, dim=-1)
    bases = sh_bases(degree, dirs)  # [..., nb]
    return (bases[..., None] * coeffs[..., :nb, :]).sum(dim=-2)


def sh_to_rgb(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour in [0, inf) as gsplat: ``clamp_min(eval_sh + 0.5, 0)``. Shapes as :func:`eval_sh`."""
    return torch.clamp_min(eval_sh(degree, dirs, coeffs) + 0.5, 0.0)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient [..., 3] giving colour ``rgb`` [..., 3] (degree-0 inverse)."""
    return (rgb - 0.5) / SH_C0
