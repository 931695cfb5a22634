"""Landmark embedding: where each of FaceMesh's 478 landmarks lies on a rig's surface.

Computed automatically for any rig (FLAME included) without licensed embedding files: the rig's
neutral head is rendered as an untrained Gaussian avatar (shaded, darker lips, brows and eyes) from a
few views with our rasterizer, FaceMesh runs on each render, every detected landmark is cast back as a
ray onto the mesh (first hit: face index + barycentrics), and per landmark the hit closest to the
median of its hits over the views is kept.  The result is cached per rig checksum.  A user file
(``.npz`` with ``face_idx [478]`` int and ``bary [478, 3]``) overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talksplat.core.cache import cache_root
from talksplat.core.errors import InputError
from talksplat.core.files import atomic_write
from talksplat.rigs.base import HeadRig

from .landmarks import NUM_LANDMARKS, FaceMeshDetector

#: Bump when the procedure changes (it keys the cache).
EMBEDDING_VERSION = 1
#: Views rendered: (yaw, pitch) degrees; yaw 0 faces the head.
VIEWS = [(y, p) for p in (-8.0, 0.0, 8.0) for y in (-24.0, -12.0, 0.0, 12.0, 24.0)]
#: Faces of these regions are not ray targets (inside the mouth).
HIDDEN_REGIONS = ("teeth", "tongue")


class EmbeddingError(InputError):
    """The landmark embedding could not be computed or read (message names the rig or file)."""


@dataclass
class LandmarkEmbedding:
    """face_idx [L] int64 rig face indices, bary [L, 3] float32 barycentric weights (rows sum to 1),
    views [L] int: in how many renders the landmark was found (0 for a user file)."""

    face_idx: np.ndarray
    bary: np.ndarray
    views: np.ndarray

    def points(self, rig: HeadRig, vertices: torch.Tensor) -> torch.Tensor:
        """[B, V, 3] posed vertices -> [B, L, 3] landmark positions, metres."""
        return rig.surface_points(vertices, torch.as_tensor(self.face_idx, device=vertices.device),
                                  torch.as_tensor(self.bary, device=vertices.device))

    def vertex_ids(self, rig: HeadRig) -> np.ndarray:
        """[K] the distinct rig vertices the landmarks are attached to."""
        return np.unique(rig.faces.cpu().numpy()[self.face_idx].reshape(-1))


def _cache_file(rig: HeadRig) -> Path:
    return cache_root() / f"landmark_embedding_v{EMBEDDING_VERSION}_{rig.checksum[:16]}.npz"


def load_embedding_file(path: str | os.PathLike, rig: HeadRig) -> LandmarkEmbedding:
    """Read a user embedding (``face_idx [478]``, ``bary [478, 3]``) and check it against the rig."""
    path = Path(path)
    try:
        with np.load(path) as z:
            face_idx = np.asarray(z["face_idx"], np.int64)
            bary = np.asarray(z["bary"], np.float32)
            views = np.asarray(z["views"]) if "views" in z.files else np.zeros(len(face_idx), np.int64)
    except FileNotFoundError:
        raise EmbeddingError(f"{path}: no such landmark embedding file") from None
    except (OSError, ValueError, KeyError) as e:
        raise EmbeddingError(f"{path}: not a landmark embedding (.npz with face_idx [478], bary [478, 3]): {e}") \
            from None
    if face_idx.shape != (NUM_LANDMARKS,) or bary.shape != (NUM_LANDMARKS, 3):
        raise EmbeddingError(f"{path}: expected face_idx [{NUM_LANDMARKS}] and bary [{NUM_LANDMARKS}, 3], got "
                             f"{list(face_idx.shape)} and {list(bary.shape)}")
    if face_idx.min() < 0 or face_idx.max() >= rig.num_faces:
        raise EmbeddingError(f"{path}: face indices outside the rig's {rig.num_faces} faces")
    if np.abs(bary.sum(1) - 1).max() > 1e-3:
        raise EmbeddingError(f"{path}: barycentric rows must sum to 1")
    return LandmarkEmbedding(face_idx=face_idx, bary=bary, views=views)


def landmark_embedding(rig: HeadRig, override: str | os.PathLike | None = None,
                       use_cache: bool = True) -> LandmarkEmbedding:
    """The rig's landmark embedding: the user's file, else the cache, else computed (and cached)."""
    if override is not None:
        return load_embedding_file(override, rig)
    cache = _cache_file(rig)
    if use_cache and cache.is_file():
        try:
            return load_embedding_file(cache, rig)
        except EmbeddingError:
            pass  # a stale or damaged cache entry is recomputed
    emb = compute_embedding(rig)
    if use_cache:
        with atomic_write(cache) as tmp:
            np.savez(tmp, face_idx=emb.face_idx, bary=emb.bary, views=emb.views)
    return emb


def view_cameras(vertices: np.ndarray, views=VIEWS, size: int = 512, fov_deg: float = 18.0):
    """Cameras around a neutral head.  vertices [V, 3] metres (y up, face towards +z).

    Returns viewmats [N, 4, 4] world-to-camera (OpenCV) and K [3, 3] pixels.
    """
    from talksplat.render.camera import framing_camera

    points = torch.as_tensor(np.asarray(vertices), dtype=torch.float32)
    cams = [framing_camera(points, size, size, fov_deg, yaw_deg=yaw, pitch_deg=pitch, margin=1.05)
            for yaw, pitch in views]
    return torch.stack([viewmat for viewmat, _ in cams]), cams[0][1]


def ray_mesh_hits(origin: np.ndarray, dirs: np.ndarray, tris: np.ndarray):
    """First intersection of rays with triangles (Möller–Trumbore, vectorised).

    Args:
        origin: [3] ray origin.  dirs: [R, 3] directions.  tris: [F, 3, 3] triangle corners.
    Returns:
        face [R] int (-1 for a miss), bary [R, 3] (weights of corners 0, 1, 2), t [R] distance.
    """
    e1 = tris[:, 1] - tris[:, 0]
    e2 = tris[:, 2] - tris[:, 0]
    s = origin[None] - tris[:, 0]  # [F, 3]
    R = len(dirs)
    face = np.full(R, -1, np.int64)
    bary = np.zeros((R, 3))
    best = np.full(R, np.inf)
    for start in range(0, R, 64):
        d = dirs[start:start + 64]  # [r, 3]
        p = np.cross(d[:, None], e2[None])  # [r, F, 3]
        det = (p * e1[None]).sum(-1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        u = (p * s[None]).sum(-1) * inv
        q = np.cross(s, e1)  # [F, 3]
        v = (d[:, None] * q[None]).sum(-1) * inv
        t = (q[None] * e2[None]).sum(-1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6)
        t = np.where(hit, t, np.inf)
        j = t.argmin(1)
        rows = np.arange(len(d))
        tj = t[rows, j]
        sel = np.isfinite(tj)
        idx = start + rows[sel]
        face[idx] = j[sel]
        uu, vv = u[rows, j][sel], v[rows, j][sel]
        bary[idx] = np.stack([1 - uu - vv, uu, vv], -1)
        best[idx] = tj[sel]
    return face, bary, best


def compute_embedding(rig: HeadRig, size: int = 512, min_views: int = 3) -> LandmarkEmbedding:
    """Render the neutral rig, detect FaceMesh landmarks, lift them onto the mesh (see module doc)."""
    from talksplat.avatar import init_avatar
    from talksplat.avatar.render import render_avatar
    from talksplat.render.video import to_uint8

    rig = rig.cpu()
    verts = rig.template.numpy().astype(np.float64)
    faces = rig.faces.numpy()
    viewmats, K = view_cameras(verts, size=size)
    avatar = init_avatar(rig, per_face=2, sh_degree=0)
    params = rig.zero_params(1)
    bg = torch.ones(1, 3)
    hidden = np.zeros(len(faces), bool)
    for name in HIDDEN_REGIONS:
        if name in rig.face_region_names:
            hidden[rig.face_region(name).numpy()] = True
    targets = np.flatnonzero(~hidden)
    tris = verts[faces[targets]]  # [F', 3, 3]

    hits_face = np.full((len(viewmats), NUM_LANDMARKS), -1, np.int64)
    hits_bary = np.zeros((len(viewmats), NUM_LANDMARKS, 3))
    hits_xyz = np.full((len(viewmats), NUM_LANDMARKS, 3), np.nan)
    Kinv = np.linalg.inv(K.numpy().astype(np.float64))
    with FaceMeshDetector(static=True, max_faces=1, min_confidence=0.3) as det, torch.no_grad():
        for i, vm in enumerate(viewmats):
            colors, _, _ = render_avatar(avatar, rig, params, vm[None], K[None], size, size, backgrounds=bg,
                                         backend="cpu")
            found = det.detect(to_uint8(colors[0, 0]))
            if not found:
                continue
            uv = found[0][:, :2].astype(np.float64)
            c2w = np.linalg.inv(vm.numpy().astype(np.float64))
            dirs = (np.concatenate([uv, np.ones((len(uv), 1))], 1) @ Kinv.T) @ c2w[:3, :3].T
            f, b, t = ray_mesh_hits(c2w[:3, 3], dirs, tris)
            ok = f >= 0
            hits_face[i, ok] = targets[f[ok]]
            hits_bary[i, ok] = b[ok]
            hits_xyz[i, ok] = c2w[:3, 3] + t[ok, None] * dirs[ok]
    views = (hits_face >= 0).sum(0)
    n_rendered = int((hits_face >= 0).any(1).sum())
    if n_rendered < min_views or (views < min_views).mean() > 0.05:
        raise EmbeddingError(
            f"rig '{rig.name}': FaceMesh found the rendered neutral head in {n_rendered} of {len(viewmats)} views "
            f"({int((views < min_views).sum())} landmarks seen in fewer than {min_views}); "
            "supply a landmark embedding file (--landmark-embedding)")
    median = np.nanmedian(hits_xyz, axis=0)  # [L, 3]
    dist = np.linalg.norm(hits_xyz - median[None], axis=-1)
    dist = np.where(hits_face >= 0, dist, np.inf)
    best = dist.argmin(0)
    L = np.arange(NUM_LANDMARKS)
    face_idx = hits_face[best, L]
    bary = hits_bary[best, L].astype(np.float32)
    # A landmark never hit (should not happen past the check above) falls back to a neighbour's point.
    missing = face_idx < 0
    if missing.any():
        face_idx[missing] = face_idx[~missing][0]
        bary[missing] = bary[~missing][0]
    return LandmarkEmbedding(face_idx=face_idx, bary=bary / bary.sum(1, keepdims=True), views=views)
