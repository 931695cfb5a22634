"""Monocular framing: a temporally smoothed square crop around the head, and its intrinsics.

Pixel coordinates are continuous with pixel centres at +0.5 (as the rasterizer and mediapipe use):
a crop box (cx, cy, size) covers [cx - size/2, cx + size/2) in x, likewise in y.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def head_boxes(landmarks: np.ndarray, keep: np.ndarray, scale: float = 2.2, lift: float = 0.06,
               sigma_frames: float = 4.0, frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """Square crop boxes around the head for every time step.

    Args:
        landmarks: [T, L, 2] pixels (FaceMesh), rows with keep=False ignored.
        keep: [T] bool.
        scale: crop side / face height (face height = landmark box height, brow to chin); 2.2 keeps
            hair, ears and some neck.
        lift: the crop centre sits this fraction of the side above the landmark box centre (hair).
        sigma_frames: temporal Gaussian smoothing of the centre, in frames.
        frame_size: (width, height): where the box fits in the frame along an axis, it is shifted
            to lie inside it (no black border); where it does not, it stays centred on the head.
    Returns:
        [T, 3] float64: centre x, centre y, side (constant over the clip), pixels.
    """
    idx = np.flatnonzero(keep)
    lo = landmarks[idx].min(1)
    hi = landmarks[idx].max(1)
    extent = np.maximum(hi[:, 1] - lo[:, 1], 0.8 * (hi[:, 0] - lo[:, 0]))
    side = float(np.percentile(extent, 90)) * scale
    centre = (lo + hi) / 2
    centre[:, 1] -= lift * side
    T = len(keep)
    full = np.empty((T, 2))
    for d in range(2):  # fill unkept steps by interpolation, then smooth
        full[:, d] = np.interp(np.arange(T), idx, centre[:, d])
    if sigma_frames > 0 and T > 1:
        full = gaussian_filter1d(full, sigma_frames, axis=0, mode="nearest")
    if frame_size is not None:
        for d, n in enumerate(frame_size):
            if side <= n:
                full[:, d] = np.clip(full[:, d], side / 2, n - side / 2)
    return np.concatenate([full, np.full((T, 1), side)], 1)


def inside_mask(box: np.ndarray, resolution: int, frame_size: tuple[int, int]) -> np.ndarray:
    """[R, R] bool: crop pixels whose centre lies inside the source frame."""
    s, off = crop_affine(box, resolution)
    c = (np.arange(resolution) + 0.5) / s
    x, y = c + off[0], c + off[1]
    return ((y >= 0) & (y < frame_size[1]))[:, None] & ((x >= 0) & (x < frame_size[0]))[None, :]


def crop_affine(box: np.ndarray, resolution: int) -> tuple[float, np.ndarray]:
    """Scale s and offset [2] mapping source continuous pixels u to crop pixels s * (u - offset)."""
    s = resolution / box[2]
    return s, np.array([box[0] - box[2] / 2, box[1] - box[2] / 2])


def crop_image(image: np.ndarray, box: np.ndarray, resolution: int) -> np.ndarray:
    """[H, W, C] uint8 -> [R, R, C] crop (bilinear / area; outside the frame is black)."""
    import cv2

    s, (x0, y0) = crop_affine(box, resolution)
    k = int(1.0 / s) if s < 1 else 1
    if k > 1:  # a big downscale: box-filter by an integer factor k first so the warp does not alias
        H, W = image.shape[:2]
        image = cv2.resize(image[: H - H % k, : W - W % k], (W // k, H // k), interpolation=cv2.INTER_AREA)
        s, x0, y0 = s * k, x0 / k, y0 / k
    # Index coordinates i (centre at i + 0.5): i' = s * i + s * (0.5 - x0) - 0.5.
    M = np.array([[s, 0, s * (0.5 - x0) - 0.5], [0, s, s * (0.5 - y0) - 0.5]])
    return cv2.warpAffine(image, M, (resolution, resolution), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_intrinsics(K: np.ndarray, box: np.ndarray, resolution: int) -> np.ndarray:
    """[3, 3] source intrinsics -> [3, 3] intrinsics of the crop."""
    s, (x0, y0) = crop_affine(box, resolution)
    out = np.array(K, np.float64).copy()
    out[0, 0] *= s
    out[1, 1] *= s
    out[0, 1] *= s
    out[0, 2] = s * (K[0, 2] - x0)
    out[1, 2] = s * (K[1, 2] - y0)
    return out


def crop_points(points: np.ndarray, box: np.ndarray, resolution: int) -> np.ndarray:
    """[..., 2] source pixels -> crop pixels."""
    s, off = crop_affine(box, resolution)
    return s * (points - off)
