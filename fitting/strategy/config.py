"""The strategies' options (``talksplat fit --strategy.*``): torch-free dataclasses that build the strategy.

Each field is a knob of the strategy itself (the torch implementation subclasses its config, so the
defaults live here only); ``build`` adds what depends on the fit (its step count and Gaussian budget).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from talksplat.core.checks import Range

if TYPE_CHECKING:
    from .binding import BindingStrategy

__all__ = ["BindingStrategyConfig"]


@dataclass
class BindingStrategyConfig:
    """Densification of Gaussians bound to rig triangles (GaussianAvatars-style): every `refine_every` steps,
    Gaussians with large screen-space gradients are cloned (small ones) or split (large ones) inside their
    face and transparent or oversized ones are pruned, never leaving a face empty; opacities are reset
    every `reset_every` steps. Sizes are in face units (relative to the parent triangle's size)."""

    prune_opa: Annotated[float, Range(0.0, 0.5, open_lo=True)] = 0.005
    """Opacity below which a Gaussian is pruned; opacity resets clamp opacities to twice it (above 0, up to 0.5)."""
    grow_grad2d: Annotated[float, Range(0.0)] = 0.0002
    """Mean screen-space gradient of a Gaussian's centre (d loss / d NDC position) above which it grows
    (at least 0)."""
    grow_scale_face: Annotated[float, Range(0.0)] = 0.5
    """A growing Gaussian whose largest scale is at most this (face units) is cloned, a larger one split in
    two (at least 0)."""
    prune_scale_face: Annotated[float, Range(0.0, open_lo=True)] = 3.0
    """Gaussians larger than this (face units) are pruned, once the first opacity reset has passed (above 0)."""
    refine_start_iter: Annotated[int, Range(0)] = 500
    """Grow/prune passes run after this step (at least 0)."""
    refine_stop_fraction: Annotated[float, Range(0.0, 1.0)] = 0.75
    """Densification and opacity resets stop after this fraction of the steps (0 to 1)."""
    refine_every: Annotated[int, Range(1)] = 100
    """Steps between grow/prune passes (at least 1)."""
    reset_every: Annotated[int, Range(1)] = 3000
    """Steps between opacity resets (at least 1)."""
    pause_refine_after_reset: Annotated[int, Range(0)] = 0
    """No grow/prune pass for this many steps after an opacity reset (at least 0)."""

    def build(self, steps: int, budget: int) -> "BindingStrategy":
        """The strategy for a fit of ``steps`` steps: refinement stops at ``refine_stop_fraction * steps``;
        growth never takes the avatar past ``budget`` Gaussians."""
        from .binding import BindingStrategy

        knobs = {f.name: getattr(self, f.name) for f in dataclasses.fields(BindingStrategyConfig)}
        return BindingStrategy(**knobs, refine_stop_iter=int(self.refine_stop_fraction * steps), budget=budget)
