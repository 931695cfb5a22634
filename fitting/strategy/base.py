"""What the trainer asks of a densification strategy, and of the config that builds one.

The hooks are gsplat 1.5.3's (``gsplat/strategy/base.py``): the trainer owns the avatar and one
optimizer per avatar parameter (:data:`~talksplat.avatar.gaussians.PARAM_NAMES`) and calls, per step::

    strategy = cfg.strategy.build(steps=..., budget=...)      # a StrategyConfig -> a Strategy
    strategy.check_sanity(avatar, optimizers)                 # once, before training
    state = strategy.initialize_state()                       # running state (kept in checkpoints)
    for step in ...:
        render ... -> meta (the rasterizer's meta of the frame: its C cameras, rendered in one call)
        strategy.step_pre_backward(avatar, optimizers, state, step, meta)
        loss.backward(); Adam steps
        strategy.step_post_backward(avatar, optimizers, state, step, meta)

A strategy changes the avatar only through :mod:`talksplat.fitting.strategy.ops` (which keeps the
parameters, optimizer rows, ``binding`` and the per-Gaussian state tensors in step).  Its state is a dict
whose values are tensors or JSON values (numbers, strings, None, lists, dicts): checkpoints save tensors
as tensors and the rest in their JSON header, so a resumed fit gets the same state back.

Adding a strategy: one module beside ``binding.py`` with the torch implementation, and its config
dataclass (torch-free, with ``build``) in ``config.py``; then make ``FitConfig.strategy`` a union of the
configs (``Union[Annotated[BindingStrategyConfig, tyro.conf.subcommand("binding")], ...]``) so tyro offers
``strategy:NAME`` with that strategy's own flags.  The trainer never names a strategy class.

This module imports no torch (the CLI's configs import it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from talksplat.avatar.gaussians import GaussianAvatar

__all__ = ["Strategy", "StrategyConfig"]


@runtime_checkable
class Strategy(Protocol):
    """Densification hooks the trainer calls (see the module docstring for the order)."""

    def initialize_state(self) -> Dict[str, Any]:
        """A fresh running state: tensors and JSON values only (it is checkpointed)."""
        ...

    def check_sanity(self, avatar: "GaussianAvatar", optimizers: Mapping[str, "torch.optim.Optimizer"]) -> None:
        """Raise ``ValueError`` when the avatar or its optimizers cannot be used (called once)."""
        ...

    def step_pre_backward(self, avatar: "GaussianAvatar", optimizers: Mapping[str, "torch.optim.Optimizer"],
                          state: Dict[str, Any], step: int, info: Any) -> None:
        """Before ``loss.backward()``; ``info``: the rasterizer meta of the frame rendered this step (C cameras;
        the loss is the mean over the C images)."""
        ...

    def step_post_backward(self, avatar: "GaussianAvatar", optimizers: Mapping[str, "torch.optim.Optimizer"],
                           state: Dict[str, Any], step: int, info: Any) -> None:
        """After the optimizer steps: statistics, growth, pruning, resets (through ``ops``)."""
        ...


@runtime_checkable
class StrategyConfig(Protocol):
    """A strategy's CLI options (a torch-free dataclass, ``--strategy.*``) that builds the strategy."""

    def build(self, steps: int, budget: int) -> Strategy:
        """The strategy for a fit of ``steps`` steps that may hold at most ``budget`` Gaussians."""
        ...
