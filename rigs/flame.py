"""FLAME (user-supplied) as a :class:`~talksplat.rigs.base.RigAssets` bundle.

FLAME is not bundled: download it from https://flame.is.tue.mpg.de (free registration; FLAME 2023
Open, ``flame2023_Open.pkl``, is CC BY 4.0, the other releases have their own licence) and pass
``--rig flame:PATH`` or set ``$TALKSPLAT_FLAME``.

Supported files: ``generic_model.pkl`` / ``male_model.pkl`` / ``female_model.pkl`` (FLAME 2020,
also 2017/2019), ``flame2023.pkl``, ``flame2023_no_jaw.pkl``, ``flame2023_Open.pkl``.  They are read
with the restricted unpickler of :mod:`talksplat.rigs.safe_pickle` (no chumpy needed, nothing in the
file is executed).  Keys used: ``v_template`` [V, 3], ``f`` [F, 3], ``shapedirs`` [V, 3, 300 + E]
(300 identity then E (100) expression components), ``posedirs`` [V, 3, 36], ``J_regressor`` [5, V]
(sparse or dense), ``weights`` [V, 5], ``kintree_table`` [2, 5].

Errors (each a :class:`~talksplat.core.errors.TalksplatError`, one line starting with the file):
:class:`RigFileError` (also a ``FileNotFoundError``) when there is no file; :class:`FlameFormatError`
(an :class:`~talksplat.core.errors.InputError`) when the file is damaged (``<file>: not a readable
FLAME pickle (<reason>)``: random bytes, a truncated download ...), lacks a key, has a wrong shape or
NaN / Inf values (``<file>: key '<key>' holds non-finite values (NaN or Inf)``), or unusable geometry;
:class:`~talksplat.rigs.safe_pickle.ForbiddenGlobalError` / ``ChumpyObjectError`` for refused payloads.

FLAME's joints, in file order: 0 global (root, neck base), 1 neck (the head: rotating it turns the
head), 2 jaw, 3 and 4 the eyeballs.  Which of 3/4 is the subject's *left* eye is decided from the
geometry (the eye joint at larger +x is the left one, +x being the subject's left in FLAME's frame);
on the released models that is joint 3 = left, joint 4 = right, the SMPL-X / FLAME convention.

FLAME has no mouth interior.  We generate one (our own code, our own geometry): an upper and a lower
dental arch of simple closed tooth boxes and a tongue, sized and placed from the mouth boundary loop
of the mesh, appended after FLAME's own vertices (FLAME vertex indices stay valid).  Upper teeth are
rigid to the neck joint (the head), lower teeth and tongue rigid to the jaw; they have no blendshapes,
no pose correctives and no joint-regressor weight.

Regions are derived from the mesh and skinning weights (FLAME's separately licensed mask files are
not needed): ``lips`` (geodesic band around the mouth loop), ``eyes`` (eyeball vertices, dominant
eye-joint weight), ``neck`` (dominant root weight or below the chin), ``face`` (front-facing skin
between chin and forehead), ``teeth`` / ``upper_teeth`` / ``lower_teeth`` / ``tongue`` (generated);
face regions ``mouth_interior`` (teeth and tongue), ``teeth``, ``tongue`` and ``eyeballs``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from talksplat.core.errors import TalksplatError

from .base import RigAssets
from .safe_pickle import ChumpyExpression, ChumpyObjectError, FlameFormatError, _one_line, safe_load

__all__ = ["load_flame", "RigFileError", "FlameFormatError", "FLAME_URL", "FLAME_ENV",
           "boundary_loops", "find_mouth_loop"]

FLAME_URL = "https://flame.is.tue.mpg.de"
FLAME_ENV = "TALKSPLAT_FLAME"
NUM_SHAPE = 300  # FLAME's shapedirs: the first 300 components are identity, the rest expression
JOINT_COUNT = 5

# Mouth-interior placement, as fractions of the mouth width W (corner to corner of the mouth loop).
TEETH_BEHIND_LIPS = 0.10  # labial surface of the incisors this far behind the lip front (~5 mm)
TEETH_LIP_GAP = 0.015  # incisal edges this far above / below the lip line (~0.75 mm)
LIPS_GEODESIC = 0.25  # lips region: geodesic distance from the mouth loop (~12 mm)


class RigFileError(TalksplatError, FileNotFoundError):
    """The FLAME file was not given, does not exist or cannot be read."""


# FlameFormatError (an InputError: the file is not a usable FLAME model -- damaged, missing key, wrong
# shape, NaN / Inf, unusable geometry) is defined in .safe_pickle, which raises it for damaged pickles.
_MAX_ELEMENTS = 1 << 24  # a sparse matrix is densified only below this many entries (FLAME's: 5 x 5023)


def _missing_message(tried: str) -> str:
    return (f"FLAME model not found ({tried}). FLAME is not bundled: download it from {FLAME_URL} "
            f"(free registration; FLAME 2023 Open is CC BY 4.0) and pass --rig flame:PATH or set {FLAME_ENV}")


def resolve_flame_path(path: str | os.PathLike | None) -> Path:
    """The FLAME file from ``path`` or ``$TALKSPLAT_FLAME``; :class:`RigFileError` if missing."""
    if path is None or str(path) == "":
        env = os.environ.get(FLAME_ENV, "")
        if not env:
            raise RigFileError(_missing_message(f"no path given and ${FLAME_ENV} is not set"))
        path, tried = env, f"${FLAME_ENV}={env}"
    else:
        tried = f"path {path}"
    try:
        p = Path(path).expanduser()
        is_dir, is_file = p.is_dir(), p.is_file()
    except (OSError, RuntimeError, ValueError):  # ~unknown-user, embedded NUL, name too long
        raise RigFileError(_missing_message(f"{tried}: no such file")) from None
    if is_dir:
        cands = [p / n for n in ("flame2023_Open.pkl", "flame2023.pkl", "flame2023_no_jaw.pkl", "generic_model.pkl")]
        found = [c for c in cands if c.is_file()]
        if not found:
            raise RigFileError(_missing_message(f"{tried}: directory holds no FLAME .pkl"))
        p, is_file = found[0], True
    if not is_file:
        raise RigFileError(_missing_message(f"{tried}: no such file"))
    return p


def flame_variant(filename: str) -> tuple[str, str]:
    """(rig name, licence note) from a FLAME file name."""
    n = Path(filename).stem.lower()
    if "2023" in n and "open" in n:
        return "flame2023_open", "CC-BY-4.0 (FLAME 2023 Open)"
    note = f"FLAME model licence, see {FLAME_URL} (not redistributable)"
    if "2023" in n and "no_jaw" in n:
        return "flame2023_no_jaw", note
    if "2023" in n:
        return "flame2023", note
    if "2020" in n or n in ("generic_model", "male_model", "female_model"):
        return "flame2020", note
    return "flame", note


# ----------------------------------------------------------------------------- loading
def load_flame(path: str | os.PathLike | None = None) -> RigAssets:
    """Load a FLAME ``.pkl`` (argument, else ``$TALKSPLAT_FLAME``) as :class:`RigAssets`.

    Raises (all :class:`~talksplat.core.errors.TalksplatError`, one line starting with the file):
        RigFileError: (a ``FileNotFoundError``) no file; the message says where FLAME comes from.
        FlameFormatError: the file is damaged (``<file>: not a readable FLAME pickle (<reason>)``), a
            key is missing, malformed or holds NaN / Inf, or the mouth opening cannot be found.
        safe_pickle.ForbiddenGlobalError: the pickle names anything outside the allow-list.
        safe_pickle.ChumpyObjectError: a key the loader needs is a chumpy expression.
    """
    p = resolve_flame_path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise RigFileError(f"{p}: cannot read the FLAME file ({e.strerror or e})") from None
    sha = hashlib.sha256(data).hexdigest()
    model = safe_load(data, filename=str(p), allow_chumpy_expressions=True)
    del data
    if not isinstance(model, dict):
        raise FlameFormatError(f"{p}: expected a dict of FLAME arrays, found {type(model).__name__}")
    arrays = _read_model(model, str(p))
    name, licence = flame_variant(p.name)
    return build_flame_assets(arrays, name=name, meta={
        "source": "FLAME", "source_file": p.name, "sha256": sha, "variant": name, "licence": licence,
        "url": FLAME_URL})


def _get(model: dict, key: str, file: str, ndim: int) -> np.ndarray:
    if key not in model:
        has = _one_line(", ".join(sorted(map(str, model))), 300)
        raise FlameFormatError(f"{file}: missing key '{key}' (has: {has})")
    v = model[key]
    if isinstance(v, ChumpyExpression):
        raise ChumpyObjectError(v.message(f"{file}: key '{key}'"))
    try:
        if sp.issparse(v):
            if float(np.prod([float(n) for n in v.shape])) > _MAX_ELEMENTS:
                raise FlameFormatError(f"{file}: key '{key}' is a sparse matrix of shape {list(v.shape)}, "
                                       f"far larger than a FLAME model's")
            v = v.toarray()
        a = np.asarray(v)
    except FlameFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the file held
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise FlameFormatError(f"{file}: key '{key}' is not an array ({type(v).__name__}: {reason})") from None
    if a.ndim != ndim or a.dtype.kind not in "biuf" or a.size == 0:
        raise FlameFormatError(f"{file}: key '{key}' has shape {list(a.shape)} dtype {a.dtype}, "
                               f"expected a non-empty {ndim}-d numeric array")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise FlameFormatError(f"{file}: key '{key}' holds non-finite values (NaN or Inf)")
    return a


def _read_model(model: dict, file: str) -> dict:
    """Validated float64 / int64 arrays from the raw pickle dict."""
    def bad(key: str, a: np.ndarray, expected: str):
        raise FlameFormatError(f"{file}: key '{key}' has shape {list(a.shape)}, expected {expected}")

    v = _get(model, "v_template", file, 2).astype(np.float64)
    V = v.shape[0]
    if v.shape[1] != 3 or V < 4:
        bad("v_template", v, "[V, 3]")
    f = _get(model, "f", file, 2)
    if f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer) and not np.all(np.mod(f, 1) == 0):
        bad("f", f, "[F, 3] integer")
    if f.min() < 0 or f.max() >= V:  # before the cast: uint64 / float indices could wrap into range
        raise FlameFormatError(f"{file}: key 'f' has vertex indices outside [0, {V})")
    f = f.astype(np.int64)
    sd = _get(model, "shapedirs", file, 3).astype(np.float64)
    if sd.shape[:2] != (V, 3) or sd.shape[2] <= NUM_SHAPE:
        bad("shapedirs", sd, f"[{V}, 3, {NUM_SHAPE} + expressions] (FLAME: [5023, 3, 400])")
    J = JOINT_COUNT
    pd = _get(model, "posedirs", file, 3).astype(np.float64)
    if pd.shape != (V, 3, (J - 1) * 9):
        bad("posedirs", pd, f"[{V}, 3, {(J - 1) * 9}]")
    jr = _get(model, "J_regressor", file, 2).astype(np.float64)
    if jr.shape != (J, V):
        bad("J_regressor", jr, f"[{J}, {V}]")
    w = _get(model, "weights", file, 2).astype(np.float64)
    if w.shape != (V, J):
        bad("weights", w, f"[{V}, {J}]")
    s = w.sum(1, keepdims=True)
    if np.any(np.abs(s - 1.0) > 1e-2) or np.any(w < -1e-6):
        raise FlameFormatError(f"{file}: key 'weights' rows do not sum to 1")
    w = np.clip(w, 0.0, None)
    w = w / w.sum(1, keepdims=True)
    kt = _get(model, "kintree_table", file, 2)
    if kt.shape != (2, J):
        bad("kintree_table", kt, f"[2, {J}]")
    if kt.dtype.kind == "f" and not (np.all(np.mod(kt, 1) == 0) and np.all(np.abs(kt) < 2.0 ** 62)):
        raise FlameFormatError(f"{file}: key 'kintree_table' must hold joint ids (integers), got {kt.tolist()}")
    kt = kt.astype(np.int64)
    ids = {int(i): n for n, i in enumerate(kt[1])}
    parents = np.full(J, -1, np.int64)
    for n in range(J):
        parents[n] = ids.get(int(kt[0, n]), -1) if n else -1
    if parents[0] != -1 or any(not 0 <= parents[n] < n for n in range(1, J)):
        raise FlameFormatError(f"{file}: key 'kintree_table' is not a tree rooted at joint 0: {kt.tolist()}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(sd)) and np.all(np.isfinite(pd))
            and np.all(np.isfinite(jr)) and np.all(np.isfinite(w))):
        raise FlameFormatError(f"{file}: non-finite values in the model arrays")
    return {"v_template": v, "f": f, "shapedirs": sd, "posedirs": pd, "J_regressor": jr,
            "weights": w, "parents": parents, "file": file}


# ----------------------------------------------------------------------------- assembly
def build_flame_assets(a: dict, name: str = "flame", meta: dict | None = None) -> RigAssets:
    """:class:`RigAssets` from validated FLAME arrays (see :func:`_read_model`)."""
    file = a.get("file", "<flame>")
    v, f, w, jr = a["v_template"], a["f"], a["weights"], a["J_regressor"]
    V, J = v.shape[0], JOINT_COUNT
    joints = jr @ v

    # Eye joints: +x is the subject's left in FLAME's frame.
    eye_left, eye_right = (4, 3) if joints[4, 0] > joints[3, 0] + 1e-6 else (3, 4)
    joint_names = ["global", "neck", "jaw", "", ""]
    joint_names[eye_left], joint_names[eye_right] = "eye_left", "eye_right"
    semantic = {"global": 0, "neck": 1, "jaw": 2, "eye_left": eye_left, "eye_right": eye_right}

    mouth = find_mouth_loop(v, f, joints[[3, 4]], file)
    interior = build_mouth_interior(v, mouth)

    # Append the generated geometry after FLAME's vertices.
    tv, tf = interior["vertices"], interior["faces"]
    n_new = tv.shape[0]
    template = np.concatenate([v, tv], 0)
    faces = np.concatenate([f, tf + V], 0)
    Vt = V + n_new
    w_new = np.zeros((n_new, J))
    w_new[interior["upper"], 1] = 1.0  # upper teeth: rigid to the head ("neck" joint)
    w_new[interior["lower"], 2] = 1.0  # lower teeth: rigid to the jaw
    w_new[interior["tongue"], 2] = 1.0
    weights = np.concatenate([w, w_new], 0)
    sd = a["shapedirs"]
    pad = lambda x: np.concatenate([x, np.zeros((n_new,) + x.shape[1:], x.dtype)], 0)  # noqa: E731
    shapedirs = pad(sd[:, :, :NUM_SHAPE])
    exprdirs = pad(sd[:, :, NUM_SHAPE:])
    posedirs = pad(a["posedirs"]).reshape(-1, (J - 1) * 9).T  # [36, Vt*3], as FLAME / smplx
    joint_regressor = np.concatenate([jr, np.zeros((J, n_new))], 1)

    regions, face_regions = derive_regions(v, f, w, joints, mouth, semantic)
    off = {k: np.asarray(idx, np.int64) + V for k, idx in (("upper_teeth", interior["upper"]),
                                                           ("lower_teeth", interior["lower"]),
                                                           ("tongue", interior["tongue"]))}
    regions.update(off)
    regions["teeth"] = np.concatenate([off["upper_teeth"], off["lower_teeth"]])
    F = f.shape[0]
    tooth_faces = np.flatnonzero(interior["face_part"] < 2) + F
    tongue_faces = np.flatnonzero(interior["face_part"] == 2) + F
    face_regions["teeth"] = tooth_faces
    face_regions["tongue"] = tongue_faces
    face_regions["mouth_interior"] = np.concatenate([tooth_faces, tongue_faces])

    E = exprdirs.shape[2]
    meta = dict(meta or {})
    meta.update({
        "num_flame_vertices": int(V), "num_flame_faces": int(F), "generated_vertices": [int(V), int(Vt)],
        "eye_joints": {"eye_left": int(eye_left), "eye_right": int(eye_right)},
        "mouth_loop_vertices": int(len(mouth["loop"])), "mouth_width_m": float(mouth["width"]),
        "mouth_interior": "generated by talksplat.rigs.flame (tooth boxes + tongue)",
    })
    assets = RigAssets(
        name=name, template=template.astype(np.float32), faces=faces.astype(np.int64),
        shapedirs=shapedirs.astype(np.float32), exprdirs=exprdirs.astype(np.float32),
        expression_names=[f"expr_{i:03d}" for i in range(E)], shape_names=[f"shape_{i:03d}" for i in range(NUM_SHAPE)],
        joint_regressor=joint_regressor.astype(np.float32), parents=a["parents"].astype(np.int64),
        weights=weights.astype(np.float32), joint_names=joint_names, semantic_joints=semantic,
        posedirs=posedirs.astype(np.float32),
        regions={k: np.unique(np.asarray(r, np.int64)) for k, r in regions.items()},
        face_regions={k: np.unique(np.asarray(r, np.int64)) for k, r in face_regions.items()},
        meta=meta, expression_groups={})  # PCA components: each moves the whole face, no group is known
    assets.validate()
    return assets


# ----------------------------------------------------------------------------- mesh analysis
def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Ordered vertex loops along the mesh boundary (edges used by exactly one face)."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    key = np.minimum(e[:, 0], e[:, 1]) * (int(faces.max()) + 1) + np.maximum(e[:, 0], e[:, 1])
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    be = e[cnt[inv] == 1]
    nxt: dict[int, list[int]] = {}
    for a, b in be:
        nxt.setdefault(int(a), []).append(int(b))
    loops = []
    while nxt:
        start = next(iter(nxt))
        loop, cur = [start], start
        while True:
            outs = nxt.get(cur)
            if not outs:
                break
            n = outs.pop()
            if not outs:
                del nxt[cur]
            if n == start:
                break
            loop.append(n)
            cur = n
        if len(loop) >= 3:
            loops.append(np.asarray(loop, np.int64))
    return loops


def find_mouth_loop(v: np.ndarray, f: np.ndarray, eye_joints: np.ndarray, file: str = "<flame>") -> dict:
    """The mouth opening: the boundary loop in the front-lower middle of the face.

    FLAME's head has open boundaries at the neck (the longest loop), the mouth and possibly around
    the eyes; the mouth loop is the front-most loop near the symmetry plane, below the eyes and in
    the front part of the head.
    """
    loops = boundary_loops(f)
    if not loops:
        raise FlameFormatError(f"{file}: the mesh has no open boundary, cannot find the mouth opening")
    perim = [np.linalg.norm(v[lp] - v[np.roll(lp, 1)], axis=1).sum() for lp in loops]
    used = np.unique(f)
    lo, hi = v[used].min(0), v[used].max(0)
    cx, half_w = 0.5 * (lo[0] + hi[0]), 0.5 * (hi[0] - lo[0])
    eye_y = float(np.mean(eye_joints[:, 1]))
    cand = [i for i in range(len(loops)) if len(loops) == 1 or i != int(np.argmax(perim))]
    cent = [v[loops[i]].mean(0) for i in range(len(loops))]
    mid_z = 0.5 * (lo[2] + hi[2])
    good = [i for i in cand if abs(cent[i][0] - cx) < 0.25 * half_w and cent[i][1] < eye_y
            and cent[i][2] > mid_z + 0.3 * (hi[2] - mid_z)]
    if not good:
        raise FlameFormatError(f"{file}: could not locate the mouth opening (no boundary loop at the front "
                               f"of the face, near its middle and below the eyes, among {len(loops)} loops)")
    i = max(good, key=lambda k: cent[k][2])
    loop = loops[i]
    P = v[loop]
    left, right = P[np.argmax(P[:, 0])], P[np.argmin(P[:, 0])]
    width = float(left[0] - right[0])
    if not width > 0:
        raise FlameFormatError(f"{file}: degenerate mouth opening (zero width)")
    mx = 0.5 * (left[0] + right[0])
    central = np.abs(P[:, 0] - mx) < 0.25 * width
    return {"loop": loop, "width": width, "centre_x": float(mx), "lip_y": float(np.median(P[:, 1])),
            "front_z": float(P[central, 2].max() if central.any() else P[:, 2].max()),
            "corners": np.stack([left, right])}


# ----------------------------------------------------------------------------- mouth interior
# Half-arch outlines (labial surface, mm, x to the side, z forward; front centre at 0, 0) and, per
# tooth from the midline back (incisors, canine, premolars, molars): width, crown height, thickness.
_UPPER_ARCH = np.array([(0, 0), (4, -0.6), (8, -2.2), (12, -5.0), (15.5, -8.5), (18.5, -13), (21, -19),
                        (23, -26), (24.5, -33), (25.5, -40), (26, -46)], float)
_UPPER_TEETH = np.array([(8.6, 10.5, 7.0), (6.6, 9.0, 6.0), (7.6, 10.0, 8.0), (7.0, 8.5, 9.0),
                         (6.6, 8.0, 9.0), (10.2, 7.0, 11.0), (9.0, 6.5, 10.5)])
_LOWER_TEETH = np.array([(5.4, 9.0, 6.0), (5.9, 9.5, 6.2), (6.9, 11.0, 7.5), (7.0, 8.5, 7.8),
                         (7.1, 8.0, 8.2), (11.2, 7.5, 10.5), (10.5, 7.0, 10.2)])


def _arch_sampler(outline: np.ndarray):
    """Arc-length parametrised half arch: returns (length, fn(s) -> (points [N,2], tangents [N,2]))."""
    seg = np.linalg.norm(np.diff(outline, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    dense_s = np.linspace(0, cum[-1], 400)
    dense = np.stack([np.interp(dense_s, cum, outline[:, 0]), np.interp(dense_s, cum, outline[:, 1])], 1)
    # Light smoothing of the polyline corners (endpoints fixed).
    for _ in range(20):
        dense[1:-1] = 0.25 * dense[:-2] + 0.5 * dense[1:-1] + 0.25 * dense[2:]
    seg = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    tang = np.gradient(dense, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)

    def at(s):
        s = np.clip(s, 0, cum[-1])
        p = np.stack([np.interp(s, cum, dense[:, 0]), np.interp(s, cum, dense[:, 1])], -1)
        t = np.stack([np.interp(s, cum, tang[:, 0]), np.interp(s, cum, tang[:, 1])], -1)
        return p, t / np.linalg.norm(t, axis=-1, keepdims=True)

    return float(cum[-1]), at


_BOX_FACES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                       [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])


def _orient_outward(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip a closed component's faces if its signed volume is negative (so they are CCW outside)."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    vol = np.einsum("ij,ij->i", a, np.cross(b, c)).sum()
    return faces if vol > 0 else faces[:, ::-1].copy()


def _dental_arch(outline, teeth, mm: float, front: np.ndarray, lip_y: float, gap: float, upper: bool):
    """Closed tooth boxes along a dental arch, both halves.  Returns (vertices [N,3] m, faces).

    ``outline`` / ``teeth`` in mm, ``mm`` metres per (scaled) mm, ``front`` the arch's front centre
    (x, -, z) in metres, incisal edges at ``lip_y +- gap`` metres.
    """
    length, at = _arch_sampler(outline)
    widths = teeth[:, 0] * (length * 0.98 / teeth[:, 0].sum())
    y0 = lip_y + (gap if upper else -gap)
    verts, faces = [], []
    for side in (1.0, -1.0):
        s0 = 0.0
        for (_, h, th), wd in zip(teeth, widths):
            s_a, s_b = s0 + 0.04 * wd, s0 + 0.96 * wd  # small gap between neighbours
            s0 += wd
            (pa, pb), (ta, tb) = at(np.array([s_a, s_b]))
            # Outward (labial/buccal) normal in the xz plane: the tangent rotated towards +z / +x.
            na, nb = np.array([-ta[1], ta[0]]), np.array([-tb[1], tb[0]])
            ring = np.array([pa, pb, pb - th * nb, pa - th * na])  # labial a, labial b, lingual b, lingual a
            y1 = y0 + (h if upper else -h) * mm
            box = np.zeros((8, 3))
            box[:, 0] = front[0] + side * np.tile(ring[:, 0], 2) * mm
            box[:, 2] = front[2] + np.tile(ring[:, 1], 2) * mm
            box[:4, 1], box[4:, 1] = y0, y1
            faces.append(_orient_outward(box, _BOX_FACES) + 8 * len(verts))
            verts.append(box)
    return np.concatenate(verts, 0), np.concatenate(faces, 0)


def _ellipsoid(centre, radii, n_lat: int = 8, n_lon: int = 12):
    """Closed UV ellipsoid, faces CCW outside."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    pts = np.stack([np.sin(T) * np.sin(P), np.cos(T), np.sin(T) * np.cos(P)], -1).reshape(-1, 3)
    pts = np.concatenate([[(0, 1, 0)], pts, [(0, -1, 0)]], 0)
    faces = []
    ring = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append((0, ring(0, j), ring(0, j + 1)))
        faces.append((len(pts) - 1, ring(n_lat - 2, j + 1), ring(n_lat - 2, j)))
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j + 1), ring(i + 1, j)
            faces += [(a, d, c), (a, c, b)]
    verts = pts * np.asarray(radii) + np.asarray(centre)
    faces = np.asarray(faces, np.int64)
    return verts, _orient_outward(verts, faces)


