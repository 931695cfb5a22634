"""Avatar files: safetensors tensors plus a JSON header; written atomically, never unpickled.

Layout: one ``.safetensors`` file whose metadata holds ``{"talksplat": JSON}`` with
``format`` ("talksplat-avatar"), ``version``, ``rig_name``, ``rig_checksum``, ``sh_degree``,
``num_gaussians`` and ``binding`` (how the Gaussians are bound, for readers in other tools).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from talksplat.render.files import atomic_write

from .gaussians import GaussianAvatar

FORMAT = "talksplat-avatar"
VERSION = 1
_TENSORS = ("binding", "local_means", "local_quats", "log_scales", "sh_dc", "sh_rest", "opacity_logits")
BINDING_DOC = ("each Gaussian's mean/rotation/scale live in its parent face's frame: origin = face centroid, "
               "axes [unit(v1-v0), unit normal, their cross], scale = face scale; local_means in face units, "
               "log_scales = log(scale / face scale), local_quats wxyz")


class AvatarFileError(ValueError):
    """An avatar file that is missing, not a talksplat avatar, or made for another rig."""


def save_avatar(avatar: GaussianAvatar, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``avatar`` to ``path`` (temp file then rename: never half-written). Returns the path."""
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, "rig_name": avatar.rig_name,
              "rig_checksum": avatar.rig_checksum, "sh_degree": avatar.sh_degree,
              "num_gaussians": avatar.num_gaussians, "binding": BINDING_DOC, "extra": extra or {}}
    tensors = {k: getattr(avatar, k).detach().cpu().contiguous() for k in _TENSORS}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"talksplat": json.dumps(header, sort_keys=True)})
    return path


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of an avatar file (raises :class:`AvatarFileError` with the path on problems)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AvatarFileError(f"{path}: avatar file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise AvatarFileError(f"{path}: not a safetensors avatar file ({e})") from None
    try:
        header = json.loads(meta["talksplat"])
    except (KeyError, json.JSONDecodeError):
        raise AvatarFileError(f"{path}: safetensors file without a talksplat avatar header") from None
    if header.get("format") != FORMAT:
        raise AvatarFileError(f"{path}: not a talksplat avatar (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise AvatarFileError(f"{path}: avatar format version {header.get('version')} is not supported "
                              f"(this talksplat reads version {VERSION})")
    return header


def load_avatar(path: str | os.PathLike, rig_checksum: str | None = None) -> GaussianAvatar:
    """Read an avatar.  If ``rig_checksum`` is given it must match the avatar's rig."""
    header = read_header(path)
    if rig_checksum is not None and header["rig_checksum"] != rig_checksum:
        raise AvatarFileError(f"{path}: avatar was built on rig '{header['rig_name']}' with checksum "
                              f"{header['rig_checksum'][:12]}..., not the given rig ({rig_checksum[:12]}...)")
    t = load_file(str(path))
    missing = [k for k in _TENSORS if k not in t]
    if missing:
        raise AvatarFileError(f"{path}: avatar file lacks tensors {missing}")
    return GaussianAvatar(t["binding"], t["local_means"], t["local_quats"], t["log_scales"], t["sh_dc"],
                          t["sh_rest"], t["opacity_logits"], rig_name=header["rig_name"],
                          rig_checksum=header["rig_checksum"], sh_degree=int(header["sh_degree"]))
