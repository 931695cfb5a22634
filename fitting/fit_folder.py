"""The fit folder (`talksplat fit --out DIR`): the one place that names its files and writes them.

    DIR/avatar.safetensors      the avatar (safetensors, JSON header: rig, dataset, steps)
    DIR/avatar.ply              the same Gaussians as a 3DGS PLY (on the subject's neutral head)
    DIR/tuned_params.npz        the fit-tuned per-frame parameters (RigSequence, tracked ones as original_*)
    DIR/driver.safetensors      the audio predictor (`talksplat fit`'s driver stage)
    DIR/metrics.json            every stage's figures (merged: avatar, then ``driver``)
    DIR/checkpoint.safetensors  the resumable training state
    DIR/heldout/*.png           held-out comparisons (crops, and frame_*.png: whole source frames)
    DIR/plate.png               fitted over a plate: the plate (the subject's background and torso), RGB
    DIR/source_frame.json       with it: the source frame's size and camera (width, height, K [3, 3] px,
                                c2w [4, 4] OpenCV metres), where `talksplat drive --frame source` renders

Every writer of a fit folder goes through this module (the trainer, the predictor's training, the drive
benchmark); every reader through :func:`talksplat.driving.fit_reader.open_fit`, which takes the names from
here.  The layout is the same as before this module existed: old folders keep opening.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from talksplat.core.files import write_json

AVATAR = "avatar.safetensors"
PLY = "avatar.ply"
TUNED = "tuned_params.npz"
DRIVER = "driver.safetensors"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.safetensors"
HELDOUT = "heldout"
PLATE = "plate.png"
SOURCE_FRAME = "source_frame.json"


def path(out: str | os.PathLike, name: str) -> Path:
    """``out``/``name``: one of the names above, in the fit folder ``out``."""
    return Path(out) / name


def write_avatar(out: str | os.PathLike, avatar, extra: dict | None = None) -> Path:
    """Save ``avatar`` (a :class:`~talksplat.avatar.GaussianAvatar`, on any device) as OUT/avatar.safetensors."""
    from talksplat.avatar.io import save_avatar

    Path(out).mkdir(parents=True, exist_ok=True)
    return save_avatar(avatar, path(out, AVATAR), extra=extra)


def write_ply(out: str | os.PathLike, avatar, rig, vertices=None) -> Path:
    """Export ``avatar`` as OUT/avatar.ply (posed on ``vertices`` [V, 3], default the rig's template)."""
    from .ply import export_ply

    export_ply(avatar, rig, path(out, PLY), vertices=vertices)
    return path(out, PLY)


def write_tuned(out: str | os.PathLike, seq) -> Path:
    """Save the tuned parameters (a :class:`~talksplat.rigs.RigSequence`) as OUT/tuned_params.npz."""
    return seq.save(path(out, TUNED))


def write_driver(out: str | os.PathLike, driver) -> Path:
    """Save the audio predictor (anything with ``save(path)``) as OUT/driver.safetensors."""
    Path(out).mkdir(parents=True, exist_ok=True)
    driver.save(path(out, DRIVER))
    return path(out, DRIVER)


def write_source_frame(out: str | os.PathLike, plate, source_frame) -> tuple[Path, Path]:
    """OUT/plate.png (``plate`` [H, W, 3] uint8 RGB) and OUT/source_frame.json (``source_frame``: a
    :class:`~talksplat.data_prep.dataset.SourceFrame`'s size and camera), each written atomically."""
    import cv2

    from talksplat.core.files import atomic_write

    with atomic_write(path(out, PLATE)) as tmp:
        if not cv2.imwrite(str(tmp), plate[..., ::-1]):
            raise OSError(f"{path(out, PLATE)}: could not write the plate")
    write_json(path(out, SOURCE_FRAME), {"width": source_frame.width, "height": source_frame.height,
                                        "K": source_frame.K.tolist(), "c2w": source_frame.c2w.tolist()})
    return path(out, PLATE), path(out, SOURCE_FRAME)


def write_metrics(out: str | os.PathLike, metrics: dict) -> Path:
    """Replace OUT/metrics.json with ``metrics`` (atomically)."""
    write_json(path(out, METRICS), metrics)
    return path(out, METRICS)


def read_metrics(out: str | os.PathLike) -> dict:
    """OUT/metrics.json ({} when missing or damaged)."""
    p = path(out, METRICS)
    try:
        current = json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:  # damaged: start again
        current = {}
    return current if isinstance(current, dict) else {}


def record_metrics(out: str | os.PathLike, update: dict) -> Path:
    """Merge ``update`` into OUT/metrics.json (atomically; a damaged file starts again)."""
    current = read_metrics(out)
    current.update(update)
    write_json(path(out, METRICS), current)
    return path(out, METRICS)


# ------------------------------------------------------------------ each stage's share (the stage cache)
#: The files the avatar stage writes (``*``: within one path segment); the predictor stage writes DRIVER.  Of
#: METRICS, the predictor's share is the entry DRIVER_METRICS, the avatar's the rest.
AVATAR_FILES = (AVATAR, PLY, TUNED, CHECKPOINT, PLATE, SOURCE_FRAME, f"{HELDOUT}/*.png")
DRIVER_METRICS = "driver"

#: Header entries that say where a file was made (its dataset, its options, the avatar beside it): left out
#: of :func:`portable_digest`, rewritten by :func:`place_avatar_files` (the driver's: by the driving package).
PLACE_FIELDS = {AVATAR: ("extra.dataset",), CHECKPOINT: ("dataset", "config"), DRIVER: ("avatar_sha256",)}


def portable_digest(file: str | os.PathLike) -> str:
    """sha256 of a fit-folder file apart from where it was made (:data:`PLACE_FIELDS`): a fit copied elsewhere
    and pointed at its new dataset digests as the original.  ValueError for a damaged safetensors file."""
    from talksplat.core.files import file_digest, safetensors_digest

    fields = PLACE_FIELDS.get(Path(file).name)
    return safetensors_digest(file, fields) if fields else file_digest(file)


def place_avatar_files(out: str | os.PathLike, cfg) -> None:
    """After the avatar stage's files were copied into ``out`` from a fit with the same effective options:
    point the avatar and the checkpoint at ``cfg``'s dataset and options (a FitConfig), as fitting with
    ``cfg`` writes them.  Files that already say so are left as they are (hard links stay links)."""
    from talksplat.avatar.io import read_header, set_extra

    from .trainer import checkpoint_origin, set_checkpoint_origin  # the trainer imports this module

    dataset = checkpoint_origin(cfg)["dataset"]
    extra = read_header(path(out, AVATAR)).get("extra")
    set_extra(path(out, AVATAR), {**(extra if isinstance(extra, dict) else {}), "dataset": dataset})
    if path(out, CHECKPOINT).is_file():
        set_checkpoint_origin(path(out, CHECKPOINT), cfg)
