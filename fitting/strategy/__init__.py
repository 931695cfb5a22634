"""Densification strategies for triangle-bound Gaussians, as gsplat's ``gsplat/strategy`` package.

- :mod:`.base`: :class:`Strategy` (the hooks the trainer calls) and :class:`StrategyConfig` (builds one);
- :mod:`.config`: the strategies' CLI options (torch-free; ``talksplat fit --strategy.*``);
- :mod:`.ops`: parameter surgery shared by strategies (duplicate, split, remove, reset_opa);
- :mod:`.binding`: :class:`BindingStrategy`, GaussianAvatars-style clone / split / prune inside faces.

A new strategy is one module beside ``binding.py`` plus its config in ``config.py`` (see :mod:`.base`).
Importing this package imports no torch: the torch parts load on first use.
"""

from __future__ import annotations

from importlib import import_module

from .base import Strategy, StrategyConfig
from .config import BindingStrategyConfig

_LAZY = {"BindingStrategy": "binding", "keep_one_per_face": "binding", "SPLIT_SCALE_DIVISOR": "ops",
         "duplicate": "ops", "split": "ops", "remove": "ops", "reset_opa": "ops"}

__all__ = ["Strategy", "StrategyConfig", "BindingStrategyConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
