"""The conditioning code of expression-dependent appearance: rig parameters -> one small vector per frame.

An avatar's colour blendshapes (``GaussianAvatar.sh_dc_blend`` [N, D, 3]) add ``sh_dc_blend @ code`` to each
Gaussian's SH DC colour (as 3D Gaussian Blendshapes / RGBAvatar), so wrinkles and mouth and eye shading follow
the expression.  This module is the one definition of that code; every rig (the open head, FLAME) exposes
the same :class:`~talksplat.rigs.base.RigParams`, so it needs nothing rig-specific.
"""

from __future__ import annotations

import torch

from talksplat.rigs.base import RigParams

__all__ = ["JAW_UNIT_RAD", "appearance_code", "appearance_code_size"]

#: Jaw rotation (radians) that counts as one unit of the code (about a wide-open mouth), so the jaw's
#: entries are of the order of the expression coefficients.
JAW_UNIT_RAD = 0.2


def appearance_code(params: RigParams) -> torch.Tensor:
    """The appearance code of B frames: the expression coefficients, then the jaw rotation.

    Args:
        params: rig parameters with batch size B (``expression`` [B, E], ``jaw`` [B, 3] axis-angle radians).
    Returns:
        [B, E + 3]: ``expression`` as is (open head: ARKit units in 0..1; FLAME: PCA coefficients), then
        ``jaw / JAW_UNIT_RAD``.  Zero for the neutral face (no expression, closed jaw).
    """
    return torch.cat([params.expression, params.jaw / JAW_UNIT_RAD], dim=-1)


def appearance_code_size(num_expression: int) -> int:
    """D, the length of :func:`appearance_code` for a rig with ``num_expression`` expression coefficients."""
    return int(num_expression) + 3
