"""Options every command shares (a base of each command's config dataclass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from .checks import Range


@dataclass(kw_only=True)
class ProcessOptions:
    """Settings of the process itself rather than of the job."""

    threads: Annotated[int | None, Range(1, 1024)] = None
    """CPU threads for torch; default: the cores available to this process (1 to 1024)."""