def build_mouth_interior(v: np.ndarray, mouth: dict) -> dict:
    """Teeth (upper/lower dental arches of closed boxes) and a tongue behind the mouth opening.

    Sized by the mouth width W (corner to corner): a 5 cm mouth gives natural adult teeth; placed with
    the incisors' labial surface ``TEETH_BEHIND_LIPS * W`` behind the lip front at the mouth centre,
    upper incisal edges just above the lip line, lower ones just below.
    """
    W = mouth["width"]
    scale = float(np.clip(W / 0.05, 0.5, 2.0))
    mm = 1e-3 * scale  # metres per arch-model millimetre
    gap = TEETH_LIP_GAP * W
    front = np.array([mouth["centre_x"], 0.0, mouth["front_z"] - TEETH_BEHIND_LIPS * W])
    # Lower arch: a little narrower and 1.5 mm behind the upper one (normal overjet).
    lower_outline = _UPPER_ARCH * np.array([0.93, 0.95]) + np.array([0.0, -1.5])
    uv, uf = _dental_arch(_UPPER_ARCH, _UPPER_TEETH, mm, front, mouth["lip_y"], gap, upper=True)
    lv, lf = _dental_arch(lower_outline, _LOWER_TEETH, mm, front, mouth["lip_y"], gap, upper=False)
    # Tongue: a flattened ellipsoid resting inside the lower arch, tip behind the lower incisors.
    y_lower_edge = mouth["lip_y"] - gap
    radii = np.array([15.0, 6.0, 20.0]) * mm
    centre = np.array([mouth["centre_x"], y_lower_edge - 4.0 * mm - radii[1],
                       front[2] - (1.5 + 7.0 + 3.0) * mm - radii[2]])
    tv, tf = _ellipsoid(centre, radii)
    nu, nl = len(uv), len(lv)
    verts = np.concatenate([uv, lv, tv], 0)
    faces = np.concatenate([uf, lf + nu, tf + nu + nl], 0)
    part = np.concatenate([np.zeros(len(uf), int), np.ones(len(lf), int), np.full(len(tf), 2)])
    return {"vertices": verts, "faces": faces, "face_part": part,
            "upper": np.arange(nu), "lower": np.arange(nu, nu + nl), "tongue": np.arange(nu + nl, len(verts))}


