"""Rig knowledge lives in ``rigs/``: callers use the rig's metadata (expression groups, expression
range, built-in specs, the one ``--rig`` help), never the names of a particular rig's units."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from talksplat.rigs import EXPRESSION_GROUPS, REQUIRED_REGIONS, SEMANTIC_JOINTS, HeadRig, RigParams
from talksplat.rigs.open_head import ARKIT_NAMES

REPO = Path(__file__).resolve().parents[1]

#: Modules allowed to name a rig, and why.
EXEMPT = {
    "data_prep/nerf_import.py": "reads and writes VHAP / GaussianAvatars exports, a file format made of FLAME "
                                "parameters (its keys and file names are FLAME's)",
    "talksplat/demo/": "the demo's synthetic subject is authored on the built-in open head's ARKit units "
                       "(visemes, brows, blinks): content, not a caller of the rig interface",
    "benchmarks/synthetic_dataset.py": "a synthetic scene authored on the open head's ARKit units, as the demo",
}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string statements (module, class, function and attribute docstrings): prose, not code."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        for st in body if isinstance(body, list) else []:
            if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str):
                out.add(id(st.value))
    return out


def rig_name_leaks(open_rig: HeadRig, root: Path = REPO) -> list[str]:
    """Every place in code under ``root`` outside ``rigs/`` and ``tests/`` (and :data:`EXEMPT`) that names a rig.

    What counts: a string constant in code -- docstrings and comments are prose and do not count --
    that is
      * a rig spec or rig name: ``open``, ``open_head``, ``flame``, ``flame:...``, ``flame20...``;
      * an ARKit unit name (the open head's units) or a prefix of one of at least three letters
        (``eye``, ``eyeBlink``, ``jawOpen``: what name heuristics test with ``startswith``), compared
        case-insensitively, unless it is a word of the rig interface every rig shares (the
        :class:`RigParams` fields, :data:`SEMANTIC_JOINTS`, :data:`EXPRESSION_GROUPS`, region names:
        ``jaw``, ``eyes``, ``mouth``, ``tongue`` ...);
      * a FLAME unit name: ``expr_`` followed by digits or nothing;
    and an import of a rig's own module (``talksplat.rigs.open_head`` / ``talksplat.rigs.flame``).
    """
    interface = {f.name for f in dataclasses.fields(RigParams)} | set(SEMANTIC_JOINTS) | set(EXPRESSION_GROUPS) \
        | set(REQUIRED_REGIONS) | set(open_rig.region_names) | set(open_rig.face_region_names)
    interface = {w.lower() for w in interface}
    prefixes = {n.lower()[:k] for n in ARKIT_NAMES for k in range(3, len(n) + 1)} - interface
    leaks = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".", "rigs/", "tests/", "build/")) or any(rel.startswith(e) for e in EXEMPT):
            continue
        tree = ast.parse(path.read_text(), rel)
        prose = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
                if any(re.search(r"rigs\.(open_head|flame)\b", n) for n in names):
                    leaks.append(f"{rel}:{node.lineno}: imports a rig's own module")
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
                continue
            c = node.value
            low = c.lower()
            if low in ("open", "open_head", "flame") or low.startswith(("flame:", "flame20")):
                leaks.append(f"{rel}:{node.lineno}: rig spec or name {c!r}")
            elif low in prefixes:
                leaks.append(f"{rel}:{node.lineno}: open-head unit name {c!r}")
            elif re.fullmatch(r"expr_\d*", c):
                leaks.append(f"{rel}:{node.lineno}: FLAME unit name {c!r}")
    return leaks


def test_nothing_outside_rigs_names_a_rig(open_rig):
    leaks = rig_name_leaks(open_rig)
    assert not leaks, "rig knowledge outside rigs/ (use the rig's metadata):\n" + "\n".join(leaks)


def test_the_leak_check_catches_a_leak(open_rig, tmp_path):
    """The check finds the kinds of leak issue 14 named (so its silence above means something)."""
    pkg = tmp_path / "driving"
    pkg.mkdir()
    (pkg / "x.py").write_text('"""Docstrings may say open, eyeBlinkLeft and expr_000."""\n'
                              'import talksplat.rigs.flame\n'
                              'a = [n for n in names if n.lower().startswith("eyeblink")]\n'
                              'b = all(n.startswith("expr_") for n in names)\n'
                              'c = "open" if name.startswith("open") else None\n'
                              'd = {"jaw": 1, "eyes": 2, "mouth": 3}\n')
    leaks = rig_name_leaks(open_rig, tmp_path)
    assert sorted(line.split(":")[1] for line in leaks) == ["2", "3", "4", "5", "5"], leaks


# ------------------------------------------------------------------------------------------ metadata
@pytest.fixture(scope="module")
def flame_rig(tmp_path_factory):
    from test_flame import synthetic_flame, write_flame

    from talksplat.rigs import load_rig

    return load_rig(f"flame:{write_flame(tmp_path_factory.mktemp('flame') / 'flame2023.pkl', synthetic_flame())}")


def test_open_head_groups_and_range(open_rig):
    idx = open_rig.expression_index
    assert open_rig.expression_group("blink") == [idx("eyeBlinkLeft"), idx("eyeBlinkRight")]
    assert open_rig.expression_group("jaw_open") == [idx("jawOpen")]
    assert [open_rig.expression_names[i] for i in open_rig.expression_group("gaze")] == \
        [n for n in ARKIT_NAMES if n.startswith("eyeLook")]
    eyes = set(open_rig.expression_group("eyes"))
    assert set(open_rig.expression_group("blink")) | set(open_rig.expression_group("gaze")) <= eyes
    assert {idx("eyeSquintLeft"), idx("eyeWideRight")} <= eyes and idx("jawOpen") not in eyes
    mouth = {open_rig.expression_names[i] for i in open_rig.expression_group("mouth")}
    assert {"jawOpen", "mouthFunnel", "mouthPucker", "mouthClose", "tongueOut"} <= mouth
    assert not mouth & {"eyeBlinkLeft", "browInnerUp", "noseSneerLeft"}
    assert open_rig.expression_range == (0.0, 1.0)
    with pytest.raises(KeyError, match="no expression group 'lips'"):
        open_rig.expression_group("lips")


def test_flame_groups_and_range(flame_rig):
    """FLAME's components are PCA directions (no unit is a blink or the mouth alone), unbounded."""
    assert flame_rig.expression_groups == {g: [] for g in EXPRESSION_GROUPS}
    assert flame_rig.expression_range is None


def _named_sphere_rig(names, groups, expression_range=None) -> HeadRig:
    from conftest import make_sphere_rig

    a = make_sphere_rig(n_expr=len(names))
    a.expression_names = list(names)
    a.expression_groups = groups
    if expression_range is not None:
        a.meta["expression_range"] = list(expression_range)
    return HeadRig(a)


def test_bad_groups_are_refused():
    from conftest import make_sphere_rig

    a = make_sphere_rig(n_expr=3)
    a.expression_groups = {"blink": [3]}
    with pytest.raises(ValueError, match="expression_groups"):
        a.validate()
    a.expression_groups = {"winks": [0]}
    with pytest.raises(ValueError, match="expression_groups"):
        a.validate()


def test_predictor_layout_follows_the_groups_not_the_names(open_rig, flame_rig):
    from talksplat.driving.predictor import choose_layout

    rng = np.random.default_rng(0)
    # Names that the old heuristics misread: "eyeBlink..." units that are not blinks, "expr_" units that are.
    rig = _named_sphere_rig(["eyeBlinkLeft", "expr_000", "expr_001"], {"blink": [1], "eyes": [1, 2]})
    layout = choose_layout(rig, rng.normal(size=(20, 3)).astype(np.float32))
    assert layout.blink_ids == [1] and layout.expr_ids == [0]
    # The open head: blinks are its eyeBlink units, no eye unit is predicted from speech.
    layout = choose_layout(open_rig, rng.normal(size=(20, open_rig.num_expression)).astype(np.float32))
    assert layout.blink_ids == open_rig.expression_group("blink")
    assert set(layout.expr_ids) == set(range(open_rig.num_expression)) - set(open_rig.expression_group("eyes"))
    # FLAME: every moving component is predicted, there are no blinks to drive.
    expr = np.zeros((20, flame_rig.num_expression), np.float32)
    expr[:, :5] = rng.normal(size=(20, 5))
    layout = choose_layout(flame_rig, expr)
    assert layout.blink_ids == [] and layout.expr_ids == [0, 1, 2, 3, 4]


def test_viewer_sliders_follow_the_expression_range(open_rig, flame_rig):
    from talksplat.viewer.gui import UNBOUNDED_SLIDER_RANGE, expression_controls

    c = expression_controls(open_rig, 10)
    assert len(c) == 52 and {(x.lo, x.hi) for x in c} == {(0.0, 1.0)} and c[24].name == "jawOpen"
    c = expression_controls(flame_rig, 10)
    assert [x.index for x in c] == list(range(10)) and {(x.lo, x.hi) for x in c} == {UNBOUNDED_SLIDER_RANGE}
    # The range decides, not the names.
    bounded = _named_sphere_rig(["expr_000", "expr_001", "expr_002"], {}, (-1.0, 2.0))
    assert [(x.name, x.lo, x.hi) for x in expression_controls(bounded, 1)] == \
        [("expr_000", -1.0, 2.0), ("expr_001", -1.0, 2.0), ("expr_002", -1.0, 2.0)]
    assert len(expression_controls(_named_sphere_rig(["jawOpen", "eyeBlinkLeft", "x"], {}), 2)) == 2


# ------------------------------------------------------------------------------------------ specs
def test_builtin_spec_from_a_header():
    from talksplat.driving.fit_reader import fit_rig_spec
    from talksplat.rigs import builtin_spec, load_rig_assets

    assert builtin_spec("open_head") == "open" and load_rig_assets(builtin_spec("open_head")).name == "open_head"
    assert builtin_spec("flame2020") is None and builtin_spec(None) is None
    assert fit_rig_spec({"rig_name": "open_head", "extra": {}}) == "open"
    assert fit_rig_spec({"rig_name": "flame2023", "extra": {}}) is None  # its file must be named


def test_viewer_takes_the_rig_from_the_avatar(open_rig, sphere_rig, tmp_path):
    """`talksplat view` without --rig loads the rig the avatar records (README: like drive)."""
    from talksplat.avatar import init_avatar, save_avatar
    from talksplat.core.errors import OptionError, TalksplatError
    from talksplat.viewer.config import ViewConfig
    from talksplat.viewer.inputs import view_rig

    assert ViewConfig(avatar=tmp_path).rig is None
    f = save_avatar(init_avatar(open_rig, per_face=1), tmp_path / "open.safetensors", extra={})
    assert view_rig(ViewConfig(avatar=f), f).checksum == open_rig.checksum
    g = save_avatar(init_avatar(sphere_rig, per_face=1), tmp_path / "sphere.safetensors", extra={})
    with pytest.raises(OptionError, match="cannot tell which rig the avatar uses .*pass --rig"):
        view_rig(ViewConfig(avatar=g), g)
    with pytest.raises(TalksplatError, match="sphere.safetensors"):  # an explicit --rig must match
        view_rig(ViewConfig(avatar=g, rig="open"), g)


#: Configs whose --rig help is their own (none: every --rig takes its help from talksplat.rigs.spec).
OWN_RIG_HELP: set[str] = set()


def test_every_rig_option_has_the_one_help_text():
    """Every --rig option's help comes from talksplat.rigs.spec (defined once), and names the same specs."""
    from talksplat.cli_docs import collect, leaves
    from talksplat.rigs.spec import DATASET_RIG_HELP, RECORDED_RIG_HELP, RIG_CHOICES, RIG_HELP

    seen = []
    for cmd in leaves(collect()):
        for a in cmd.arguments:
            if a.flags == ["--rig"]:
                seen.append(" ".join(cmd.path))
                if " ".join(cmd.path) in OWN_RIG_HELP:
                    continue
                assert a.help in (RIG_HELP, RECORDED_RIG_HELP, DATASET_RIG_HELP), (cmd.path, a.help)
                assert RIG_CHOICES in a.help
    assert {"prep", "drive", "run", "render", "view", "bench render", "bench rig", "bench prep"} <= set(seen)


def test_recorded_spec_loads_from_anywhere(tmp_path, monkeypatch):
    """Datasets record a spec that finds the same rig later: a FLAME path made absolute, `flame`
    resolved through $TALKSPLAT_FLAME at the time (not whatever it says when the dataset is read)."""
    from talksplat.rigs import recorded_spec

    (tmp_path / "generic_model.pkl").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert recorded_spec("flame:generic_model.pkl") == f"flame:{tmp_path.resolve() / 'generic_model.pkl'}"
    monkeypatch.setenv("TALKSPLAT_FLAME", "generic_model.pkl")
    assert recorded_spec("flame") == f"flame:{tmp_path.resolve() / 'generic_model.pkl'}"
    assert recorded_spec("open") == "open" and recorded_spec("open_head") == "open"
