"""Head tracking: fit a rig to 2D landmarks over a whole clip, batched over frames.

Unknowns: identity shape (shared by all frames), per-frame expression, jaw, neck, eyes, head
rotation and translation, and for monocular video one focal length.  Cameras are fixed (calibrated
multi-view) or the single camera sits at the world origin (monocular; see :data:`MONO_C2W`).

Loss: robust landmark reprojection error in units of the face size (detected inter-ocular distance),
plus priors on shape / expression / jaw / neck / eyes and temporal smoothness.  All frames are optimised
together with Adam on a :class:`~talksplat.rigs.base.RestrictedRig` that poses only the vertices the
landmarks touch, so a step over hundreds of frames costs milliseconds.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from talksplat.core.errors import TalksplatError
from talksplat.rigs.base import HeadRig, RigParams
from talksplat.rigs.sequence import RigSequence

from .config import TrackingConfig
from .embedding import LandmarkEmbedding
from .landmarks import FACE_OVAL, NUM_LANDMARKS, OUTER_EYE_CORNERS

#: Monocular world frame: camera at the origin looking down world -z, world y up (the rig's
#: frame: y up, face towards +z), written as an OpenCV camera-to-world matrix.
MONO_C2W = np.diag([1.0, -1.0, -1.0, 1.0])


class TrackingError(TalksplatError):
    """Tracking could not start (no usable frames, bad inputs)."""


@dataclass
class TrackingResult:
    """shape [S]; params: arrays with leading T (RigParams fields); focal: px (monocular) or None;
    error [C, T]: mean landmark distance / inter-ocular distance (nan where not observed)."""

    shape: np.ndarray
    params: dict[str, np.ndarray]
    focal: float | None
    error: np.ndarray
    error_px: np.ndarray
    history: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase of :func:`track` (summed over the runs of :func:`track_clip`)."""

    def sequence(self) -> RigSequence:
        """The tracked parameters as a :class:`RigSequence` (T frames)."""
        return RigSequence(self.shape, self.params, source="tracking")

    def rig_params(self, device=None) -> RigParams:
        return self.sequence().to_params(device)


class Adam:
    """Plain Adam over parameter groups ``[{"params": [...], "lr": x}]``.

    ``torch.optim`` would do, but its first use imports torch._dynamo (about 1.5 s on our 2-core
    machines), which is a third of a short clip's whole tracking time.
    """

    def __init__(self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.groups = groups
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.t = 0
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in groups for p in g["params"]}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for g in self.groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                m, v = self.state[id(p)]
                m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-g["lr"] / c1)


