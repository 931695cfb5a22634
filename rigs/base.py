"""The head-rig interface shared by every rig (the built-in open head and FLAME).

A rig is a linear-blend-skinned mesh with blendshapes:

    v_shaped = template + shapedirs @ shape + exprdirs @ expression          [V, 3]
    joints   = joint_regressor @ v_shaped                                    [J, 3]
    v_posed  = v_shaped + posedirs @ (R_j - I) for non-root joints (optional) [V, 3]
    vertices = sum_j weights[v, j] * G_j(v_posed) + translation              [V, 3]

Everything is torch, differentiable and batched over a leading B axis.

Canonical rig frame (both rigs): metres, right-handed, +y up, +z out of the face (the
direction the subject looks), +x towards the subject's left; as FLAME.

Rig data comes as a :class:`RigAssets` bundle of numpy arrays built by a rig-specific
loader (:mod:`talksplat.rigs.open_head`, :mod:`talksplat.rigs.flame`); :class:`HeadRig`
is the one torch module that evaluates any of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from talksplat.render.rotation import axis_angle_to_matrix

from .visemes import arkit_viseme_prior

#: The semantic joints every rig exposes, in the order of :class:`RigParams` rotations.
SEMANTIC_JOINTS = ("global", "neck", "jaw", "eye_left", "eye_right")

#: Named vertex regions every rig provides (other names may be added by a rig).
REQUIRED_REGIONS = ("face", "lips", "eyes", "teeth", "neck")

#: Expression groups a rig may define (:attr:`RigAssets.expression_groups`): name -> meaning.  Callers
#: use these instead of unit names; a group a rig does not define is empty (FLAME's expression
#: components are PCA directions that each move the whole face, so it defines none).
EXPRESSION_GROUPS = {
    "blink": "eyelid closure, one unit per eye (left, right): what the blink generator drives",
    "gaze": "units that turn the eyes",
    "eyes": "every unit that moves the eyes or eyelids (blink, gaze, squint, widen): not predicted from speech",
    "mouth": "units that move the mouth, lips, jaw or tongue",
    "jaw_open": "units that open the jaw",
}


@dataclass
class RigAssets:
    """Everything needed to evaluate a rig, as numpy arrays (float32 / int64).

    Attributes:
        name: rig identifier, e.g. ``"open_head"`` or ``"flame2023"``.
        template: [V, 3] metres, neutral vertices in the canonical rig frame.
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside.
        shapedirs: [V, 3, S] metres per unit identity coefficient.
        exprdirs: [V, 3, E] metres per unit expression coefficient.
        expression_names: E names (ARKit names for the open head, ``"expr_000"``... for FLAME).
        shape_names: S names.
        joint_regressor: [J, V] rows sum to 1; joints = joint_regressor @ v_shaped.
        parents: [J] int64, parent joint index, -1 for the root (joint 0).
        weights: [V, J] skinning weights, rows sum to 1.
        joint_names: J names.
        semantic_joints: maps each of :data:`SEMANTIC_JOINTS` to a joint index.
        posedirs: optional [(J - 1) * 9, V * 3] pose-corrective blendshapes (FLAME).
        regions: named vertex index arrays, at least :data:`REQUIRED_REGIONS`.
        face_regions: optional named face index arrays (e.g. ``"mouth_interior"``).
        meta: free-form JSON-serialisable provenance (source package, version, licence) and
            ``expression_range`` ``[lo, hi]`` when the expression units are bounded (open head: [0, 1]);
            absent for unbounded components (FLAME).
        expression_groups: :data:`EXPRESSION_GROUPS` name -> expression indices; set by the rig's
            loader (not part of the checksum: it names units, it does not change the geometry).
    """

    name: str
    template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    expression_names: list[str]
    shape_names: list[str]
    joint_regressor: np.ndarray
    parents: np.ndarray
    weights: np.ndarray
    joint_names: list[str]
    semantic_joints: dict[str, int]
    posedirs: np.ndarray | None = None
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    face_regions: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    expression_groups: dict[str, list[int]] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent array."""
        V = self.template.shape[0]
        J = self.parents.shape[0]
        checks = [
            ("template", self.template.shape == (V, 3)),
            ("faces", self.faces.ndim == 2 and self.faces.shape[1] == 3
             and self.faces.min() >= 0 and self.faces.max() < V),
            ("shapedirs", self.shapedirs.shape[:2] == (V, 3)
             and self.shapedirs.shape[2] == len(self.shape_names)),
            ("exprdirs", self.exprdirs.shape[:2] == (V, 3)
             and self.exprdirs.shape[2] == len(self.expression_names)),
            ("joint_regressor", self.joint_regressor.shape == (J, V)),
            ("weights", self.weights.shape == (V, J)
             and np.allclose(self.weights.sum(1), 1.0, atol=1e-4)),
            ("parents", self.parents[0] == -1 and all(0 <= p < i for i, p in enumerate(self.parents[1:], 1))),
            ("joint_names", len(self.joint_names) == J),
            ("semantic_joints", set(self.semantic_joints) == set(SEMANTIC_JOINTS)
             and all(0 <= j < J for j in self.semantic_joints.values())),
            ("posedirs", self.posedirs is None or self.posedirs.shape == ((J - 1) * 9, V * 3)),
            ("regions", all(r in self.regions for r in REQUIRED_REGIONS)),
            ("expression_groups", set(self.expression_groups) <= set(EXPRESSION_GROUPS)
             and all(0 <= int(i) < len(self.expression_names) for g in self.expression_groups.values() for i in g)),
            ("meta", _valid_range(self.meta.get("expression_range"))),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"rig '{self.name}': inconsistent '{name}'")

    def checksum(self) -> str:
        """sha256 over every array and name list: identifies the exact rig an avatar was built on."""
        h = hashlib.sha256()
        for key in ("template", "faces", "shapedirs", "exprdirs", "joint_regressor", "parents", "weights"):
            a = np.ascontiguousarray(getattr(self, key))
            h.update(key.encode())
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
        if self.posedirs is not None:
            h.update(np.ascontiguousarray(self.posedirs).tobytes())
        h.update(json.dumps([self.name, self.expression_names, self.shape_names, self.joint_names,
                             self.semantic_joints], sort_keys=True).encode())
        return h.hexdigest()


