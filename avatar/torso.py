"""The torso: Gaussians bound to a bust proxy under the neck, posed by the head's smoothed, attenuated motion.

A head rig ends at the base of the neck (the open head is cut there; FLAME ends a little higher).  The torso
Gaussians bind to the triangles of a generated **bust proxy**: an open shell (the front two thirds of an
elliptic cylinder, seen from the camera) that starts at the rig's lowest neck ring and widens to the
shoulders and down the chest.  One proxy for every rig, made from the rig's ``neck`` region only, so no rig is
named here.  The proxy is rigid; it is posed per frame by the **torso pose**: the rig's root ("global") joint
motion, smoothed over time (causally, :data:`SMOOTH_S`) and with only a fraction of its rotation
(:data:`FOLLOW`), so the shoulders follow the head weakly (as ER-NeRF's torso branch does) and never nod with it.

Shapes and units: proxy vertices [P, 3] metres in the rig's canonical frame (+y up, +z out of the face),
relative to the root joint at rest; faces [Fp, 3] int64 (counter-clockwise seen from outside); torso poses
[B, 4, 4] rigid transforms from those root-relative coordinates to the world (metres).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from talksplat.render.rotation import axis_angle_to_matrix

#: Share of the head's (smoothed) root rotation the torso takes (translation: all of it, smoothed).
FOLLOW = 0.3
#: Time constant of the torso pose's smoothing over time, seconds: a causal exponential filter, so the shoulders
#: follow the head (after it, never before it).
SMOOTH_S = 0.25
#: Bust proxy: half-width of the shoulders and half-depth of the chest, metres (an adult's; the Gaussians
#: move off it where the subject differs).
SHOULDER_HALF_WIDTH = 0.19
CHEST_HALF_DEPTH = 0.11
#: Heights of the proxy's rings below the lowest neck ring, metres, and their segments around the body.
RING_DROPS = (0.0, 0.015, 0.035, 0.06, 0.09, 0.13, 0.18, 0.24, 0.31, 0.40)
SEGMENTS = 28
#: The proxy covers the front of the body: angles within this many degrees of +z (the camera side).
ARC_DEG = 125.0


def bust_proxy(vertices: np.ndarray, neck: np.ndarray, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bust proxy of a rig at rest.

    Args:
        vertices: [V, 3] metres, the rig's rest vertices (canonical frame).  neck: [K] int, the ``neck`` region's
            vertex indices.  root: [3] metres, the root joint at rest.
    Returns:
        proxy vertices [P, 3] metres relative to ``root``; faces [Fp, 3] int64, counter-clockwise seen from
        outside (their normals point away from the body).
    """
    v = np.asarray(vertices, np.float64)[np.asarray(neck)]
    if len(v) < 3:
        raise ValueError("the rig's neck region has fewer than 3 vertices")
    y0 = float(v[:, 1].min())
    ring = v[v[:, 1] <= y0 + 0.015]  # the lowest ring of the neck (1.5 cm band)
    cx, cz = float(ring[:, 0].mean()), float(ring[:, 2].mean())
    rx = max(0.03, float(np.abs(ring[:, 0] - cx).max()))
    rz = max(0.03, float(np.abs(ring[:, 2] - cz).max()))
    top = float(ring[:, 1].mean())
    half = math.radians(ARC_DEG)
    angles = np.linspace(-half, half, SEGMENTS + 1)  # 0 = +z (front), positive towards +x
    rows = []
    for d in RING_DROPS:
        w = _smoothstep(d / 0.09)  # shoulders reached 9 cm below the neck, the chest's depth by 12 cm
        a = rx + (SHOULDER_HALF_WIDTH - rx) * w
        b = rz + (CHEST_HALF_DEPTH - rz) * _smoothstep(d / 0.12)
        y = top - d + 0.02 * w * (np.cos(angles) ** 2 - 1)  # the shoulders slope down to the sides
        rows.append(np.stack([cx + a * np.sin(angles), y, cz + b * np.cos(angles)], -1))
    P = np.concatenate(rows) - np.asarray(root, np.float64)
    n = SEGMENTS + 1
    faces = []
    for r in range(len(RING_DROPS) - 1):
        for s in range(SEGMENTS):
            a, b, c, d = r * n + s, r * n + s + 1, (r + 1) * n + s, (r + 1) * n + s + 1
            # outward normals: rows go down (-y), segments towards +x around the front
            faces += [(a, c, b), (b, c, d)]
    return P.astype(np.float32), np.asarray(faces, np.int64)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def torso_poses(global_rot: torch.Tensor, root: torch.Tensor, fps: float | None = None,
                follow: float = FOLLOW, smooth_s: float = SMOOTH_S) -> torch.Tensor:
    """[T, 4, 4]: the torso pose of each frame, from the head's root motion.

    Args:
        global_rot: [T, 3] axis-angle, the rig's root rotation per frame.  root: [T, 3] metres, the posed root
            joint (``rig(params).joints[:, global joint]``).  fps: frames per second of a sequence, to smooth over
            time (causal, exponential with time constant ``smooth_s`` seconds, from the first frame's pose); None:
            frame by frame (no smoothing).
        follow: the share of the rotation the torso takes.
    Returns:
        [T, 4, 4]: rotation exp(follow * smoothed axis-angle), translation the smoothed root (so proxy coordinates
        relative to the rest root map to the world).
    """
    aa, pos = global_rot.float(), root.float()
    if fps is not None and len(aa) > 1 and smooth_s > 0:
        aa, pos = _smooth(aa, fps * smooth_s), _smooth(pos, fps * smooth_s)
    T = torch.zeros(len(aa), 4, 4, dtype=aa.dtype, device=aa.device)
    T[:, :3, :3] = axis_angle_to_matrix(aa * follow)
    T[:, :3, 3] = pos
    T[:, 3, 3] = 1.0
    return T