def project(points: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """[T, L, 3] world metres -> [C, T, L, 2] pixels for C cameras (viewmats [C, 4, 4], Ks [C, 3, 3])."""
    cam = torch.einsum("cij,tlj->ctli", viewmats[:, :3, :3], points) + viewmats[:, None, None, :3, 3]
    z = cam[..., 2:3].clamp(min=1e-4)
    uv = cam[..., :2] / z
    return uv * Ks[:, None, None, [0, 1], [0, 1]] + Ks[:, None, None, :2, 2]


def _landmark_weights() -> torch.Tensor:
    w = torch.ones(NUM_LANDMARKS)
    w[list(FACE_OVAL)] = 0.3
    return w


def _pnp_init(model_pts: np.ndarray, uv: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rigid pose (rig -> camera) from 2D-3D correspondences: R [3, 3], t [3], rms px error."""
    import cv2

    ok, rvec, tvec = cv2.solvePnP(model_pts.astype(np.float64), uv.astype(np.float64), K.astype(np.float64),
                                  None, flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(model_pts.astype(np.float64), uv.astype(np.float64),
                                      K.astype(np.float64), None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:
        return np.eye(3), np.array([0, 0, 1.0]), float("inf")
    proj, _ = cv2.projectPoints(model_pts.astype(np.float64), rvec, tvec, K.astype(np.float64), None)
    rms = float(np.sqrt(((proj[:, 0] - uv) ** 2).sum(1).mean()))
    return cv2.Rodrigues(rvec)[0], tvec[:, 0], rms


def _matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(R, np.float64))[0][:, 0]


class _LandmarkModel:
    """The rig's 478 landmarks posed by :class:`RigParams`: [T, L, 3] metres.

    Optimisation uses the landmarks posed as vertices of their own (a surface rig, cheap); reports
    use the exact points on the posed mesh (``precise``)."""

    def __init__(self, rig: HeadRig, embedding: LandmarkEmbedding, device: torch.device):
        self.fast = rig.surface_rig(embedding.face_idx, embedding.bary)
        vids = embedding.vertex_ids(rig)
        self.exact = rig.restricted(torch.as_tensor(vids, device=device))
        remap = np.full(rig.num_vertices, -1, np.int64)
        remap[vids] = np.arange(len(vids))
        self.tris = torch.as_tensor(remap[rig.faces.cpu().numpy()[embedding.face_idx]], device=device)  # [L, 3]
        self.bary = torch.as_tensor(embedding.bary, dtype=torch.float32, device=device)

    def __call__(self, p: RigParams, precise: bool = False) -> torch.Tensor:
        if not precise:
            return self.fast(p).vertices
        v = self.exact(p).vertices  # [T, K, 3]
        return (v[:, self.tris] * self.bary[None, :, :, None]).sum(2)


def _neutral_landmarks(rig: HeadRig, model: _LandmarkModel, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The neutral head's landmarks [L, 3] and its root joint [3] (metres, rig frame), float64."""
    with torch.no_grad():
        neutral = model(rig.zero_params(1, device=device), precise=True)[0].cpu().numpy().astype(np.float64)
        root = rig.rest_joints(torch.zeros(1, rig.num_shape, device=device),
                               torch.zeros(1, rig.num_expression, device=device))[0, rig.semantic_joints["global"]]
    return neutral, root.cpu().numpy().astype(np.float64)


def _guess_focal(neutral: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, Ks: np.ndarray,
                 image_sizes: list[tuple[int, int]]) -> np.ndarray:
    """Ks [C, 3, 3] with the one focal length that explains the first observed frames best under a rigid
    neutral head (PnP at eight focal lengths)."""
    c0 = int(np.flatnonzero(valid.any(1))[0])
    frames = np.flatnonzero(valid[c0])[:: max(1, int(valid[c0].sum()) // 8)][:8]
    best = None
    for scale in (0.6, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2):
        K = Ks[c0].copy()
        K[0, 0] = K[1, 1] = scale * max(image_sizes[c0])
        err = np.mean([_pnp_init(neutral, landmarks[c0, t], K)[2] for t in frames])
        if best is None or err < best[0]:
            best = (err, K[0, 0])
    Ks = Ks.copy()
    Ks[:, 0, 0] = Ks[:, 1, 1] = best[1]
    return Ks


def _initial_poses(neutral: np.ndarray, root: np.ndarray, landmarks: np.ndarray, valid: np.ndarray,
                   Ks: np.ndarray, viewmats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid head pose per time step, global_rot [T, 3] and translation [T, 3]: PnP of the neutral
    landmarks in one camera that sees it; time steps without an observation copy the nearest one."""
    T = valid.shape[1]
    rot0 = np.zeros((T, 3))
    trans0 = np.zeros((T, 3))
    have = np.zeros(T, bool)
    for t in range(T):
        cams = np.flatnonzero(valid[:, t])
        if len(cams) == 0:
            continue
        c = int(cams[0])
        R, tc, rms = _pnp_init(neutral, landmarks[c, t], Ks[c])
        if not np.isfinite(rms):
            continue
        c2w = np.linalg.inv(viewmats[c])
        Rw = c2w[:3, :3] @ R
        tw = c2w[:3, :3] @ tc + c2w[:3, 3]
        rot0[t] = _matrix_to_axis_angle(Rw)
        trans0[t] = tw + Rw @ root - root
        have[t] = True
    if not have.any():
        raise TrackingError("could not initialise the head pose in any frame")
    idx = np.flatnonzero(have)
    for t in np.flatnonzero(~have):  # frames without an observation: nearest initialised frame
        n = idx[np.abs(idx - t).argmin()]
        rot0[t], trans0[t] = rot0[n], trans0[n]
    return rot0, trans0


class _Objective:
    """The unknowns of one tracking run (identity shape, per-frame expression, jaw, neck, eyes, head
    pose, the focal length) and the loss: robust landmark reprojection error plus priors and
    temporal smoothness."""

    def __init__(self, rig: HeadRig, model: _LandmarkModel, landmarks: np.ndarray, valid: np.ndarray,
                 Ks: np.ndarray, viewmats: np.ndarray, rot0: np.ndarray, trans0: np.ndarray, cfg: TrackingConfig,
                 device: torch.device, fit_focal: bool, shape_init: np.ndarray | None, fit_shape: bool,
                 temporal: bool):
        self.rig, self.model, self.cfg = rig, model, cfg
        self.fit_focal, self.fit_shape, self.temporal = fit_focal, fit_shape, temporal
        T = valid.shape[1]
        self.T = T
        self.S = S = min(cfg.num_shape, rig.num_shape)
        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        self.obs = obs = f32(landmarks)  # [C, T, L, 2]
        self.mask = mask = f32(valid)  # [C, T]
        iod = torch.linalg.norm(obs[:, :, OUTER_EYE_CORNERS[0]] - obs[:, :, OUTER_EYE_CORNERS[1]], dim=-1)
        self.iod = torch.where(mask > 0, iod.clamp(min=1.0), torch.ones_like(iod))  # [C, T]
        self.lw = _landmark_weights().to(device)
        self.lw[list(FACE_OVAL)] = cfg.contour_weight
        self.vm = f32(viewmats)
        self.log_f0 = math.log(Ks[0, 0, 0])
        self.log_f = torch.tensor(self.log_f0, device=device, requires_grad=fit_focal)
        self.Ks = f32(Ks)

        self.shape = torch.zeros(S, device=device) if shape_init is None else f32(shape_init[:S]).clone()
        self.shape.requires_grad_(fit_shape)
        self.expr = torch.zeros(T, rig.num_expression, device=device, requires_grad=True)
        self.rot = f32(rot0).requires_grad_(True)
        self.trans = f32(trans0).requires_grad_(True)
        self.jaw = torch.zeros(T, 3, device=device, requires_grad=True)
        self.neck = torch.zeros(T, 3, device=device, requires_grad=True)
        self.eyes = torch.zeros(T, 2, 3, device=device, requires_grad=True)
        self.lo, self.hi = rig.expression_range or (None, None)
        self.jaw_open_dir = torch.tensor([1.0, 0.0, 0.0], device=device)

    def params(self) -> RigParams:
        full_shape = torch.nn.functional.pad(self.shape, (0, self.rig.num_shape - self.S))[None].expand(self.T, -1)
        return RigParams(shape=full_shape, expression=self.expr, global_rot=self.rot, neck=self.neck, jaw=self.jaw,
                         eyes=self.eyes, translation=self.trans)

    def cameras(self) -> torch.Tensor:
        """Ks [C, 3, 3] with the current focal length."""
        if not self.fit_focal:
            return self.Ks
        K = self.Ks.clone()
        f = self.log_f.exp()
        K[:, 0, 0] = f
        K[:, 1, 1] = f
        return K

    def data_term(self, precise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(robust mean landmark error, distances [C, T, L] in inter-ocular units)."""
        uv = project(self.model(self.params(), precise), self.vm, self.cameras())  # [C, T, L, 2]
        d = torch.linalg.norm(uv - self.obs, dim=-1) / self.iod[..., None]  # [C, T, L] in inter-ocular units
        s = self.cfg.robust_scale
        rho = torch.sqrt(1 + (d / s) ** 2) - 1  # ~ (d/s)^2 / 2 below s, ~ |d|/s above
        per = (rho * self.lw).sum(-1) / self.lw.sum()
        return (per * self.mask).sum() / self.mask.sum(), d

    def loss(self, full: bool) -> torch.Tensor:
        """The rigid phase's loss (landmarks, pose smoothness, focal prior), with ``full`` the priors on
        everything else too."""
        cfg = self.cfg
        expr, jaw, neck, eyes, shape = self.expr, self.jaw, self.neck, self.eyes, self.shape
        loss, _ = self.data_term()
        if self.temporal:
            loss = loss + cfg.w_smooth_pose * (_smooth(self.rot, 2) + 10.0 * _smooth(self.trans, 2))
        if self.fit_focal:
            loss = loss + cfg.w_focal * (self.log_f - self.log_f0) ** 2
        if full:
            loss = loss + cfg.w_shape * (shape ** 2).sum() / self.S
            loss = loss + cfg.w_expression * (expr ** 2).sum(1).mean()
            if self.lo is not None:
                out = torch.relu(self.lo - expr) + torch.relu(expr - self.hi)
                loss = loss + cfg.w_expression_bounds * (out ** 2).sum(1).mean()
            # Jaw: mostly opening (about +x), never much backwards or sideways.
            along = jaw @ self.jaw_open_dir
            side = jaw - along[:, None] * self.jaw_open_dir
            loss = loss + cfg.w_jaw * (along ** 2).mean() + 100 * cfg.w_jaw * (side ** 2).sum(1).mean()
            loss = loss + 10 * cfg.w_jaw * torch.relu(-along - 0.02).pow(2).mean()
            loss = loss + cfg.w_neck * (neck ** 2).sum(1).mean()
            loss = loss + cfg.w_eyes * (eyes ** 2).sum((1, 2)).mean()
            loss = loss + cfg.w_eyes * 10 * ((eyes[:, 0] - eyes[:, 1]) ** 2).sum(1).mean()
            if self.temporal:
                loss = loss + cfg.w_smooth_expression * (_smooth(expr, 1) + _smooth(jaw, 1) + _smooth(eyes, 1))
        return loss

    def rigid_groups(self) -> list[dict]:
        """Adam groups of the rigid phase: head pose (and the focal length)."""
        lr = self.cfg.lr
        return [{"params": [self.rot, self.trans], "lr": lr}] + (
            [{"params": [self.log_f], "lr": lr / 2}] if self.fit_focal else [])

    def full_groups(self) -> list[dict]:
        """Adam groups of the full phase: the rigid ones, the per-frame units (and the identity)."""
        lr = self.cfg.lr
        return (self.rigid_groups() + [{"params": [self.expr, self.jaw, self.neck, self.eyes], "lr": lr}]
                + ([{"params": [self.shape], "lr": lr / 2}] if self.fit_shape else []))

    @torch.no_grad()
    def errors(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean landmark distance per camera and time step on the exact surface: [C, T] in inter-ocular
        units and [C, T] pixels."""
        _, d = self.data_term(precise=True)
        return (d.mean(-1)).cpu().numpy(), (d * self.iod[..., None]).mean(-1).cpu().numpy()


def _smooth(x: torch.Tensor, order: int) -> torch.Tensor:
    """Mean squared ``order``-th difference over time (the first axis)."""
    for _ in range(order):
        x = x[1:] - x[:-1]
    return (x ** 2).mean() if x.shape[0] else x.sum() * 0


def _optimise(objective: _Objective, groups: list[dict], iters: int, full: bool, history: list[float],
              on_step=None) -> None:
    """``iters`` Adam steps on ``objective.loss(full)``, the learning rates decaying linearly to 10 %
    (settles instead of jittering); each loss appended to ``history``, ``on_step()`` after each step."""
    opt = Adam(groups)
    base = [g["lr"] for g in groups]
    for i in range(iters):
        for g, lr in zip(opt.groups, base):
            g["lr"] = lr * (1 - 0.9 * i / max(1, iters - 1))
        opt.zero_grad(set_to_none=True)
        loss = objective.loss(full)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if on_step is not None:
            on_step()


class _Phases:
    """Wall seconds per named phase: ``with phases("rigid"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def track(rig: HeadRig, embedding: LandmarkEmbedding, landmarks: np.ndarray, valid: np.ndarray,
          Ks: np.ndarray, viewmats: np.ndarray, image_sizes: list[tuple[int, int]], fit_focal: bool = False,
          cfg: TrackingConfig | None = None, device: str | torch.device = "cpu", progress=None,
          shape_init: np.ndarray | None = None, fit_shape: bool = True, temporal: bool = True) -> TrackingResult:
    """Fit the rig to landmarks, all time steps at once (see :func:`track_clip` for long clips).

    Phases (their wall times in ``TrackingResult.timings``): ``setup`` (the landmark model, the neutral
    head), ``focal`` (a first focal length, monocular), ``poses`` (PnP head pose per frame), ``rigid``
    (Adam on the head pose and focal length), ``full`` (Adam on everything), ``error`` (the final
    landmark errors on the exact surface).

    Args:
        landmarks: [C, T, 478, 2] pixels (undistorted), per camera and time step.
        valid: [C, T] bool, landmarks observed.
        Ks: [C, 3, 3] pixels (monocular with ``fit_focal``: the initial guess).
        viewmats: [C, 4, 4] world-to-camera, OpenCV.
        image_sizes: [(width, height)] per camera.
        fit_focal: optimise one focal length shared by all cameras (monocular).
        progress: optional callable(step, total).
        shape_init: [S_rig] identity to start from (default zeros); ``fit_shape=False`` keeps it.
        temporal: smoothness terms between consecutive time steps (off for unordered key frames).
    """
    cfg = cfg or TrackingConfig()
    device = torch.device(device)
    C, T = valid.shape
    if landmarks.shape != (C, T, NUM_LANDMARKS, 2):
        raise TrackingError(f"landmarks must be [C, T, {NUM_LANDMARKS}, 2], got {list(landmarks.shape)}")
    if not valid.any():
        raise TrackingError("no frame has landmarks")

    phase = _Phases()
    with phase("setup"):
        rig = rig.to(device)
        model = _LandmarkModel(rig, embedding, device)
        neutral, root = _neutral_landmarks(rig, model, device)
    Ks = np.asarray(Ks, np.float64)
    viewmats = np.asarray(viewmats, np.float64)
    if fit_focal:
        with phase("focal"):
            Ks = _guess_focal(neutral, landmarks, valid, Ks, image_sizes)
    with phase("poses"):
        rot0, trans0 = _initial_poses(neutral, root, landmarks, valid, Ks, viewmats)

    objective = _Objective(rig, model, landmarks, valid, Ks, viewmats, rot0, trans0, cfg, device, fit_focal,
                           shape_init, fit_shape, temporal)
    history: list[float] = []
    total = cfg.rigid_iters + cfg.full_iters

    def on_step() -> None:
        if progress is not None:
            progress(len(history), total)

    with phase("rigid"):
        _optimise(objective, objective.rigid_groups(), cfg.rigid_iters, full=False, history=history,
                  on_step=on_step)
    with phase("full"):
        _optimise(objective, objective.full_groups(), cfg.full_iters, full=True, history=history,
                  on_step=on_step)

    with phase("error"):
        err, err_px = objective.errors()
    err[~valid] = np.nan
    err_px[~valid] = np.nan
    seq = RigSequence.from_params(objective.params())
    return TrackingResult(shape=seq.shape, params=seq.frames,
                          focal=float(objective.log_f.detach().exp()) if fit_focal else None, error=err,
                          error_px=err_px, history=history, timings=phase.seconds)


def _window_weights(s0: int, s1: int, T: int, overlap: int) -> np.ndarray:
    """[s1 - s0] cross-fade weights of the window [s0, s1) of a T-step clip: ramps over ``overlap``
    steps where it overlaps the previous and the next window, 1 elsewhere."""
    n = s1 - s0
    w = np.ones(n)
    ramp = min(overlap, n)
    if s0 > 0:
        w[:ramp] = (np.arange(ramp) + 0.5) / ramp  # fade in over the overlap with the previous window
    if s1 < T:
        w[-ramp:] = np.minimum(w[-ramp:], (ramp - np.arange(ramp) - 0.5) / ramp)
    return w


def track_clip(rig: HeadRig, embedding: LandmarkEmbedding, landmarks: np.ndarray, valid: np.ndarray,
               Ks: np.ndarray, viewmats: np.ndarray, image_sizes: list[tuple[int, int]], fit_focal: bool = False,
               cfg: TrackingConfig | None = None, device: str | torch.device = "cpu",
               progress=None) -> TrackingResult:
    """Track a clip of any length (same arguments as :func:`track`).

    Up to ``cfg.window`` time steps are fitted jointly.  Longer clips: identity (and focal length)
    first from up to ``cfg.keyframes`` evenly spaced frames, then overlapping windows of
    ``cfg.window`` steps with the identity fixed, cross-faded over their overlap.  Memory and the
    cost per frame stay flat however long the clip is.  ``timings``: :func:`track`'s phases summed,
    prefixed ``keyframes_`` and ``windows_``.
    """
    cfg = cfg or TrackingConfig()
    C, T = valid.shape
    if T <= cfg.window:
        return track(rig, embedding, landmarks, valid, Ks, viewmats, image_sizes, fit_focal, cfg, device, progress)
    seen = np.flatnonzero(valid.any(0))
    if len(seen) == 0:
        raise TrackingError("no frame has landmarks")
    keys = seen[np.linspace(0, len(seen) - 1, min(cfg.keyframes, len(seen))).round().astype(int)]
    step = cfg.window - cfg.overlap
    starts = list(range(0, T - cfg.overlap, step))
    per_run = cfg.rigid_iters + cfg.full_iters
    win_cfg = replace(cfg, rigid_iters=max(1, cfg.rigid_iters // 2))
    total = per_run + len(starts) * (win_cfg.rigid_iters + win_cfg.full_iters)
    done = 0

    def sub_progress(n_before: int):
        return None if progress is None else (lambda s, _n: progress(n_before + s, total))

    key = track(rig, embedding, landmarks[:, keys], valid[:, keys], Ks, viewmats, image_sizes, fit_focal, cfg,
                device, sub_progress(0), temporal=False)
    done += per_run
    Ks = np.array(Ks, np.float64)
    if fit_focal:
        Ks[:, 0, 0] = Ks[:, 1, 1] = key.focal
    params = {k: np.zeros((T,) + v.shape[1:], np.float32) for k, v in key.params.items()}
    weight = np.zeros(T)
    error = np.full((C, T), np.nan, np.float32)
    error_px = np.full((C, T), np.nan, np.float32)
    history = list(key.history)
    timings = {f"keyframes_{k}": v for k, v in key.timings.items()}
    for s0 in starts:
        s1 = min(T, s0 + cfg.window)
        if not valid[:, s0:s1].any():
            done += win_cfg.rigid_iters + win_cfg.full_iters
            continue
        res = track(rig, embedding, landmarks[:, s0:s1], valid[:, s0:s1], Ks, viewmats, image_sizes, False,
                    win_cfg, device, sub_progress(done), shape_init=key.shape, fit_shape=False)
        done += win_cfg.rigid_iters + win_cfg.full_iters
        w = _window_weights(s0, s1, T, cfg.overlap)
        for k, v in res.params.items():
            params[k][s0:s1] += w.reshape((-1,) + (1,) * (v.ndim - 1)) * v
        weight[s0:s1] += w
        better = ~np.isnan(res.error) & (np.isnan(error[:, s0:s1]) | (w[None] >= 0.5))
        error[:, s0:s1] = np.where(better, res.error, error[:, s0:s1])
        error_px[:, s0:s1] = np.where(better, res.error_px, error_px[:, s0:s1])
        history += res.history
        for k, v in res.timings.items():
            timings[f"windows_{k}"] = timings.get(f"windows_{k}", 0.0) + v
    # Time steps no window covered with an observation: hold the nearest covered one.
    covered = np.flatnonzero(weight > 0)
    for k in params:
        params[k][covered] /= weight[covered].reshape((-1,) + (1,) * (params[k].ndim - 1))
        for t in np.flatnonzero(weight == 0):
            params[k][t] = params[k][covered[np.abs(covered - t).argmin()]]
    # Axis-angle blends are fine for the small differences between overlapping windows' estimates.
    return TrackingResult(shape=key.shape, params=params, focal=key.focal, error=error, error_px=error_px,
                          history=history, timings=timings)
