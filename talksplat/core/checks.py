"""Checks at every boundary: numeric options before any work, arrays as they are read from files.

Options: a numeric config field carries its range as ``Annotated[int, Range(1, 100_000)]``; its
help text (the attribute docstring) ends with the same words (``Range.text``, e.g. "(1 to 100000)"),
and :func:`check_options` checks a whole parsed config, nested configs included::

    steps: Annotated[int, Range(1)] = 100
    \"\"\"Training steps (at least 1).\"\"\"

Arrays: :func:`check_array` checks dtype, shape and finiteness of one array read from ``source``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, OptionError


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric option: ``lo <= x <= hi`` (``lo < x`` with ``open_lo``); None: unbounded.
    Every value must be finite (NaN and Inf are refused)."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False

    @property
    def text(self) -> str:
        """The range in words, as written in the option's help: "(1 to 240)", "(at least 1)", "(above 0)"."""
        def f(x):
            return f"{x:g}" if isinstance(x, float) else str(x)

        if self.lo is not None and self.hi is not None:
            return f"({'above ' + f(self.lo) + ', up' if self.open_lo else f(self.lo)} to {f(self.hi)})"
        if self.lo is not None:
            return f"({'above' if self.open_lo else 'at least'} {f(self.lo)})"
        if self.hi is not None:
            return f"(at most {f(self.hi)})"
        return "(any finite number)"

    def check(self, value: Any, option: str) -> None:
        """Raise :class:`OptionError` ("--steps -5: must be at least 1") when ``value`` is outside."""
        if value is None:
            return
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise OptionError(f"{option} {v}: must be a finite number {self.text}")
            low = self.lo is not None and (v <= self.lo if self.open_lo else v < self.lo)
            if low or (self.hi is not None and v > self.hi):
                raise OptionError(f"{option} {v}: out of range {self.text}")


def option_ranges(config_type: type) -> dict[str, Range]:
    """Field name -> :class:`Range` of a config dataclass's annotated fields."""
    hints = typing.get_type_hints(config_type, include_extras=True)
    out = {}
    for name, hint in hints.items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, Range):
                out[name] = meta
    return out


def check_options(config: Any, prefix: str = "--") -> None:
    """Check every ranged field of a config dataclass (and of the dataclasses nested in it)."""
    if not dataclasses.is_dataclass(config):
        return
    ranges = option_ranges(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = prefix + f.name.replace("_", "-")
        if f.name in ranges:
            ranges[f.name].check(value, flag)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_options(value, flag + ".")


def check_finite_option(value: float, option: str) -> float:
    """One parsed number of a compound option (``--camera 20,5``): finite, or :class:`OptionError`."""
    if not math.isfinite(value):
        raise OptionError(f"{option}: {value} is not a finite number")
    return value


def check_array(a: Any, source: str, name: str, shape: tuple | None = None, finite: bool = True,
                integer: bool = False) -> np.ndarray:
    """Check one array read from file ``source`` and return it as an ndarray.

    ``shape``: the expected shape, each entry an int or None (any size); ``finite``: refuse NaN and
    Inf; ``integer``: an integer dtype.  Raises :class:`InputError` ("rig_params.npz: 'jaw' has shape
    [10, 2], expected [T, 3]")."""
    try:
        arr = np.asarray(a)
    except Exception:  # noqa: BLE001 - whatever the file held
        raise InputError(f"{source}: '{name}' is not an array") from None
    if integer:
        if arr.dtype.kind not in "iu":
            raise InputError(f"{source}: '{name}' must hold integers, not {arr.dtype}")
    elif arr.dtype.kind not in "fiub":
        raise InputError(f"{source}: '{name}' must hold numbers, not {arr.dtype}")
    if shape is not None and (arr.ndim != len(shape) or any(w is not None and w != s for w, s in zip(shape, arr.shape))):
        want = ", ".join("*" if w is None else str(w) for w in shape)
        raise InputError(f"{source}: '{name}' has shape {list(arr.shape)}, expected [{want}]")
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InputError(f"{source}: '{name}' holds non-finite values (NaN or Inf)")
    return arr
