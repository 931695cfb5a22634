"""The viewer's renderer: a browser camera (viser) -> our camera -> a rendered avatar frame, and the
per-browser render thread.

viser reports each browser's camera as a camera-to-world rotation ``wxyz`` (a unit quaternion) and
a ``position`` in world metres, in OpenCV axes (camera x right, y down, z forward: viser's
``CameraHandle.wxyz`` is the R of ``P_world = R p_camera + t``), a vertical field of view in
radians and the canvas aspect ratio.  We turn that into the rasterizer's world-to-camera
``viewmat [4, 4]`` and intrinsics ``K [3, 3]`` (pixels, principal point at the image centre) at a
size whose longer side is the requested resolution.

:class:`RenderLoop` is nerfview's pattern: one thread per browser that renders only the newest
request (stale ones are dropped while a frame is being rendered), renders at the interactive
resolution while things move and once more at full resolution when they stop.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

MIN_RESOLUTION = 16
MAX_RESOLUTION = 1024


def viser_to_viewmat(wxyz, position) -> np.ndarray:
    """viser camera pose -> our world-to-camera matrix.

    Args:
        wxyz: [4] camera-to-world rotation as a unit quaternion (OpenCV camera axes).
        position: [3] camera centre, metres, world.
    Returns:
        viewmat [4, 4] float64, world-to-camera (OpenCV: x right, y down, z forward).
    """
    from talksplat.render.rotation import quat_to_rotmat

    R = quat_to_rotmat(torch.as_tensor(np.asarray(wxyz, np.float64))).numpy()
    t = np.asarray(position, dtype=np.float64)
    viewmat = np.eye(4)
    viewmat[:3, :3] = R.T
    viewmat[:3, 3] = -R.T @ t
    return viewmat


def render_size(aspect: float, resolution: int) -> tuple[int, int]:
    """Image (width, height) in pixels for a canvas of ``aspect`` = width / height: the longer side is
    ``resolution`` (clamped to 16..1024), the other follows the aspect (at least 8 px)."""
    res = int(min(max(int(resolution), MIN_RESOLUTION), MAX_RESOLUTION))
    if not (aspect > 0 and math.isfinite(aspect)):
        aspect = 1.0
    if aspect >= 1.0:
        return res, max(8, int(round(res / aspect)))
    return max(8, int(round(res * aspect))), res


def intrinsics_from_fov(fov_y: float, width: int, height: int) -> np.ndarray:
    """K [3, 3] in pixels for a vertical field of view ``fov_y`` (radians), square pixels and the
    principal point at the image centre (pixel centres at integer + 0.5)."""
    from talksplat.render.camera import intrinsics

    return intrinsics(math.degrees(fov_y), width, height, fov_axis="y", dtype=torch.float64).numpy()


def viser_camera(wxyz, position, fov_y: float, aspect: float, resolution: int) -> "ViewCamera":
    """A browser camera (viser convention) -> :class:`ViewCamera` at ``resolution`` (longer side, px)."""
    width, height = render_size(aspect, resolution)
    return ViewCamera(viser_to_viewmat(wxyz, position), intrinsics_from_fov(fov_y, width, height), width, height)


@dataclass
class ViewCamera:
    """viewmat [4, 4] world-to-camera (OpenCV), K [3, 3] pixels, image size in pixels."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int


@dataclass
class RenderedFrame:
    """One rendered frame: image [H, W, 3] uint8 RGB, render time in seconds, Gaussians drawn."""

    image: np.ndarray
    seconds: float
    num_gaussians: int


def frame_params(frame: dict[str, np.ndarray], device) -> "RigParams":  # noqa: F821
    """One frame of rig parameters (numpy: shape [S], expression [E], eyes [2, 3], others [3],
    rotations axis-angle radians, translation metres) -> :class:`RigParams` with batch 1 on ``device``."""
    from talksplat.rigs.sequence import FRAME_FIELDS, RigSequence

    return RigSequence(frame["shape"], {k: np.asarray(frame[k])[None] for k in FRAME_FIELDS}).to_params(device)