def _valid_range(r) -> bool:
    return r is None or (isinstance(r, (list, tuple)) and len(r) == 2 and float(r[0]) < float(r[1]))


@dataclass
class RigParams:
    """Per-frame rig parameters, batched over B.  Rotations are axis-angle in radians.

    Attributes:
        shape: [B, S] identity coefficients.
        expression: [B, E] expression coefficients (open head: ARKit units, 0..1).
        global_rot: [B, 3] rotation of the whole head about the root joint.
        neck: [B, 3] rotation of the head relative to the neck base.
        jaw: [B, 3] jaw rotation (opening the mouth is a positive rotation about +x).
        eyes: [B, 2, 3] left then right eyeball rotation.
        translation: [B, 3] metres, added after skinning.
    """

    shape: torch.Tensor
    expression: torch.Tensor
    global_rot: torch.Tensor
    neck: torch.Tensor
    jaw: torch.Tensor
    eyes: torch.Tensor
    translation: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.expression.shape[0]

    def to(self, device) -> "RigParams":
        return RigParams(**{k: v.to(device) for k, v in self.__dict__.items()})


@dataclass
class RigOutput:
    """vertices: [B, V, 3] metres, posed.  joints: [B, J, 3] metres, posed joint locations."""

    vertices: torch.Tensor
    joints: torch.Tensor


