"""The `talksplat` CLI end to end: real rig, real rasterization, real ffmpeg; bad input fails cleanly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from talksplat.avatar import init_avatar, save_avatar
from talksplat.render.video import read_video


def talksplat(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talksplat.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import os

    e = dict(os.environ)
    e["TALKSPLAT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return e


def _load_png(path):
    import imageio.v3 as iio

    return iio.imread(path).astype(np.float32) / 255.0


def test_help_lists_subcommands():
    r = talksplat("--help")
    assert r.returncode == 0
    assert "render" in r.stdout and "bench" in r.stdout


def test_render_png_shows_a_head_and_expressions_change_it(tmp_path, env):
    r = talksplat("render", "--out", str(tmp_path / "neutral.png"), "--resolution", "96", env=env)
    assert r.returncode == 0, r.stderr
    r = talksplat("render", "--out", str(tmp_path / "open.png"), "--resolution", "96",
                  "--expr", "jawOpen=1.0", env=env)
    assert r.returncode == 0, r.stderr
    neutral, opened = _load_png(tmp_path / "neutral.png"), _load_png(tmp_path / "open.png")
    assert neutral.shape == (96, 96, 3)
    # White background at the corners, a (non-white) head in the centre.
    assert neutral[:4, :4].min() > 0.98
    centre = neutral[32:64, 36:60]
    assert (centre.sum(-1) < 2.7).mean() > 0.9
    # Opening the jaw changes the lower face and not the top of the head.
    diff = np.abs(opened - neutral).sum(-1)
    assert diff[55:80].mean() > 5 * diff[:30].mean() + 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neutral.png", "open.png"]


def test_render_turntable_mp4(tmp_path, env):
    out = tmp_path / "turn.mp4"
    r = talksplat("render", "--out", str(out), "--resolution", "64", "--frames", "8", "--fps", "8", env=env)
    assert r.returncode == 0, r.stderr
    frames, fps = read_video(out)
    assert frames.shape == (8, 64, 64, 3) and fps == pytest.approx(8)
    # The head turns: the front view (frame 0) and back view (frame 4) differ; the head stays centred.
    f = frames.astype(np.float32) / 255
    assert np.abs(f[0] - f[4]).mean() > 0.02
    for t in range(8):
        assert f[t, 28:36, 28:36].mean() < 0.95


def test_render_saved_avatar_and_rig_mismatch(tmp_path, env, sphere_rig):
    path = save_avatar(init_avatar(sphere_rig, per_face=1), tmp_path / "sphere.safetensors")
    r = talksplat("render", "--avatar", str(path), "--out", str(tmp_path / "x.png"), "--resolution", "32", env=env)
    assert r.returncode != 0
    assert "sphere.safetensors" in r.stderr and "rig" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--avatar", "/nonexistent/avatar.safetensors"], "not found"),
    (["--expr", "notAnExpression=1"], "unknown expression"),
    (["--expr", "jawOpen"], "NAME=VALUE"),
    (["--rig", "flame:/nonexistent/flame2023.pkl"], "flame.is.tue.mpg.de"),
    (["--out", "x.gif"], ".mp4"),
])
def test_bad_input_is_one_clear_line(tmp_path, env, args, message):
    argv = ["render", "--out", str(tmp_path / "x.png"), "--resolution", "32"]
    if args[0] == "--out":
        argv = ["render", "--out", str(tmp_path / args[1]), "--resolution", "32"]
        args = []
    r = talksplat(*argv, *args, env=env)
    assert r.returncode != 0
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_render_prints_fps(env):
    r = talksplat("bench", "render", "--gaussians", "2000", "--resolution", "64", "--backend", "cpu", "cuda",
                  "--iters", "2", "--warmup", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert "cpu" in r.stdout and "2,000" in r.stdout


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_refused_flame_pickle_is_one_line(tmp_path, env):
    import pickle

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"v_template": _RunsCode()}))
    r = talksplat("render", "--rig", f"flame:{evil}", "--out", str(tmp_path / "x.png"), env=env)
    assert r.returncode == 1 and "pwned" not in r.stdout
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "evil.pkl: refusing to load" in r.stderr
    assert not (tmp_path / "x.png").exists()


def _config_types():
    """Every config dataclass of the CLI: the subcommands' and those nested in them."""
    import dataclasses
    import typing

    from talksplat.cli import Command
    from talksplat.cli_docs import _is_dataclass_type, _is_union, _split_annotated

    def members(union):
        for m in typing.get_args(union):
            tp, _ = _split_annotated(m)
            yield from (members(tp) if _is_union(tp) else [tp])

    seen, stack = [], list(members(Command))
    while stack:
        tp = stack.pop()
        if tp in seen:
            continue
        seen.append(tp)
        hints = typing.get_type_hints(tp, include_extras=True)
        stack += [inner for f in dataclasses.fields(tp)
                  if _is_dataclass_type(inner := _split_annotated(hints[f.name])[0])]
    return seen


def _is_numeric(tp) -> bool:
    import typing

    from talksplat.cli_docs import _is_union, _split_annotated

    tp, _ = _split_annotated(tp)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return all(_is_numeric(a) for a in args if a is not Ellipsis)
    if args and _is_union(tp):
        return all(_is_numeric(a) for a in args if a is not type(None))
    return tp in (int, float)


def test_every_numeric_option_has_a_range_stated_in_its_help():
    """Each int/float option carries a Range (checked before any work) and its help ends with it."""
    import dataclasses
    import typing

    from talksplat.cli_docs import field_docs
    from talksplat.core.checks import option_ranges

    checked = 0
    for tp in _config_types():
        hints = typing.get_type_hints(tp, include_extras=True)
        ranges, docs = option_ranges(tp), field_docs(tp)
        for f in dataclasses.fields(tp):
            if not _is_numeric(hints[f.name]):
                continue
            assert f.name in ranges, f"{tp.__name__}.{f.name} has no Range"
            assert ranges[f.name].text in docs.get(f.name, ""), \
                f"{tp.__name__}.{f.name}: help does not state {ranges[f.name].text}"
            checked += 1
    assert checked >= 80


def test_cli_sets_passive_openmp_waiting_and_threads(tmp_path):
    """OMP_WAIT_POLICY=PASSIVE is set before torch loads (idle threads sleep) unless the user set the OpenMP
    waiting; --threads sets torch's."""
    code = ("import os, sys\nimport talksplat.cli as c\nimport torch\n"
            "assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'\n"
            "from talksplat.core.process import configure_threads, available_cores\n"
            "assert configure_threads(None) == available_cores() == torch.get_num_threads()\n"
            "assert configure_threads(1) == 1 == torch.get_num_threads()\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    kept = ("import os\nimport talksplat.cli\nassert 'OMP_WAIT_POLICY' not in os.environ\n")
    r = subprocess.run([sys.executable, "-c", kept], capture_output=True, text=True,
                       env={**env, "GOMP_SPINCOUNT": "1000"})
    assert r.returncode == 0, r.stderr
    out = tmp_path / "x.png"
    r = talksplat("render", "--out", str(out), "--resolution", "32", "--threads", "1", env=env)
    assert r.returncode == 0 and out.is_file(), r.stderr
    r = talksplat("render", "--out", str(tmp_path / "y.png"), "--threads", "0", env=env)
    assert r.returncode == 1 and r.stderr.strip() == "talksplat: error: --threads 0: out of range (1 to 1024)"
