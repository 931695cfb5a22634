"""The errors a user can fix.  The CLI prints any :class:`TalksplatError` as one line,
``talksplat: error: <message>``, and exits 1; every other exception is a bug and keeps its traceback.

Messages start with the file or option they are about (``clip.mp4: not a video file (...)``,
``--steps -5: must be at least 1``).
"""

from __future__ import annotations


class TalksplatError(Exception):
    """A problem with the user's input, options or output location: one line, names the file or option."""


class InputError(TalksplatError, ValueError):
    """An input file that is missing, unreadable, damaged, or holds invalid values (NaN, wrong shape)."""


class OptionError(TalksplatError, ValueError):
    """A command-line option outside its range or in the wrong form."""


class OutputError(TalksplatError):
    """An output location that cannot be used: it holds foreign files or an input, exists without
    ``--overwrite``, or is in use by another talksplat process."""
