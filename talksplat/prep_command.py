"""`talksplat prep`: the tracked dataset (talksplat.data_prep), recorded in the stage cache
(talksplat.stage_cache) so that `talksplat run` with the same video and options reuses it."""

from __future__ import annotations

import time

from talksplat.data_prep.config import PrepConfig


def run_prep_command(cfg: PrepConfig):
    """Do the work of `talksplat prep` (:func:`talksplat.data_prep.prep.run_prep`), then record the dataset in
    the stage cache.  Returns the prep's :class:`~talksplat.data_prep.prep.PrepReport`."""
    from talksplat.data_prep.prep import run_prep
    from talksplat.stage_specs import prep_stage, prep_summary, record

    t0 = time.perf_counter()
    report = run_prep(cfg)
    record(prep_stage(cfg), lambda: {}, prep_summary(report), time.perf_counter() - t0)  # no upstream stage
    return report