class AvatarRenderer:
    """Renders an avatar posed by one frame of rig parameters, seen by a :class:`ViewCamera`.

    Renders are serialised by a lock (one device, and two CPU cores go further one frame at a time).
    """

    def __init__(self, avatar, rig, device: torch.device, background=(1.0, 1.0, 1.0), plate=None):
        # copies on the device: a module's .to() moves the caller's object in place
        self.rig = copy.deepcopy(rig).to(device)
        self.avatar = copy.deepcopy(avatar).to(device)
        self.device = device
        self.background = torch.tensor(background, dtype=torch.float32, device=device)[None]
        self.lock = threading.Lock()
        # (plate [H, W, 3] uint8, K [3, 3], viewmat [4, 4]): the subject's own frame, shown behind the avatar when
        # the camera is the source camera (any field of view: the plate is resampled for it)
        self.plate = plate
        self._plate_views: dict[tuple, torch.Tensor] = {}

    def plate_behind(self, cam: "ViewCamera") -> torch.Tensor | None:
        """[H, W, 3] in [0, 1]: the plate seen by ``cam`` when it sits where the source camera sat and looks the
        same way (the background colour where the plate does not reach), else None."""
        if self.plate is None:
            return None
        image, K, viewmat = self.plate
        if np.abs(np.asarray(cam.viewmat, np.float64) - viewmat).max() > 1e-3:
            return None
        key = (cam.width, cam.height, *np.round(np.asarray(cam.K, np.float64).ravel(), 3))
        hit = self._plate_views.get(key)
        if hit is None:
            from talksplat.data_prep.plate import warp_view

            rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], -1)
            view = warp_view(rgba, K, np.asarray(cam.K, np.float64), cam.width, cam.height).astype(np.float32) / 255
            bg = self.background[0].cpu().numpy()
            a = view[..., 3:]
            hit = torch.from_numpy(view[..., :3] * a + bg * (1 - a)).to(self.device)
            self._plate_views = {key: hit}  # one size at a time: the browser's canvas
        return hit

    @property
    def backend(self) -> str:
        """'CUDA (gsplat)', 'CPU (talksplat rasterizer)' or, in the TALKSPLAT_GSPLAT_REFERENCE test mode,
        'CUDA code path (gsplat torch reference, CPU)'."""
        from talksplat.render import resolve_backend

        if self.device.type == "cuda":
            return "CUDA (gsplat)"
        if resolve_backend("auto", self.device) == "cuda":
            return "CUDA code path (gsplat torch reference, CPU)"
        return "CPU (talksplat rasterizer)"

    @property
    def num_gaussians(self) -> int:
        return self.avatar.num_gaussians

    def render(self, frame: dict[str, np.ndarray], cam: ViewCamera) -> RenderedFrame:
        """Pose the rig with ``frame`` (see :func:`frame_params`) and rasterize the avatar."""
        from talksplat.avatar.render import render_avatar

        with self.lock, torch.no_grad():
            t0 = time.perf_counter()
            params = frame_params(frame, self.device)
            viewmat = torch.as_tensor(cam.viewmat, dtype=torch.float32, device=self.device)[None]
            K = torch.as_tensor(cam.K, dtype=torch.float32, device=self.device)[None]
            plate = self.plate_behind(cam)
            colors, alphas, _ = render_avatar(self.avatar, self.rig, params, viewmat, K, cam.width, cam.height,
                                              backgrounds=None if plate is not None else self.background)
            color = colors[0, 0] if plate is None else colors[0, 0] + (1 - alphas[0, 0]) * plate
            image = (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            return RenderedFrame(image, time.perf_counter() - t0, self.num_gaussians)

    def posed(self, frame: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Posed rig vertices [V, 3] and Gaussian centres [N, 3], metres, world (for the overlays)."""
        with self.lock, torch.no_grad():
            params = frame_params(frame, self.device)
            from talksplat.avatar.render import pose_inputs

            out, code, torso = pose_inputs(self.avatar, self.rig, params)
            means, _, _ = self.avatar.posed_geometry(out.vertices, self.rig.faces, torso, code)
            verts = out.vertices
            return verts[0].cpu().numpy(), means[0].cpu().numpy()


@dataclass
class RenderRequest:
    """What to render: a camera at a resolution (longer side, px) from the state it was asked in."""

    make_camera: Callable[[int], ViewCamera]
    frame: dict[str, np.ndarray]
    resolution: int
    moving_resolution: int
    created: float = field(default_factory=time.perf_counter)


class RenderLoop(threading.Thread):
    """A render thread for one browser (nerfview's pattern).

    :meth:`submit` replaces any request not yet started, so a slow renderer never falls behind the
    camera: it always renders the newest state.  A request is first rendered at its moving
    resolution; when nothing new arrives for ``settle_s`` seconds it is rendered again at full
    resolution.  ``show(frame, final)`` receives every finished frame.
    """

    def __init__(self, renderer: AvatarRenderer, show: Callable[[RenderedFrame, bool], None], settle_s: float = 0.25):
        super().__init__(daemon=True, name="talksplat-render")
        self.renderer = renderer
        self.show = show
        self.settle_s = settle_s
        self._cond = threading.Condition()
        self._pending: RenderRequest | None = None
        self._to_refine: RenderRequest | None = None
        self._stopped = False
        self.dropped = 0
        self.rendered = 0

    def submit(self, request: RenderRequest) -> None:
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = request
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                if self._pending is None and not self._stopped:
                    self._cond.wait(timeout=self.settle_s if self._to_refine is not None else None)
                if self._stopped:
                    return
                req, self._pending = self._pending, None
                if req is not None:
                    final = req.moving_resolution >= req.resolution
                    resolution = req.resolution if final else req.moving_resolution
                    self._to_refine = None if final else req
                elif self._to_refine is not None:  # nothing new for settle_s: full resolution now
                    req, self._to_refine = self._to_refine, None
                    final, resolution = True, req.resolution
                else:
                    continue
            try:
                frame = self.renderer.render(req.frame, req.make_camera(resolution))
                self.rendered += 1
                self.show(frame, final)
            except Exception as e:  # a closed browser or a bad state must not kill the thread
                print(f"talksplat view: render failed: {type(e).__name__}: {e}", file=sys.stderr)
