"""Shared fixtures: a small synthetic rig (no assets needed) and paths to ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talksplat.rigs.base import HeadRig, RigAssets

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def icosphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: vertices [V, 3], CCW-outward faces [F, 3]."""
    t = (1.0 + 5 ** 0.5) / 2.0
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
         (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
         (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    faces = list(f)
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return np.array(verts, np.float32), np.array(faces, np.int64)


def make_sphere_rig(radius: float = 0.1, n_expr: int = 3, n_shape: int = 2, seed: int = 0) -> RigAssets:
    """A head-sized sphere rig with FLAME's 5-joint layout: the lower half is skinned to the jaw."""
    rng = np.random.default_rng(seed)
    v, f = icosphere(2)
    v = v * radius
    V = v.shape[0]
    joints = np.array([[0, -radius, 0], [0, -0.5 * radius, 0], [0, -0.2 * radius, 0.3 * radius],
                       [0.35 * radius, 0.3 * radius, 0.8 * radius], [-0.35 * radius, 0.3 * radius, 0.8 * radius]])
    # Regress joints from the nearest vertices so shape changes move them.
    reg = np.zeros((5, V), np.float32)
    for j, p in enumerate(joints):
        near = np.argsort(((v - p) ** 2).sum(1))[:4]
        reg[j, near] = 0.25
    w = np.zeros((V, 5), np.float32)
    jaw = (v[:, 1] < -0.3 * radius) & (v[:, 2] > 0)
    w[:, 1] = 1.0
    w[jaw, 1] = 0.0
    w[jaw, 2] = 1.0
    idx = np.arange(V)
    return RigAssets(
        name="test_sphere", template=v, faces=f,
        shapedirs=(rng.normal(size=(V, 3, n_shape)) * 0.002).astype(np.float32),
        exprdirs=(rng.normal(size=(V, 3, n_expr)) * 0.002).astype(np.float32),
        expression_names=[f"e{i}" for i in range(n_expr)], shape_names=[f"s{i}" for i in range(n_shape)],
        joint_regressor=reg, parents=np.array([-1, 0, 1, 1, 1]), weights=w,
        joint_names=["global", "neck", "jaw", "eye_left", "eye_right"],
        semantic_joints={"global": 0, "neck": 1, "jaw": 2, "eye_left": 3, "eye_right": 4},
        regions={"face": idx[v[:, 2] > 0], "lips": idx[(np.abs(v[:, 1] + 0.3 * radius) < 0.1 * radius) & (v[:, 2] > 0)],
                 "eyes": idx[:0], "teeth": idx[:0], "neck": idx[v[:, 1] < -0.8 * radius]},
    )


@pytest.fixture(scope="session")
def sphere_rig() -> HeadRig:
    return HeadRig(make_sphere_rig())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test recordings not found at {SHARED_DATA} (see shared/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def open_rig() -> HeadRig:
    """The built-in open head (built once into $TALKSPLAT_CACHE)."""
    from talksplat.rigs import load_rig

    return load_rig("open")
