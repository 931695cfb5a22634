"""Avatar files: safetensors tensors plus a JSON header; written atomically, never unpickled.

Layout: one ``.safetensors`` file whose metadata holds ``{"talksplat": JSON}`` with
``format`` ("talksplat-avatar"), ``version``, ``rig_name``, ``rig_checksum``, ``sh_degree``,
``num_gaussians``, ``binding`` (how the Gaussians are bound, for readers in other tools) and ``appearance``
(what the colour blendshapes ``sh_dc_blend`` [N, D, 3] take).  A file without ``sh_dc_blend`` (written
before it existed) loads with D = 0: a static colour.  ``torso_vertices`` [P, 3] / ``torso_faces`` [Fp, 3]: the
bust proxy the torso Gaussians bind to (``binding`` F + j: proxy face j); empty or absent: the head only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from talksplat.core.errors import InputError
from talksplat.core.files import atomic_write, json_text

from .appearance import JAW_UNIT_RAD
from .gaussians import OPTIONAL_TENSORS, PARAM_NAMES, TENSOR_NAMES, GaussianAvatar

FORMAT = "talksplat-avatar"
VERSION = 1
BINDING_DOC = ("each Gaussian's mean/rotation/scale live in its parent face's frame: origin = face centroid, "
               "axes [unit(v1-v0), unit normal, their cross], scale = face scale; local_means in face units, "
               "log_scales = log(scale / face scale), local_quats wxyz")
APPEARANCE_DOC = ("colour of a frame: sh_dc + sh_dc_blend @ code (position: local_means + means_blend @ code), "
                  "code = [expression coefficients (E), jaw axis-angle "
                  f"/ {JAW_UNIT_RAD:g} rad (3)] of the frame's rig parameters (D = E + 3; D = 0: static colour)")


class AvatarFileError(InputError):
    """An avatar file that is missing, not a talksplat avatar, or made for another rig."""


def save_avatar(avatar: GaussianAvatar, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``avatar`` to ``path`` (temp file then rename: never half-written). Returns the path."""
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, "rig_name": avatar.rig_name,
              "rig_checksum": avatar.rig_checksum, "sh_degree": avatar.sh_degree,
              "num_gaussians": avatar.num_gaussians, "binding": BINDING_DOC, "appearance": APPEARANCE_DOC,
              "extra": extra or {}}
    tensors = {k: getattr(avatar, k).detach().cpu().contiguous() for k in TENSOR_NAMES}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=_metadata(header))
    return path


def _header_text(header: dict) -> str:
    return json_text(header, indent=None, sort_keys=True)


def _metadata(header: dict) -> dict[str, str]:
    return {"talksplat": _header_text(header)}


def set_extra(path: str | os.PathLike, extra: dict) -> Path:
    """Give the avatar file ``path`` the header entry ``extra`` (e.g. the dataset of a copied fit): the file
    becomes what :func:`save_avatar` writes with that ``extra``.  Replaced atomically by a new file (a hard
    link's other names keep the old one); left alone when it already has that ``extra``."""
    from talksplat.core.files import set_safetensors_header

    return set_safetensors_header(path, {"extra": extra}, _header_text, header=read_header(path))


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
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise AvatarFileError(f"{path}: not a talksplat avatar (format "
                              f"{header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != VERSION:
        raise AvatarFileError(f"{path}: avatar format version {header.get('version')} is not supported "
                              f"(this talksplat reads version {VERSION})")
    for k, kind in (("rig_name", str), ("rig_checksum", str), ("sh_degree", int)):
        if not isinstance(header.get(k), kind) or isinstance(header.get(k), bool):
            raise AvatarFileError(f"{path}: damaged avatar header ('{k}' missing or not a {kind.__name__})")
    if not 0 <= header["sh_degree"] <= 3:
        raise AvatarFileError(f"{path}: damaged avatar header (sh_degree {header['sh_degree']} is not in 0..3)")
    return header


def check_rig(path: str | os.PathLike, header: dict, rig_checksum: str) -> None:
    """:class:`AvatarFileError` naming the avatar file when it was built on another rig."""
    if header["rig_checksum"] != rig_checksum:
        raise AvatarFileError(f"{path}: avatar was built on rig '{header['rig_name']}' with checksum "
                              f"{header['rig_checksum'][:12]}..., not the given rig ({rig_checksum[:12]}...)")


def load_avatar(path: str | os.PathLike, rig_checksum: str | None = None, rig=None) -> GaussianAvatar:
    """Read an avatar and check it: the tensors' shapes agree, every value is finite, and (with ``rig``, a
    :class:`~talksplat.rigs.HeadRig`, or ``rig_checksum``) it belongs to that rig and binds to its faces."""
    path = Path(path)
    header = read_header(path)
    if rig is not None:
        rig_checksum = rig.checksum
    if rig_checksum is not None:
        check_rig(path, header, rig_checksum)
    try:
        t = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AvatarFileError(f"{path}: damaged avatar file ({e})") from None
    missing = [k for k in TENSOR_NAMES if k not in t and k not in OPTIONAL_TENSORS]
    if missing:
        raise AvatarFileError(f"{path}: avatar file lacks tensors {missing}")
    binding = t["binding"]
    if binding.ndim != 1 or binding.dtype.is_floating_point or binding.dtype == torch.bool:
        raise AvatarFileError(f"{path}: 'binding' must be [N] integers, got {tuple(binding.shape)} {binding.dtype}")
    for k in PARAM_NAMES + ("torso_vertices",):
        if k not in t:
            continue
        if not t[k].dtype.is_floating_point or not bool(torch.isfinite(t[k]).all()):
            raise AvatarFileError(f"{path}: '{k}' holds non-finite values (NaN or Inf)" if t[k].dtype.is_floating_point
                                  else f"{path}: '{k}' must hold floating-point numbers")
    torso_faces = t.get("torso_faces")
    n_torso = 0 if torso_faces is None else int(torso_faces.shape[0])
    if rig is not None and len(binding) and (int(binding.min()) < 0
                                             or int(binding.max()) >= rig.faces.shape[0] + n_torso):
        raise AvatarFileError(f"{path}: 'binding' names faces {int(binding.min())}..{int(binding.max())}, but rig "
                              f"'{rig.name}' has {rig.faces.shape[0]} faces"
                              + (f" and the torso proxy {n_torso}" if n_torso else ""))
    try:
        return GaussianAvatar(t["binding"], t["local_means"], t["local_quats"], t["log_scales"], t["sh_dc"],
                              t["sh_rest"], t["opacity_logits"], rig_name=header["rig_name"],
                              rig_checksum=header["rig_checksum"], sh_degree=int(header["sh_degree"]),
                              sh_dc_blend=t.get("sh_dc_blend"), means_blend=t.get("means_blend"),
                              torso_vertices=t.get("torso_vertices"),
                              torso_faces=t.get("torso_faces"))
    except ValueError as e:  # shapes that do not agree
        raise AvatarFileError(f"{path}: {e}") from None
