"""Choosing the torch device from a `--device auto|cpu|cuda` flag; downloading rendered batches to the host."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from talksplat.core.errors import OptionError


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when torch sees a GPU (gsplat kernels), else the CPU (our rasterizer)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda, but torch sees no CUDA device (install a CUDA build of torch)")
    return torch.device(name)


def download(batches: Iterable[torch.Tensor]) -> Iterator[np.ndarray]:
    """Yield each tensor of ``batches`` (e.g. [B, H, W, 3] uint8 frames) as a host numpy array, in order.

    CUDA tensors are copied on a side stream into pinned host memory without blocking, and a batch is handed
    on only once the next one has been asked for (its rendering queued): the download of batch k overlaps the
    rendering of batch k+1.  Each batch gets its own pinned buffer (torch's caching host allocator recycles
    them once the arrays are dropped), so a consumer may keep the arrays.  CPU tensors are yielded as they
    are (no copy)."""
    stream = None
    pending: tuple[torch.Tensor, torch.cuda.Event] | None = None
    for batch in batches:
        if batch.device.type != "cuda":
            yield batch.numpy()
            continue
        if stream is None:
            stream = torch.cuda.Stream(batch.device)
        host = torch.empty(batch.shape, dtype=batch.dtype, pin_memory=True)
        stream.wait_stream(torch.cuda.current_stream(batch.device))  # the batch is rendered
        with torch.cuda.stream(stream):
            host.copy_(batch, non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
        batch.record_stream(stream)  # its memory is not reused before the copy ends
        if pending is not None:
            pending[1].synchronize()
            yield pending[0].numpy()
        pending = (host, done)
    if pending is not None:
        pending[1].synchronize()
        yield pending[0].numpy()
