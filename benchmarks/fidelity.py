"""`talksplat bench fidelity`: held-out fidelity of fitted avatars on real video, per clip and per training background.

For each clip: `talksplat prep` once, then `talksplat fit` (the avatar alone) once per ``--backgrounds`` entry with
the same settings; each fit's held-out figures (``metrics.json``: the clip's last frames, never trained on) become
one row.  ``fg_psnr`` is the comparable crop figure across backgrounds (render and image masked alike);
``frame_psnr`` the whole source frame with the avatar over the clip's plate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from talksplat.core.errors import InputError

from .config import BenchFidelityConfig

#: The figures of a row, from the fit's ``metrics.json`` ``heldout`` entry.
FIGURES = ("psnr", "fg_psnr", "mouth_psnr", "frame_psnr", "psnr_min", "frame_psnr_min", "ssim", "frame_ssim",
           "mouth_open_psnr", "outside", "frame_body_psnr")


def default_clips() -> list[Path]:
    """Every GRID clip of ../shared/data beside the repository."""
    return sorted((Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grid").glob("*.mpg"))


def bench_fidelity(cfg: BenchFidelityConfig) -> list[dict]:
    """Prepare and fit each clip (reusing what DIR already holds); returns one row per clip and background, also
    written to DIR/fidelity.json."""
    from talksplat.data_prep.config import PrepConfig
    from talksplat.data_prep.dataset import is_dataset
    from talksplat.data_prep.prep import run_prep
    from talksplat.fitting.config import FitConfig
    from talksplat.fitting.trainer import run_fit

    clips = [Path(c) for c in cfg.clips] or default_clips()
    if not clips:
        raise InputError("no clips given and none in ../shared/data/grid")
    for c in clips:
        if not c.is_file():
            raise InputError(f"{c}: no such video")
    rows = []
    for clip in clips:
        work = Path(cfg.out) / clip.stem
        ds = work / "dataset"
        if not is_dataset(ds):
            run_prep(PrepConfig(videos=(clip,), out=ds, resolution=cfg.resolution, rig=cfg.rig, device=cfg.device,
                                quiet=True, overwrite=True))
        for bg in cfg.backgrounds:
            fit = work / bg
            metrics = fit / "metrics.json"
            if not metrics.is_file():
                run_fit(FitConfig(dataset=ds, out=fit, preset=cfg.preset, steps=cfg.steps,
                                  background="plate" if bg == "torso" else bg, torso=bg == "torso",
                                  device=cfg.device, quiet=True, overwrite=True))
            m = json.loads(metrics.read_text())
            held = m.get("heldout", {})
            print(f"{clip.stem} {bg}: crop {_f(held.get('psnr'))} dB, frame {_f(held.get('frame_psnr'))} dB "
                  f"({m.get('seconds', 0):.0f} s)", file=sys.stderr, flush=True)  # a long run can be followed
            rows.append({"clip": clip.stem, "background": bg, "steps": m.get("step"), "gaussians": m.get("num_gaussians"),
                         "seconds": m.get("seconds"), **{k: held.get(k) for k in FIGURES}})
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "fidelity.json").write_text(json.dumps(rows, indent=1))
    return rows


def _f(v) -> str:
    return "   -  " if v is None else f"{v:6.2f}"


def rows_text(rows: list[dict]) -> str:
    """One line per clip and background, then the mean per background."""
    head = ("clip            background  crop  crop-fg  mouth  frame  crop-min  frame-min    body  (held-out PSNR, dB)"
            "  outside %")
    lines = [head]
    for r in rows:
        out = r.get("outside")
        lines.append(f"{r['clip']:<15} {r['background']:<10} {_f(r['psnr'])} {_f(r['fg_psnr'])} {_f(r['mouth_psnr'])} "
                     f"{_f(r['frame_psnr'])} {_f(r['psnr_min'])}    {_f(r['frame_psnr_min'])}  "
                     f"{_f(r.get('frame_body_psnr'))}  {_f(None if out is None else 100 * out)}")
    for bg in dict.fromkeys(r["background"] for r in rows):
        sel = [r for r in rows if r["background"] == bg]

        def mean(k):
            v = [r.get(k) for r in sel if r.get(k) is not None]
            return float(np.mean(v)) if v else None

        lines.append(f"{'mean of ' + str(len(sel)):<15} {bg:<10} {_f(mean('psnr'))} {_f(mean('fg_psnr'))} "
                     f"{_f(mean('mouth_psnr'))} {_f(mean('frame_psnr'))} {_f(mean('psnr_min'))}    "
                     f"{_f(mean('frame_psnr_min'))}  {_f(mean('frame_body_psnr'))}  "
                     f"{_f(None if mean('outside') is None else 100 * mean('outside'))}")
    return "\n".join(lines)