class HeadRig(nn.Module):
    """Evaluates a :class:`RigAssets` bundle: parameters -> posed vertices.

    Use :func:`talksplat.rigs.load_rig` to get one by name ("open" or "flame:PATH").
    """

    def __init__(self, assets: RigAssets):
        super().__init__()
        assets.validate()
        self.assets = assets
        self.name = assets.name
        self.checksum = assets.checksum()
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("template", f32(assets.template))
        self.register_buffer("faces", torch.as_tensor(np.asarray(assets.faces, dtype=np.int64)))
        self.register_buffer("shapedirs", f32(assets.shapedirs))
        self.register_buffer("exprdirs", f32(assets.exprdirs))
        # The same bases as contiguous [S, V*3] / [E, V*3] matrices: one GEMM per evaluation.
        V = assets.template.shape[0]
        self.register_buffer("_shape_basis", self.shapedirs.reshape(V * 3, -1).T.contiguous(), persistent=False)
        self.register_buffer("_expr_basis", self.exprdirs.reshape(V * 3, -1).T.contiguous(), persistent=False)
        self.register_buffer("joint_regressor", f32(assets.joint_regressor))
        # Joints are linear in shape and expression: regress the bases once ([S|E, J*3]).
        Jr = np.asarray(assets.joint_regressor, np.float64)
        jt = Jr @ np.asarray(assets.template, np.float64)
        jsd = np.einsum("jv,vcs->sjc", Jr, np.asarray(assets.shapedirs, np.float64)).reshape(-1, Jr.shape[0] * 3)
        jed = np.einsum("jv,vcs->sjc", Jr, np.asarray(assets.exprdirs, np.float64)).reshape(-1, Jr.shape[0] * 3)
        self.register_buffer("_joint_template", f32(jt), persistent=False)
        self.register_buffer("_joint_shape_basis", f32(jsd), persistent=False)
        self.register_buffer("_joint_expr_basis", f32(jed), persistent=False)
        self.register_buffer("weights", f32(assets.weights))
        self.register_buffer("posedirs", f32(assets.posedirs) if assets.posedirs is not None else None)
        self.parents = [int(p) for p in assets.parents]
        self.joint_names = list(assets.joint_names)
        self.expression_names = list(assets.expression_names)
        self.shape_names = list(assets.shape_names)
        self.semantic_joints = dict(assets.semantic_joints)
        #: :data:`EXPRESSION_GROUPS` name -> expression indices (every name present; empty when not defined).
        self.expression_groups = {g: [int(i) for i in assets.expression_groups.get(g, ())] for g in EXPRESSION_GROUPS}
        r = assets.meta.get("expression_range")
        #: (lo, hi) of every expression unit when they are bounded (open head: (0, 1)); None when not (FLAME).
        self.expression_range = None if r is None else (float(r[0]), float(r[1]))
        for k, v in assets.regions.items():
            self.register_buffer(f"region_{k}", torch.as_tensor(np.asarray(v, dtype=np.int64)), persistent=False)
        self.region_names = sorted(assets.regions)
        self.face_region_names = sorted(assets.face_regions)
        for k, v in assets.face_regions.items():
            self.register_buffer(f"face_region_{k}", torch.as_tensor(np.asarray(v, dtype=np.int64)),
                                 persistent=False)

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def num_shape(self) -> int:
        return self.shapedirs.shape[2]

    @property
    def num_expression(self) -> int:
        return self.exprdirs.shape[2]

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    def region(self, name: str) -> torch.Tensor:
        """[K] int64 vertex indices of a named region ("face", "lips", "eyes", "teeth", "neck", ...)."""
        if name not in self.region_names:
            raise KeyError(f"rig '{self.name}' has no region '{name}' (has: {', '.join(self.region_names)})")
        return getattr(self, f"region_{name}")

    def face_region(self, name: str) -> torch.Tensor:
        """[K] int64 face indices of a named face region, if the rig defines it."""
        if name not in self.face_region_names:
            raise KeyError(f"rig '{self.name}' has no face region '{name}'")
        return getattr(self, f"face_region_{name}")

    def expression_group(self, name: str) -> list[int]:
        """Expression indices of a group of :data:`EXPRESSION_GROUPS` (empty when the rig does not define it)."""
        if name not in EXPRESSION_GROUPS:
            raise KeyError(f"no expression group '{name}' (groups: {', '.join(EXPRESSION_GROUPS)})")
        return list(self.expression_groups[name])

    def expression_index(self, name: str) -> int:
        try:
            return self.expression_names.index(name)
        except ValueError:
            raise KeyError(f"rig '{self.name}' has no expression '{name}'") from None

    def viseme_prior(self) -> dict[str, dict[str, float]] | None:
        """A hand-set mouth shape per viseme: viseme name (the MPEG-4 / Oculus set: ``"sil"``, ``"PP"``, ...,
        ``"U"``) -> {expression unit name: coefficient}, or None when the rig has none.

        Rigs with ARKit-named units (the open head) get :data:`~talksplat.rigs.visemes.ARKIT_VISEME_PRIOR`
        (ARKit coefficients 0..1; its ``jaw_open`` group's unit names the whole mouth opening, which callers
        split between the unit and the jaw rotation as the subject does); rigs without named units (FLAME)
        get None: their viseme shapes are learned from data only.  The audio predictor starts its viseme
        head there and pulls it towards it while the subject's data corrects it."""
        return arkit_viseme_prior(self.expression_names)

    # ------------------------------------------------------------------ params
    def zero_params(self, batch_size: int = 1, device=None) -> RigParams:
        """Neutral parameters: gives exactly the template (plus zero translation)."""
        device = device if device is not None else self.template.device
        z = lambda *s: torch.zeros(batch_size, *s, device=device)  # noqa: E731
        return RigParams(shape=z(self.num_shape), expression=z(self.num_expression), global_rot=z(3),
                         neck=z(3), jaw=z(3), eyes=z(2, 3), translation=z(3))

    # ------------------------------------------------------------------ evaluation
    def shaped_vertices(self, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """[B, V, 3] metres: template plus identity and expression blendshapes, unposed."""
        B, V = expression.shape[0], self.num_vertices
        # [B, S] @ [S, V*3] is one GEMM (an einsum over [V, 3, S] is several times slower).
        offsets = _linear(shape, self._shape_basis) + expression @ self._expr_basis
        return self.template[None] + offsets.reshape(B, V, 3)

    def rest_joints(self, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """[B, J, 3] metres: joint locations of the shaped, unposed mesh (regressed, linear)."""
        B, J = expression.shape[0], self.num_joints
        off = _linear(shape, self._joint_shape_basis) + expression @ self._joint_expr_basis
        return self._joint_template[None] + off.reshape(B, J, 3)

    def forward(self, params: RigParams) -> RigOutput:
        """Pose the rig.  Returns vertices [B, V, 3] and joints [B, J, 3], metres."""
        v_shaped = self.shaped_vertices(params.shape, params.expression)
        joints = self.rest_joints(params.shape, params.expression)
        return self._pose(params, v_shaped, joints, self.weights, self.posedirs)

    def restricted(self, vertex_ids: torch.Tensor) -> "RestrictedRig":
        """A rig that poses only `vertex_ids` ([K] int64) — identical values, much cheaper."""
        return RestrictedRig(self, vertex_ids)

    def surface_rig(self, face_idx: torch.Tensor, bary: torch.Tensor) -> "RestrictedRig":
        """A rig that poses only surface points (face index [L] + barycentrics [L, 3]) as vertices of
        their own — for fitting to landmarks; see :class:`RestrictedRig` for the approximation."""
        face_idx = torch.as_tensor(face_idx, dtype=torch.long, device=self.faces.device)
        corners = self.faces[face_idx]  # [L, 3]
        ids, inverse = torch.unique(corners.reshape(-1), return_inverse=True)
        M = torch.zeros(len(face_idx), len(ids), device=self.template.device)
        rows = torch.arange(len(face_idx), device=M.device)[:, None].expand(-1, 3).reshape(-1)
        M.index_put_((rows, inverse), torch.as_tensor(bary, device=M.device).float().reshape(-1), accumulate=True)
        return RestrictedRig(self, ids, M)

    def _pose(self, params: RigParams, v_shaped: torch.Tensor, joints: torch.Tensor, weights: torch.Tensor,
              posedirs: torch.Tensor | None) -> RigOutput:
        """Pose-corrective offsets and linear blend skinning of `v_shaped` [B, K, 3]; `weights` [K, J]."""
        B, J = params.batch_size, self.num_joints
        zero = torch.zeros(B, 3, dtype=v_shaped.dtype, device=v_shaped.device)
        cols = [zero] * J
        rots = [params.global_rot, params.neck, params.jaw, params.eyes[:, 0], params.eyes[:, 1]]
        for name, rot in zip(SEMANTIC_JOINTS, rots):
            j = self.semantic_joints[name]
            cols[j] = cols[j] + rot.to(v_shaped.dtype)
        aa = torch.stack(cols, dim=1)  # [B, J, 3] axis-angle per rig joint
        R = axis_angle_to_matrix(aa)  # [B, J, 3, 3]

        v_posed = v_shaped
        if posedirs is not None:
            eye = torch.eye(3, dtype=R.dtype, device=R.device)
            pose_feature = (R[:, 1:] - eye).reshape(B, -1)
            v_posed = v_posed + (pose_feature @ posedirs).reshape(B, -1, 3)

        # Forward kinematics: world transform of every joint.
        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, self.parents[1:]]
        G = []
        for j in range(J):
            T = _make_transform(R[:, j], rel[:, j])
            G.append(T if self.parents[j] < 0 else G[self.parents[j]] @ T)
        G = torch.stack(G, dim=1)  # [B, J, 4, 4]
        posed_joints = G[:, :, :3, 3]
        # Remove the rest-pose joint location so G maps rest-pose points to posed points.
        rest = torch.einsum("bjmn,bjn->bjm", G[:, :, :3, :3], joints)
        A = G.clone()
        A[:, :, :3, 3] = G[:, :, :3, 3] - rest

        # Skinning as two GEMM-shaped products: every vertex under every joint's [3, 4] transform
        # ([B, V, J*3]), then blended by the weights (cheaper than a [B, V, 4, 4] blend, fwd and bwd).
        V = v_posed.shape[1]
        vh = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], -1)  # [B, V, 4]
        per_joint = vh @ A[:, :, :3, :].reshape(B, J * 3, 4).transpose(1, 2)  # [B, V, J*3]
        verts = (per_joint.reshape(B, V, J, 3) * weights[None, :, :, None]).sum(2)
        t = params.translation[:, None]
        return RigOutput(vertices=verts + t, joints=posed_joints + t)

    # ------------------------------------------------------------------ surface points
    def surface_points(self, vertices: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        """Points attached to the surface (landmarks).

        Args:
            vertices: [B, V, 3] metres (posed).
            face_idx: [L] int64 face indices.
            bary: [L, 3] barycentric weights (rows sum to 1).
        Returns:
            [B, L, 3] metres.
        """
        tri = vertices[:, self.faces[face_idx]]  # [B, L, 3, 3]
        return (tri * bary[None, :, :, None].to(tri.dtype)).sum(2)


def _linear(coeffs: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """[B, S] @ [S, N]; a batch that is one row expanded (stride 0, e.g. a shared identity) is
    multiplied once."""
    if coeffs.shape[0] > 1 and coeffs.stride(0) == 0:
        return (coeffs[:1] @ basis).expand(coeffs.shape[0], -1)
    return coeffs @ basis


def _make_transform(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3], [B, 3] -> [B, 4, 4] rigid transform."""
    B = R.shape[0]
    T = torch.zeros(B, 4, 4, dtype=R.dtype, device=R.device)
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    T[:, 3, 3] = 1.0
    return T


class RestrictedRig(nn.Module):
    """Poses a few points of a :class:`HeadRig`: ``forward(params).vertices`` is [B, L, 3].

    Points are fixed linear combinations ``M [L, K]`` of rig vertices ``vertex_ids [K]``.  With
    ``M = I`` they are those vertices, exactly ``rig(params).vertices[:, vertex_ids]``.  Surface points
    (rows of barycentric weights) are posed as vertices of their own, with blended template, bases
    and skinning weights: exact where the triangle's corners share skinning weights, the usual
    linear-blend approximation elsewhere.  Joints are the full rig's.
    """

    def __init__(self, rig: HeadRig, vertex_ids: torch.Tensor, combination: torch.Tensor | None = None):
        super().__init__()
        self.rig = rig
        dev = rig.template.device
        ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=dev)
        K = ids.shape[0]
        M = torch.eye(K, device=dev) if combination is None else torch.as_tensor(combination, device=dev).float()
        cols = (ids[:, None] * 3 + torch.arange(3, device=dev)).reshape(-1)

        def mix(basis: torch.Tensor) -> torch.Tensor:  # [N, V*3] -> [N, L*3]
            b = basis[:, cols].reshape(basis.shape[0], K, 3)
            return torch.einsum("lk,nkc->nlc", M, b).reshape(basis.shape[0], -1).contiguous()

        self.register_buffer("vertex_ids", ids)
        self.register_buffer("template", M @ rig.template[ids])
        self.register_buffer("_shape_basis", mix(rig._shape_basis))
        self.register_buffer("_expr_basis", mix(rig._expr_basis))
        self.register_buffer("weights", M @ rig.weights[ids])
        self.register_buffer("posedirs", None if rig.posedirs is None else mix(rig.posedirs))

    def forward(self, params: RigParams) -> RigOutput:
        B, L = params.batch_size, self.template.shape[0]
        offsets = _linear(params.shape, self._shape_basis) + params.expression @ self._expr_basis
        v_shaped = self.template[None] + offsets.reshape(B, L, 3)
        joints = self.rig.rest_joints(params.shape, params.expression)
        return self.rig._pose(params, v_shaped, joints, self.weights, self.posedirs)
