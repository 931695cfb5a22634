"""Shared fixtures: a small synthetic rig (no assets needed), paths to ../shared/data, and one set of small
real inputs made once per session (a video, a dataset, a fitted avatar folder, a FLAME file, a NeRF export)."""

from __future__ import annotations

import os

# The test machine runs one test at a time: the talksplat commands the tests start get OpenMP's own
# default waiting (spin 300,000 iterations, then sleep), the fastest on an otherwise idle machine, instead
# of the CLI's PASSIVE (which keeps a job fast beside other work: `talksplat bench load`).  Tests of the
# CLI's default remove this.
os.environ.setdefault("GOMP_SPINCOUNT", "300000")

import json  # noqa: E402
import subprocess
from dataclasses import dataclass
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


@pytest.fixture(scope="session", autouse=True)
def stage_cache(tmp_path_factory) -> Path:
    """An empty stage cache for the session (talksplat.stage_cache; commands started by the tests inherit it):
    no `talksplat run` adopts a result that an earlier session, or the user's own commands, recorded."""
    index = tmp_path_factory.mktemp("stage-cache")
    os.environ["TALKSPLAT_STAGE_CACHE"] = str(index)
    return index


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of tiny renders (its ``pytestmark`` names this fixture): as fast,
    immune to OpenMP spinning when other processes load the machine, and CPU float sums the same run to run;
    the thread count is restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@dataclass
class Inputs:
    """What the cases read: built once per module, never modified by a case (the harness checks)."""

    root: Path
    clip: Path  # 2 s testsrc video with a sine tone, MP4 with its index first
    wav: Path  # 1 s of speech-like sound
    dataset: Path  # a small synthetic dataset on the open head, with audio
    fit: Path  # a fit folder of that dataset: avatar, predictor, tuned parameters
    flame: Path  # a FLAME-layout pickle (tests/test_flame.py)
    nerf: Path  # a VHAP-style NeRF export (tests/test_multiview_io.py)


def _ffmpeg() -> str:
    from talksplat.core.ffmpeg import ffmpeg_exe

    return ffmpeg_exe()


@pytest.fixture(scope="session")
def small_inputs(tmp_path_factory) -> Inputs:
    from test_flame import synthetic_flame, write_flame
    from test_multiview_io import make_nerf

    from talksplat.benchmarks.drive import speech_like
    from talksplat.benchmarks.synthetic_dataset import write_synthetic_dataset
    from talksplat.driving.audio import write_wav
    from talksplat.rigs import load_rig

    root = tmp_path_factory.mktemp("inputs")
    clip = root / "clip.mp4"
    subprocess.run([_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-f", "lavfi",
                    "-i", "sine=frequency=300", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-movflags", "+faststart", str(clip)], check=True)
    wav = write_wav(root / "speech.wav", speech_like(1.0))
    dataset = root / "dataset"
    write_synthetic_dataset(dataset, load_rig("open"), T=12, size=48, cameras=(0.0,))
    write_wav(dataset / "audio.wav", speech_like(12 / 25 + 0.2))
    meta = json.loads((dataset / "meta.json").read_text())
    (dataset / "meta.json").write_text(json.dumps({**meta, "audio": "audio.wav", "audio_sample_rate": 16000}))
    fit = root / "fit"
    from talksplat.cli import main

    assert main(["fit", str(dataset), "--out", str(fit), "--preset", "fast", "--steps", "3", "--quiet",
                 "--driver.steps", "3", "--eval-frames", "1", "--side-by-side", "0"]) == 0
    flame = write_flame(root / "generic_model.pkl", synthetic_flame())
    nerf = root / "nerf"
    make_nerf(nerf)
    return Inputs(root, clip, wav, dataset, fit, flame, nerf)
