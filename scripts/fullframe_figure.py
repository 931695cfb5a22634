"""The README's full-frame figure: input | avatar re-render | driven, rows of whole source frames.

    python scripts/fullframe_figure.py FIT DRIVEN.mp4 --out docs/images/fullframe.jpg [--width 360]

FIT is a `talksplat fit` folder fitted over a plate (its held-out panels ``heldout/frame_<t>.png`` hold ground
truth | render | error at the source frame's size); DRIVEN a `talksplat drive` video of it in the source frame.
Each row: a held-out input frame, the avatar's re-render of it (tracked parameters, never trained on), and a
frame of the driven video (evenly spaced).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fit", type=Path)
    ap.add_argument("driven", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--width", type=int, default=360, help="width of each panel in pixels")
    args = ap.parse_args()

    from talksplat.render.video import read_video

    panels = sorted((args.fit / "heldout").glob("frame_*.png"))
    if not panels:
        raise SystemExit(f"{args.fit}/heldout: no frame_*.png (fit over a plate first)")
    driven, _ = read_video(args.driven)
    picks = np.linspace(0, len(panels) - 1, args.rows).round().astype(int)
    frames = np.linspace(len(driven) // 4, 3 * len(driven) // 4, args.rows).round().astype(int)
    rows = []
    for p, f in zip(picks, frames):
        panel = cv2.imread(str(panels[p]))  # BGR: ground truth | render | error
        w = panel.shape[1] // 3
        drv = cv2.cvtColor(driven[f], cv2.COLOR_RGB2BGR)
        drv = cv2.resize(drv, (w, panel.shape[0]), interpolation=cv2.INTER_AREA)
        row = np.concatenate([panel[:, :w], panel[:, w:2 * w], drv], axis=1)
        s = args.width / w
        rows.append(cv2.resize(row, (3 * args.width, round(row.shape[0] * s)), interpolation=cv2.INTER_AREA))
    # seam flicker: mean |frame-to-frame difference| (8-bit levels) of static patches of the driven video: a
    # background corner and the two shoulders (bottom corners), where nothing moves in the subject's frame
    H, W = driven.shape[1:3]
    patches = {"background (top-left 32x32)": (slice(0, 32), slice(0, 32)),
               "shoulders (bottom 40 rows, outer 60 px)": (slice(H - 40, H), np.r_[0:60, W - 60:W])}
    for name, (ys, xs) in patches.items():
        d = np.abs(np.diff(driven[:, ys][:, :, xs].astype(np.float32), axis=0)).mean()
        print(f"frame-to-frame difference, {name}: {d:.3f} levels")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(rows, axis=0), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
