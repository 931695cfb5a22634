"""Gaussian-splatting rasterizer (gsplat-compatible API, CPU and CUDA backends).

``rasterization(...)`` is the entry point; see :mod:`talksplat.render.rasterization`.
"""

from .camera import camera_centers, intrinsics, look_at, orbit_cameras
from .cpu import (
    DEFAULT_CPU_TILE_SIZE,
    isect_tiles,
    project_gaussians,
    quat_scale_to_covar,
    quat_to_rotmat,
    rasterization_cpu,
    rasterize_to_pixels,
)
from .rasterization import rasterization, resolve_backend
from .sh import eval_sh, num_sh_bases, rgb_to_sh, sh_bases, sh_to_rgb

__all__ = [
    "rasterization",
    "resolve_backend",
    "rasterization_cpu",
    "project_gaussians",
    "isect_tiles",
    "rasterize_to_pixels",
    "quat_to_rotmat",
    "quat_scale_to_covar",
    "DEFAULT_CPU_TILE_SIZE",
    "look_at",
    "intrinsics",
    "orbit_cameras",
    "camera_centers",
    "eval_sh",
    "sh_bases",
    "sh_to_rgb",
    "rgb_to_sh",
    "num_sh_bases",
]
