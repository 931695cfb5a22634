"""Choosing the torch device from a `--device auto|cpu|cuda` flag."""

from __future__ import annotations

import torch

from talksplat.core.errors import OptionError


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when torch sees a GPU (gsplat kernels), else the CPU (our rasterizer)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda, but torch sees no CUDA device (install a CUDA build of torch)")
    return torch.device(name)