# ----------------------------------------------------------------------------- regions
def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def derive_regions(v, f, w, joints, mouth, semantic) -> tuple[dict, dict]:
    """Vertex regions on FLAME's own vertices (indices < V) and face regions; see module docstring."""
    V = v.shape[0]
    idx = np.arange(V)
    dom = np.argmax(w, 1)
    used = np.zeros(V, bool)
    used[f.ravel()] = True
    eye_j = [semantic["eye_left"], semantic["eye_right"]]

    # Eyeballs: dominant weight on an eye joint; else closed components around the eye joints.
    eyes = np.isin(dom, eye_j) & used
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    edges = np.unique(edges, axis=0)
    lens = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1) + 1e-12
    graph = sp.coo_matrix((np.concatenate([lens, lens]), (np.concatenate([edges[:, 0], edges[:, 1]]),
                                                          np.concatenate([edges[:, 1], edges[:, 0]]))),
                          shape=(V, V)).tocsr()
    _, comp = csgraph.connected_components(graph, directed=False)
    if not eyes.any():  # small components (not the head) centred near an eye joint
        ipd = float(np.linalg.norm(joints[eye_j[0]] - joints[eye_j[1]])) or 0.06
        for c in np.unique(comp[used]):
            members = (comp == c) & used
            near = min(np.linalg.norm(v[members].mean(0) - joints[j]) for j in eye_j)
            if members.sum() < 0.2 * V and near < 0.3 * ipd:
                eyes |= members

    head_comp = comp[mouth["loop"][0]]
    head = (comp == head_comp) & ~eyes

    # Lips: geodesic band around the mouth loop.
    W = mouth["width"]
    dist = csgraph.dijkstra(graph, directed=False, indices=mouth["loop"], min_only=True,
                            limit=LIPS_GEODESIC * W * 1.0001)
    lips = np.isfinite(dist) & head

    # Neck: dominant root weight, or below the chin.
    jaw_dom = (dom == semantic["jaw"]) & head
    y_chin = v[jaw_dom, 1].min() if jaw_dom.any() else mouth["lip_y"] - 0.8 * W
    neck = head & ((dom == semantic["global"]) | (v[:, 1] < y_chin)) & ~lips

    # Face: front-facing skin between the chin and the forehead.
    n = _vertex_normals(v, f)
    eye_y = float(np.mean(joints[eye_j, 1]))
    y_top = eye_y + 0.9 * max(eye_y - mouth["lip_y"], 0.5 * W)
    lo, hi = v[head].min(0), v[head].max(0)
    half_w = 0.5 * (hi[0] - lo[0])
    face = head & ~neck & (n[:, 2] > 0.25) & (v[:, 1] <= y_top) & (v[:, 1] >= y_chin) \
        & (np.abs(v[:, 0] - mouth["centre_x"]) < 0.8 * half_w)
    face |= lips
    regions = {"face": idx[face], "lips": idx[lips], "eyes": idx[eyes], "neck": idx[neck]}
    eyeball_faces = np.flatnonzero(eyes[f].all(1))
    return regions, {"eyeballs": eyeball_faces}
