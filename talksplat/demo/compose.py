"""The demo's side-by-side video: input | re-rendered avatar | avatar driven by new speech.

Panels are the driven video's size: the subject's whole frame (an avatar fitted over its plate) or a square head
crop.  The first two follow the training clip (looping when the driving speech is longer); the third is the driven
video; the audio is the driving speech.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

def rerender_training_clip(fit_dir: Path, dataset_dir: Path, size: int,
                           device: str = "auto") -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Per time step of the dataset (first camera): ``(input [H, W, 3] uint8, render [H, W, 3] uint8, held_out)``,
    the render with the fit-tuned parameters.  An avatar fitted over a plate: the source video's whole frames
    and the avatar over the plate, seen by the source camera, the longer side ``size`` px (as `talksplat drive
    --max-size`); otherwise each image's own crop camera, ``size`` x ``size``, on white."""
    import cv2

    from talksplat.avatar.render import render_avatar
    from talksplat.data_prep.dataset import load_dataset
    from talksplat.driving.fit_reader import open_fit
    from talksplat.fitting.trainer import load_dataset_rig
    from talksplat.render.device import pick_device
    from talksplat.render.video import to_uint8

    ds = load_dataset(dataset_dir)
    rig = load_dataset_rig(ds, None)
    fit = open_fit(fit_dir, rig=rig)
    dev = pick_device(device)
    rig, avatar = rig.to(dev), fit.avatar.to(dev)
    tuned = fit.tuned
    source = ds.meta.get("source", [None])[0]
    if fit.has_source_frame and source is not None and Path(source).is_file():
        yield from _rerender_source_frames(fit, ds, Path(source), rig, avatar, tuned, size, dev)
        return
    cam = ds.meta["cameras"][0]
    held = set(ds.split.get("test", []))
    for f in sorted((f for f in ds.frames if f.camera == cam), key=lambda f: f.timestep):
        K = torch.as_tensor(np.asarray(f.K, np.float32)).clone()
        K[:2] *= size / max(f.width, f.height)
        vm = torch.linalg.inv(torch.as_tensor(np.asarray(f.c2w, np.float32)))
        p = tuned[f.timestep].to_params(dev)
        with torch.no_grad():
            col, alpha, _ = render_avatar(avatar, rig, p, vm[None].to(dev), K[None].to(dev), size, size)
        render = to_uint8(col[0, 0] + (1 - alpha[0, 0]))  # white background
        inp = ds.load_image(f)
        if inp.shape[:2] != (size, size):
            inp = cv2.resize(inp, (size, size), interpolation=cv2.INTER_AREA)
        yield inp, render, f.timestep in held


def _rerender_source_frames(fit, ds, video: Path, rig, avatar, tuned, size: int, dev):
    """:func:`rerender_training_clip` in the source frame: the video decoded again, the avatar over the plate."""
    from talksplat.avatar.render import render_avatar
    from talksplat.data_prep.decode import iter_frames
    from talksplat.data_prep.plate import warp_view
    from talksplat.driving.drive import source_camera
    from talksplat.render.video import to_uint8

    sf, plate = fit.source_frame()
    vm, K, W, H = source_camera(sf, size)
    bg = torch.from_numpy(warp_view(plate, sf.K, K.double().numpy(), W, H)).float().to(dev) / 255
    kept = {f.timestep for f in ds.frames}
    held = set(ds.split.get("heldout", []))
    with iter_frames(video, ds.meta["fps"], max_frames=ds.num_timesteps, scale_to=(W, H)) as stream:
        for t, frame in enumerate(stream):
            if t not in kept:
                continue
            with torch.no_grad():
                col, alpha, _ = render_avatar(avatar, rig, tuned[t].to_params(dev), vm[None].to(dev), K[None].to(dev),
                                              W, H)
            yield frame, to_uint8(col[0, 0] + (1 - alpha[0, 0]) * bg), t in held


def label(img: np.ndarray, text: str, bottom: str | None = None) -> np.ndarray:
    """Draw a caption bar on a copy of ``img`` ([H, W, 3] uint8)."""
    import cv2

    out = img.copy()
    h, w = out.shape[:2]
    scale = max(0.35, w / 640)
    bar = int(22 * scale * 1.6)
    for y0, t in ((0, text), (h - bar, bottom)):
        if not t:
            continue
        out[y0:y0 + bar] = (0.45 * out[y0:y0 + bar]).astype(np.uint8)
        cv2.putText(out, t, (6, y0 + int(bar * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, int(round(scale * 1.5))), cv2.LINE_AA)
    return out


def write_side_by_side(out_mp4: str | os.PathLike, training: list[tuple[np.ndarray, np.ndarray, bool]],
                       driven: np.ndarray, audio: str | os.PathLike, fps: float, captions: tuple[str, str, str],
                       footer: str = "") -> int:
    """Write the three-panel MP4 (H.264 + AAC, temp file then rename); returns the frame count.

    ``training``: the first two panels per training time step (resized to the driven frames' size when they
    differ); ``driven``: [T, H, W, 3] uint8 frames of the driven video (its length sets the output's); ``audio``:
    the driving speech."""
    import cv2

    from talksplat.render.video import VideoWriter

    T, H, W = driven.shape[:3]
    n = len(training)
    writer = VideoWriter(out_mp4, 3 * W, H, fps=fps, audio_path=Path(audio), shortest=False)
    ok = False
    try:
        for t in range(T):
            inp, ren, held = training[t % n]
            inp, ren = (im if im.shape[:2] == (H, W) else cv2.resize(im, (W, H), interpolation=cv2.INTER_AREA)
                        for im in (inp, ren))
            tag = " (held out)" if held else ""
            panels = [label(inp, captions[0]), label(ren, captions[1] + tag), label(driven[t], captions[2], footer)]
            writer.write(np.concatenate(panels, axis=1))
        ok = True
    finally:
        writer.close(ok=ok)
    return T
