"""Export an avatar as a standard 3DGS PLY (posed on the rig's neutral template or given vertices),
and a minimal reader for binary little-endian PLY files.

The layout is the original 3DGS one, so the file opens in 3DGS viewers and tools:
``x y z nx ny nz f_dc_0..2 f_rest_0..f_rest_{3(K-1)-1} opacity scale_0..2 rot_0..3`` as float32,
plus ``int binding`` (the parent rig face of each Gaussian).  ``f_rest`` is channel-major (all
red coefficients of bases 1..K-1, then green, then blue), ``opacity`` is the logit, ``scale_*``
the log of the world scales in metres, ``rot_*`` the unit quaternion wxyz, normals are zero.
Colour blendshapes (``sh_dc_blend``) are not exported: ``f_dc`` is ``sh_dc``, the colour at appearance
code 0 (the neutral face).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from talksplat.avatar.gaussians import GaussianAvatar
from talksplat.core.files import atomic_write
from talksplat.rigs.base import HeadRig

__all__ = ["export_ply", "read_ply", "ply_property_names"]

_PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "int": "<i4",
              "int32": "<i4", "uchar": "u1", "uint8": "u1"}


def ply_property_names(sh_degree: int) -> list[str]:
    """The float property names of a 3DGS PLY for ``sh_degree`` (``binding`` not included)."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@torch.no_grad()
def export_ply(avatar: GaussianAvatar, rig: HeadRig, path: str | os.PathLike,
               vertices: torch.Tensor | np.ndarray | None = None) -> Path:
    """Write ``avatar``'s Gaussians, posed on ``vertices``, as a 3DGS PLY (atomically).

    Args:
        avatar: the avatar (built on ``rig``).
        rig: its head rig (faces, neutral template, name and checksum for the header comment).
        path: output ``.ply`` path; written to a temporary file beside it, then renamed.
        vertices: [V, 3] metres, posed rig vertices; default the neutral ``rig.template``.
    Returns:
        the path written.
    Raises:
        ValueError: the avatar was built on another rig, or ``vertices`` has the wrong shape.
    """
    path = Path(path)
    if avatar.rig_checksum != rig.checksum:
        raise ValueError(f"{path}: avatar was built on rig '{avatar.rig_name}' ({avatar.rig_checksum[:12]}), "
                         f"not on '{rig.name}' ({rig.checksum[:12]})")
    device = avatar.local_means.device
    v = rig.template if vertices is None else torch.as_tensor(vertices)
    v = v.to(device=device, dtype=torch.float32)
    if tuple(v.shape) != (rig.num_vertices, 3):
        raise ValueError(f"{path}: vertices must be [{rig.num_vertices}, 3], got {tuple(v.shape)}")
    torso = None
    if avatar.has_torso:  # the bust under the unposed head
        from talksplat.avatar.torso import rest_torso_pose

        torso = rest_torso_pose(rig, v)
    means, quats, scales = avatar.posed_geometry(v[None], rig.faces.to(device), torso)
    n = avatar.num_gaussians
    sh_rest = avatar.sh_rest.transpose(1, 2).reshape(n, -1)  # [N, 3(K-1)] channel-major
    cols = [means[0], torch.zeros_like(means[0]), avatar.sh_dc[:, 0, :], sh_rest,
            avatar.opacity_logits[:, None], torch.log(scales[0]), quats[0]]
    floats = torch.cat(cols, dim=1).detach().cpu().numpy().astype("<f4")
    names = ply_property_names(avatar.sh_degree)
    assert floats.shape == (n, len(names))

    dtype = np.dtype([(k, "<f4") for k in names] + [("binding", "<i4")])
    data = np.empty(n, dtype=dtype)
    for i, k in enumerate(names):
        data[k] = floats[:, i]
    data["binding"] = avatar.binding.detach().cpu().numpy().astype("<i4")

    rig_name = re.sub(r"\s+", "_", rig.name) or "unnamed"
    header = ["ply", "format binary_little_endian 1.0", f"comment talksplat rig {rig_name} {rig.checksum}",
              f"element vertex {n}"]
    header += [f"property float {k}" for k in names] + ["property int binding", "end_header"]

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return path


def read_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a binary little-endian PLY with scalar properties (float, double, int, uchar).

    Args:
        path: the file.
    Returns:
        property name -> [N] array, in file order.  Properties of the ``vertex`` element keep their
        names; those of any other element are keyed ``"<element>/<property>"``.
    Raises:
        ValueError (naming the path): not a PLY, another format, list or unsupported property
        types, or a truncated file.
    """
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    nl = raw.find(b"\n", end)
    if nl < 0:
        raise ValueError(f"{path}: truncated PLY header")
    try:
        lines = raw[:end].decode("ascii").replace("\r", "").split("\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: PLY header is not ASCII") from None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    fmt = None
    for line in lines[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1:]
        elif tok[0] == "element" and len(tok) == 3:
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property" and elements:
            if len(tok) != 3 or tok[1] not in _PLY_TYPES:
                raise ValueError(f"{path}: unsupported PLY property '{line.strip()}'")
            elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]]))
        else:
            raise ValueError(f"{path}: unexpected PLY header line '{line.strip()}'")
    if fmt != ["binary_little_endian", "1.0"]:
        raise ValueError(f"{path}: unsupported PLY format {' '.join(fmt or ['(none)'])}; "
                         "only binary_little_endian 1.0 is read")
    out: dict[str, np.ndarray] = {}
    offset = nl + 1
    for name, count, props in elements:
        dt = np.dtype(props)
        size = dt.itemsize * count
        if offset + size > len(raw):
            raise ValueError(f"{path}: truncated PLY data (element '{name}')")
        arr = np.frombuffer(raw, dtype=dt, count=count, offset=offset)
        offset += size
        for k, _ in props:
            out[k if name == "vertex" else f"{name}/{k}"] = arr[k].copy()
    return out
