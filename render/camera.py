"""Camera helpers (OpenCV convention: x right, y down, z forward; world-to-camera viewmats)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

__all__ = ["look_at", "intrinsics", "orbit_cameras", "camera_centers", "framing_camera"]


def _as_tensor(x, dtype=None, device=None) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(x, dtype=dtype or torch.float32, device=device)


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> Tensor:
    """World-to-camera matrix (OpenCV) for a camera at ``eye`` looking at ``target``.

    Args:
        eye: [3] camera centre, metres, world.
        target: [3] point looked at, metres, world.
        up: [3] world "up" direction. The camera's y axis (image down) points opposite
            to it. Must not be parallel to the viewing direction.

    Returns:
        viewmat [4, 4] world-to-camera (rows of the rotation are the camera x, y, z axes
        in world coordinates), dtype/device of ``eye`` (float32 for non-tensors).
    """
    eye = _as_tensor(eye)
    target = _as_tensor(target, eye.dtype, eye.device)
    up = _as_tensor(up, eye.dtype, eye.device)
    z = target - eye
    z = z / z.norm().clamp_min(1e-12)
    x = torch.linalg.cross(-up, z)  # right = down x forward
    xn = x.norm()
    if float(xn) < 1e-9:
        raise ValueError("look_at: up is parallel to the viewing direction")
    x = x / xn
    y = torch.linalg.cross(z, x)  # down
    R = torch.stack([x, y, z], dim=0)
    V = torch.eye(4, dtype=eye.dtype, device=eye.device)
    V[:3, :3] = R
    V[:3, 3] = -R @ eye
    return V


def intrinsics(
    fov_deg: Optional[float] = None,
    width: int = 512,
    height: int = 512,
    focal: Optional[float] = None,
    fov_axis: str = "x",
    dtype=torch.float32,
    device=None,
) -> Tensor:
    """Pinhole intrinsics K [3, 3] in pixels, principal point at the image centre.

    Args:
        fov_deg: field of view in degrees along ``fov_axis`` ("x" = width, "y" = height).
            Exactly one of ``fov_deg`` / ``focal`` must be given.
        width, height: image size in pixels.
        focal: focal length in pixels (fx = fy).
    """
    if (fov_deg is None) == (focal is None):
        raise ValueError("give exactly one of fov_deg or focal")
    if focal is None:
        extent = width if fov_axis == "x" else height
        focal = 0.5 * extent / math.tan(0.5 * math.radians(fov_deg))
    K = torch.tensor(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device
    )
    return K


def orbit_cameras(
    n: int,
    radius: float,
    target=(0.0, 0.0, 0.0),
    elevation_deg: float = 0.0,
    start_azimuth_deg: float = 0.0,
    sweep_deg: float = 360.0,
    up=(0.0, 1.0, 0.0),
    dtype=torch.float32,
    device=None,
) -> Tensor:
    """Turntable cameras circling ``target`` around the world ``up`` axis (+y by default).

    Azimuth 0 puts the camera on the +z side of the target looking towards -z (a face
    looking along +z faces the camera). Cameras are spaced by ``sweep_deg / n``.

    Args:
        n: number of cameras.
        radius: distance to target, metres.
        target: [3] orbit centre, metres, world.
        elevation_deg: angle above the horizontal plane (towards +up).

    Returns:
        viewmats [n, 4, 4] world-to-camera.
    """
    target_t = _as_tensor(target, dtype, device)
    up_t = _as_tensor(up, dtype, device)
    up_t = up_t / up_t.norm()
    # an orthonormal frame (e1, up, e2) with e2 = +z when up = +y
    ref = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device)
    if abs(float(ref @ up_t)) > 0.9:
        ref = torch.tensor([1.0, 0.0, 0.0], dtype=dtype, device=device)
    e2 = ref - (ref @ up_t) * up_t
    e2 = e2 / e2.norm()
    e1 = torch.linalg.cross(up_t, e2)
    el = math.radians(elevation_deg)
    mats = []
    for i in range(n):
        az = math.radians(start_azimuth_deg + sweep_deg * i / n)
        d = math.cos(el) * (math.cos(az) * e2 + math.sin(az) * e1) + math.sin(el) * up_t
        mats.append(look_at(target_t + radius * d, target_t, up_t))
    if not mats:
        return torch.zeros(0, 4, 4, dtype=dtype, device=device)
    return torch.stack(mats, 0)


def framing_camera(points: Tensor, width: int, height: int, fov_deg: float = 20.0, yaw_deg: float = 0.0,
                   pitch_deg: float = 0.0, margin: float = 1.1) -> tuple[Tensor, Tensor]:
    """A camera on the turntable orbit (:func:`orbit_cameras`) that frames ``points``.

    Args:
        points: [N, 3] metres, world (e.g. a rig's neutral vertices); +y is up.
        width, height: image size in pixels.
        fov_deg: vertical field of view in degrees.
        yaw_deg, pitch_deg: azimuth (0 = on the +z side) and elevation of the camera, degrees.
        margin: the bounding sphere of ``points`` (about their box centre) spans the view height divided by it.

    Returns:
        viewmat [4, 4] world-to-camera and K [3, 3] pixels, float32 on the device of ``points``.
    """
    pts = points.detach().float()
    lo, hi = pts.min(0).values, pts.max(0).values
    center = (lo + hi) / 2
    radius = float((hi - lo).norm() / 2)
    distance = margin * radius / math.tan(math.radians(fov_deg) / 2)
    viewmat = orbit_cameras(1, distance, center.cpu(), elevation_deg=pitch_deg, start_azimuth_deg=yaw_deg)[0]
    K = intrinsics(fov_deg=fov_deg, width=width, height=height, fov_axis="y")
    return viewmat.to(pts.device), K.to(pts.device)


def camera_centers(viewmats: Tensor) -> Tensor:
    """Camera centres [..., 3] (metres, world) from world-to-camera viewmats [..., 4, 4]."""
    R = viewmats[..., :3, :3]
    t = viewmats[..., :3, 3]
    return -(R.transpose(-1, -2) @ t[..., None])[..., 0]
