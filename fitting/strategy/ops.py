"""Parameter surgery on a :class:`~talksplat.avatar.GaussianAvatar`, shared by the densification strategies.

Modelled on ``gsplat/strategy/ops.py``: each operation replaces the avatar's ``nn.Parameter`` (``setattr``),
re-keys the optimizer state onto the new parameter (rows of ``exp_avg`` / ``exp_avg_sq`` are copied for
surviving Gaussians and zero for new ones; ``step`` is kept), updates ``avatar.binding`` (new Gaussians
inherit their parent's face) and the strategy's per-Gaussian running state tensors.

Every operation takes ``optimizers``: avatar parameter name (:data:`~talksplat.avatar.gaussians.PARAM_NAMES`)
-> an optimizer holding exactly that tensor (one param group), as the trainer builds them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import torch
from torch import Tensor, nn

from talksplat.avatar.gaussians import PARAM_NAMES, GaussianAvatar
from talksplat.render import quat_to_rotmat

__all__ = ["SPLIT_SCALE_DIVISOR", "duplicate", "split", "remove", "reset_opa"]

#: Split children get scales divided by this (3DGS / gsplat: 1.6).
SPLIT_SCALE_DIVISOR = 1.6


@torch.no_grad()
def _update_param_with_optimizer(
    param_fn: Callable[[str, Tensor], Tensor],
    optimizer_fn: Callable[[str, Tensor], Tensor],
    avatar: GaussianAvatar,
    optimizers: Mapping[str, torch.optim.Optimizer],
    names: Optional[Iterable[str]] = None,
) -> None:
    """Replace avatar parameters and move their optimizer state onto the replacements.

    Args:
        param_fn: (name, old [N, ...]) -> new tensor [N', ...]; wrapped in a fresh ``nn.Parameter``
            with the old ``requires_grad`` and set on the avatar.
        optimizer_fn: (state key, old state tensor [N, ...]) -> new state tensor [N', ...]; applied
            to every per-row state tensor (``exp_avg``, ``exp_avg_sq``, ...). ``step`` (and any other
            0-dim / non-tensor entry) is kept as is.
        avatar: the avatar whose parameters are replaced in place.
        optimizers: name -> optimizer holding exactly that parameter (one param group).
        names: parameter names to update; default all of :data:`PARAM_NAMES`.
    """
    for name in (PARAM_NAMES if names is None else names):
        param = getattr(avatar, name)
        new_param = nn.Parameter(param_fn(name, param.detach()).contiguous(), requires_grad=param.requires_grad)
        setattr(avatar, name, new_param)
        if name not in optimizers:
            if param.requires_grad:
                raise ValueError(f"no optimizer for trainable avatar parameter '{name}'")
            continue
        optimizer = optimizers[name]
        param_state = optimizer.state.pop(param, None)
        if param_state is not None:
            for key, v in list(param_state.items()):
                if key != "step" and isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == param.shape[0]:
                    param_state[key] = optimizer_fn(key, v)
        for group in optimizer.param_groups:
            group["params"] = [new_param if p is param else p for p in group["params"]]
        if param_state is not None:
            optimizer.state[new_param] = param_state


def _sync_state(state: Optional[Dict[str, Any]], n_old: int, fn: Callable[[Tensor], Tensor]) -> None:
    """Apply a row operation to every per-Gaussian tensor ([n_old, ...]) in the strategy state."""
    if not state:
        return
    for k, v in list(state.items()):
        if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n_old:
            state[k] = fn(v)


@torch.no_grad()
def duplicate(avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
              state: Optional[Dict[str, Any]], mask: Tensor) -> None:
    """Clone the Gaussians selected by ``mask`` [N] bool; clones are appended at the end.

    Clones copy every parameter and the parent's ``binding`` face; their optimizer state rows are
    zero; running-state rows are copied.  N -> N + mask.sum().
    """
    n = avatar.num_gaussians
    sel = torch.where(mask)[0]

    def param_fn(name: str, p: Tensor) -> Tensor:
        return torch.cat([p, p[sel]])

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((len(sel), *v.shape[1:]))])

    _update_param_with_optimizer(param_fn, optimizer_fn, avatar, optimizers)
    avatar.binding = torch.cat([avatar.binding, avatar.binding[sel]])
    _sync_state(state, n, lambda v: torch.cat([v, v[sel]]))


@torch.no_grad()
def split(avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
          state: Optional[Dict[str, Any]], mask: Tensor, generator: Optional[torch.Generator] = None) -> None:
    """Split each Gaussian selected by ``mask`` [N] bool into two children.

    The parents are removed; the 2 * S children are appended at the end (all first children,
    then all second children, as gsplat).  Children keep the parent's ``binding`` face and all
    other attributes, except:

    * ``local_means`` [.., 3] face units: sampled from the parent's own distribution in the face
      frame, ``mu + R(q) @ (exp(log_scales) * randn(3))``;
    * ``log_scales`` [.., 3] log face units: ``parent - log(1.6)``.

    Optimizer state rows of children are zero; running-state rows are copied from the parent.
    N -> N + mask.sum().
    """
    n = avatar.num_gaussians
    sel = torch.where(mask)[0]
    rest = torch.where(~mask)[0]
    scales = torch.exp(avatar.log_scales.detach()[sel])  # [S, 3] face units
    rotmats = quat_to_rotmat(avatar.local_quats.detach()[sel])  # [S, 3, 3] face frame
    # drawn by the CPU generator (or ``generator`` on its own device): a seeded fit splits alike on CPU and CUDA
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(2, len(sel), 3, device=gen_device, dtype=scales.dtype, generator=generator).to(scales.device)
    samples = torch.einsum("nij,nj,bnj->bni", rotmats, scales, noise)  # [2, S, 3] face units

    def param_fn(name: str, p: Tensor) -> Tensor:
        repeats = [2] + [1] * (p.dim() - 1)
        if name == "local_means":
            children = (p[sel][None] + samples).reshape(-1, 3)
        elif name == "log_scales":
            children = (p[sel] - math.log(SPLIT_SCALE_DIVISOR)).repeat(repeats)
        else:
            children = p[sel].repeat(repeats)
        return torch.cat([p[rest], children])

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        return torch.cat([v[rest], v.new_zeros((2 * len(sel), *v.shape[1:]))])

    _update_param_with_optimizer(param_fn, optimizer_fn, avatar, optimizers)
    avatar.binding = torch.cat([avatar.binding[rest], avatar.binding[sel].repeat(2)])
    _sync_state(state, n, lambda v: torch.cat([v[rest], v[sel].repeat([2] + [1] * (v.dim() - 1))]))


@torch.no_grad()
def remove(avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
           state: Optional[Dict[str, Any]], mask: Tensor) -> None:
    """Remove the Gaussians selected by ``mask`` [N] bool (parameters, optimizer rows, binding,
    running state).  Does not protect faces: the binding strategy does that before calling."""
    n = avatar.num_gaussians
    keep = torch.where(~mask)[0]

    _update_param_with_optimizer(lambda name, p: p[keep], lambda key, v: v[keep], avatar, optimizers)
    avatar.binding = avatar.binding[keep]
    _sync_state(state, n, lambda v: v[keep])


@torch.no_grad()
def reset_opa(avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
              state: Optional[Dict[str, Any]], value: float) -> None:
    """Clamp opacities to at most ``value`` (post-sigmoid, above 0; 1 or more clamps nothing) and zero the
    opacity optimizer's moment estimates (``step`` is kept), as gsplat's ``reset_opa``."""
    max_logit = math.log(value / (1.0 - value)) if value < 1.0 else math.inf

    def param_fn(name: str, p: Tensor) -> Tensor:
        return torch.clamp(p, max=max_logit)

    _update_param_with_optimizer(param_fn, lambda key, v: torch.zeros_like(v), avatar, optimizers,
                                 names=["opacity_logits"])