def _smooth(x: torch.Tensor, tau: float) -> torch.Tensor:
    """[T, C] smoothed over T causally: y_t = y_{t-1} + a (x_t - y_{t-1}), a = 1 - exp(-1 / ``tau`` frames),
    y_0 = x_0 (as a truncated exponential kernel, one convolution)."""
    a = 1.0 - math.exp(-1.0 / max(tau, 1e-6))
    r = max(1, int(math.ceil(6 * tau)))
    k = a * (1 - a) ** torch.arange(r, dtype=x.dtype, device=x.device)  # weight of x_{t-j}
    k = torch.flip(k / k.sum(), [0])  # conv1d correlates: oldest first
    padded = torch.cat([x[:1].expand(r - 1, -1), x])  # [T + r - 1, C]: the first pose held before the start
    return torch.nn.functional.conv1d(padded.T[:, None], k[None, None])[:, 0].T


def posed_bust(proxy: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """[B, P, 3] metres: the proxy's vertices ([P, 3], root-relative) under the torso poses [B, 4, 4]."""
    return torch.einsum("bij,pj->bpi", poses[:, :3, :3], proxy.to(poses.dtype)) + poses[:, None, :3, 3]


def rig_torso_poses(rig, params, joints: torch.Tensor, fps: float | None = None) -> torch.Tensor:
    """[B, 4, 4] torso poses of B frames posed by ``params`` (a :class:`~talksplat.rigs.base.RigParams`):
    :func:`torso_poses` of their root rotation and posed root joint (``joints`` [B, J, 3], the rig's output);
    ``fps``: the B frames are a sequence, smoothed over time."""
    return torso_poses(params.global_rot, joints[:, rig.semantic_joints["global"]], fps)


def sequence_torso_poses(rig, params, fps: float) -> torch.Tensor:
    """[T, 4, 4] torso poses of a whole sequence (``params``: :class:`~talksplat.rigs.base.RigParams` of T frames
    at ``fps``), smoothed over time; only the rig's joints are posed (no vertices), without gradients."""
    joints_only = rig.restricted(torch.zeros(0, dtype=torch.long, device=rig.template.device))
    with torch.no_grad():
        joints = joints_only(params).joints
    return rig_torso_poses(rig, params, joints, fps).detach()


def rest_torso_pose(rig, vertices: torch.Tensor) -> torch.Tensor:
    """[1, 4, 4]: the torso pose of an unposed head (``vertices`` [V, 3] metres, the rig's rest mesh of some
    identity): no rotation, the root joint regressed from those vertices."""
    root = rig.joint_regressor[rig.semantic_joints["global"]].to(vertices) @ vertices  # [3]
    return torso_poses(torch.zeros(1, 3, dtype=vertices.dtype, device=vertices.device), root[None])
