"""talksplat's cache folder: derived files that are expensive to make and safe to delete (the built open head,
landmark embeddings of each rig).  Nothing is ever downloaded into it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$TALKSPLAT_CACHE``, else the user cache folder (``~/.cache/talksplat`` on Linux)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TALKSPLAT_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("talksplat"))
