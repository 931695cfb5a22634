"""How commands name a rig: specs, the one help text of every ``--rig`` option, built-in rig names.

Torch-free (the CLI's configs import it at start-up).  A spec is what a user types: ``open`` (the
built-in open head), ``flame`` (the FLAME file named by ``$TALKSPLAT_FLAME``) or ``flame:PATH``;
:func:`talksplat.rigs.load_rig` turns it into a rig.  Adding a rig: its loader in ``rigs/``, its spec
in :func:`talksplat.rigs.load_rig_assets`, its wording in :data:`RIG_CHOICES`, and, when it needs no
user file, its name in :data:`BUILTIN_SPECS`; nothing outside ``rigs/`` changes.
"""

from __future__ import annotations

from typing import Annotated, Optional

import tyro

__all__ = ["DEFAULT_RIG", "RIG_CHOICES", "RIG_HELP", "RECORDED_RIG_HELP", "DATASET_RIG_HELP", "BUILTIN_SPECS",
           "RigSpec", "RecordedRigSpec", "DatasetRigSpec", "builtin_spec"]

#: The rig used when a command that creates data is given none.
DEFAULT_RIG = "open"

#: The specs a user can give, in words (every --rig help text quotes it).
RIG_CHOICES = "`open` (built in), `flame` (path in $TALKSPLAT_FLAME) or `flame:PATH`"

#: Help of the --rig option of commands that create data on a rig (prep, run, render, benchmarks).
RIG_HELP = f"Head rig: {RIG_CHOICES}."

#: Help of the --rig option of commands that read an avatar (drive, view).
RECORDED_RIG_HELP = (f"Head rig: {RIG_CHOICES}; default: the one the avatar was fitted with (recorded in "
                     "its dataset); must match the avatar.")

#: Help of the --rig option of commands that read a dataset (fit).
DATASET_RIG_HELP = f"Head rig: {RIG_CHOICES}; default: the one the dataset was prepared with."

#: Rig name (``RigAssets.name``, recorded in avatar and dataset headers) -> the spec that loads it, for
#: the rigs that need no user file.
BUILTIN_SPECS = {"open_head": "open"}

#: A --rig option that defaults to :data:`DEFAULT_RIG`: ``rig: RigSpec = DEFAULT_RIG``.
RigSpec = Annotated[str, tyro.conf.arg(help=RIG_HELP)]

#: A --rig option that defaults to the rig recorded with the avatar: ``rig: RecordedRigSpec = None``.
RecordedRigSpec = Annotated[Optional[str], tyro.conf.arg(help=RECORDED_RIG_HELP)]

#: A --rig option that defaults to the rig the dataset was prepared with: ``rig: DatasetRigSpec = None``.
DatasetRigSpec = Annotated[Optional[str], tyro.conf.arg(help=DATASET_RIG_HELP)]


def builtin_spec(rig_name: object) -> str | None:
    """The spec that loads the rig named ``rig_name`` (as recorded in a header) when it needs no user file
    (the open head: ``"open"``); None otherwise (FLAME: its file must be named)."""
    return BUILTIN_SPECS.get(str(rig_name)) if rig_name is not None else None
