"""The README's head-frame figure: fits of one dataset side by side, each avatar on white as `talksplat drive
--frame head` shows it (a training time step, its tuned parameters, the training camera).

    python scripts/head_frame_figure.py DATASET FIT [FIT ...] --out docs/images/outside.jpg [--timestep 30]

Gaussians that learned to paint the background (beside the jaw, around the ears) show on white as patches of the
background's colour: over a plate they are invisible in the training images, but they move with the head.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("fits", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timestep", type=int, default=30, help="training time step shown")
    args = ap.parse_args()

    import torch

    from talksplat.avatar.render import render_avatar
    from talksplat.data_prep.dataset import load_dataset
    from talksplat.driving.fit_reader import avatar_rig, fit_paths, open_fit

    ds = load_dataset(args.dataset)
    frame = next((f for f in ds.frames if f.timestep == args.timestep), None)
    if frame is None:
        raise SystemExit(f"{args.dataset}: no image at time step {args.timestep}")
    viewmat = torch.from_numpy(np.linalg.inv(frame.c2w)).float()
    K = torch.from_numpy(frame.K).float()
    panels = []
    for path in args.fits:
        rig = avatar_rig(fit_paths(path)[1])
        fit = open_fit(path, rig=rig)
        params = fit.tuned[args.timestep].to_params("cpu")
        with torch.no_grad():
            colors, alphas, _ = render_avatar(fit.avatar, rig, params, viewmat[None], K[None], frame.width,
                                              frame.height, backend="cpu")
        image = (colors[0, 0] + (1 - alphas[0, 0])).clamp(0, 1).numpy()
        panels.append((image * 255 + 0.5).astype(np.uint8))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(panels, axis=1)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
