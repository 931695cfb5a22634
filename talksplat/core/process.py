"""The process: signals, child processes, CPU threads.

- :func:`handle_termination`: SIGTERM (and SIGHUP) raise ``KeyboardInterrupt`` like Ctrl-C, so every
  ``finally`` and ``except BaseException`` clean-up runs; the CLI prints "interrupted" and exits 130.
- :func:`child_kwargs`: ``subprocess`` arguments that make a child (ffmpeg, espeak-ng) die with us,
  even on ``kill -9`` (Linux ``PR_SET_PDEATHSIG``).
- :func:`configure_threads`: torch's intra-op threads; ``OMP_WAIT_POLICY=PASSIVE`` must already be
  in the environment when torch is imported (the CLI sets it first thing), else idle OpenMP workers
  spin and every command slows down several-fold when anything else uses the cores.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: :func:`available_cores`); returns the number used."""
    import torch

    n = threads or available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def handle_termination() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread (SIGINT explicitly too: a
    background job may start with it ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)


_prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec: no allocation-heavy work
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_kwargs() -> dict:
    """Keyword arguments for ``subprocess.Popen`` / ``run`` so the child is killed when we die."""
    global _prctl
    if not sys.platform.startswith("linux"):
        return {}
    if _prctl is None:
        import ctypes

        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return {}
    return {"preexec_fn": _die_with_parent}
