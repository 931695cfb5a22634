"""The subject's own frame: a static plate (background and torso) and where the rendered head sits in it.

A monocular video is modelled in layers: the fitted head (Gaussians bound to the rig) over a static *plate*
of the source frame.  The plate is the per-pixel median of the sampled frames wherever the tracked head
(the rig's projected silhouette, dilated for hair) does not cover the pixel: background, shoulders and
torso stay in it; the region the head covers in every sampled frame is filled by inpainting (the rendered
head hides it, and the dataset's ``plate_observed.png`` marks it).  The *person-free* plate is made the same
way from the pixels the whole person leaves visible: the background alone, the plate of a fit whose torso is
its own Gaussians (``talksplat fit --torso``), so that no median torso stays behind a moving one.

Pixel coordinates are continuous with pixel centres at +0.5 (as the rasterizer, mediapipe and
:mod:`talksplat.data_prep.framing` use).
"""

from __future__ import annotations

import numpy as np
import torch

#: The plate's working size: the source frame scaled so that its longer side is at most this many pixels.
MAX_SIDE = 1920
#: Frames sampled (evenly over the clip) for the median.
PLATE_FRAMES = 48
#: The head's region in a source frame: the tracked rig's silhouette dilated by this share of the head crop's
#: side (hair beyond the scalp, a loose fit).
HEAD_DILATE = 0.06
#: The person's region in a source frame, left out of the person-free plate: the segmented person dilated by
#: this share of the head crop's side (the segmentation's soft edge), with the head region.
PERSON_DILATE = 0.03


def frame_scale(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[float, int, int]:
    """(scale, width', height') of the source frame as stored in the dataset: scaled so that its longer side is
    at most ``max_side`` pixels, both sides even (H.264 frames)."""
    s = min(1.0, max_side / max(width, height))
    w, h = max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)
    return w / width, w, h


def scale_intrinsics(K: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """[3, 3] intrinsics of an image resized by (sx, sy) (pixel centres at +0.5, so the scale is exact)."""
    sy = sx if sy is None else sy
    out = np.array(K, np.float64).copy()
    out[0] *= sx
    out[1] *= sy
    return out


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` [H, W(, C)] resized to [height, width(, C)] by area averaging (unchanged when already that
    size): source frames, masks and the plate at a working size."""
    import cv2

    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def head_silhouettes(vertices: torch.Tensor, faces: torch.Tensor, K: np.ndarray, viewmat: np.ndarray,
                     width: int, height: int, dilate: float) -> np.ndarray:
    """[T, H, W] bool: where the posed rig covers the image, dilated by ``dilate`` pixels (hair, a loose fit).

    Args:
        vertices: [T, V, 3] metres, world.  faces: [F, 3] int.  K: [3, 3] px.  viewmat: [4, 4] world-to-camera
        (OpenCV).  width, height: px.  dilate: px (a disc).
    """
    import cv2

    v = vertices.detach().double().cpu().numpy()
    cam = v @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = np.clip(cam[..., 2:3], 1e-6, None)
    uv = (cam[..., :2] / z) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2] - 0.5  # index coordinates for cv2
    f = faces.cpu().numpy()
    r = max(0, int(round(dilate)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) if r else None
    out = np.zeros((len(v), height, width), bool)
    for t in range(len(v)):
        tri = np.round(uv[t][f] * 4).astype(np.int32)  # [F, 3, 2] in quarter pixels (cv2's `shift`)
        m = np.zeros((height, width), np.uint8)
        cv2.fillPoly(m, list(tri), 1, lineType=cv2.LINE_8, shift=2)
        if kernel is not None:
            m = cv2.dilate(m, kernel)
        out[t] = m.astype(bool)
    return out


def head_region(silhouette: np.ndarray, foreground: np.ndarray, margin: float) -> np.ndarray:
    """[H, W] bool: the head of one frame, left out of the plate: the (dilated) rig silhouette, plus the
    segmented foreground above the silhouette's middle row within ``margin`` px of its columns (hair the rig
    does not cover).  The shoulders and torso below stay in the plate.

    Args:
        silhouette: [H, W] bool (:func:`head_silhouettes`).  foreground: [H, W] bool (the person).  margin: px.
    """
    out = silhouette.copy()
    ys, xs = np.nonzero(silhouette)
    if len(ys) == 0:
        return out
    H, W = silhouette.shape
    y_mid = int((ys.min() + ys.max()) // 2)
    x0, x1 = max(0, int(xs.min() - margin)), min(W, int(xs.max() + margin) + 1)
    out[:y_mid, x0:x1] |= foreground[:y_mid, x0:x1]
    return out


def person_region(head: np.ndarray, foreground: np.ndarray, dilate: float) -> np.ndarray:
    """[H, W] bool: the whole person of one frame, left out of the person-free plate: the segmented
    ``foreground`` [H, W] bool dilated by ``dilate`` px (a disc), with the ``head`` region [H, W] bool
    (:func:`head_region`, which covers hair the segmentation misses)."""
    import cv2

    r = max(0, int(round(dilate)))
    fg = foreground.astype(np.uint8)
    if r:
        fg = cv2.dilate(fg, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return head | fg.astype(bool)


def fill_holes(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 with the pixels where ``known`` [H, W] is False filled smoothly from the known ones (a
    push-pull pyramid: weighted averages at coarser levels, filled back finest first)."""
    import cv2

    img = image.astype(np.float32) * known[..., None]
    w = known.astype(np.float32)
    levels = [(img, w)]
    while min(img.shape[:2]) > 1 and (w <= 0).any():
        img = cv2.resize(img, (max(1, img.shape[1] // 2), max(1, img.shape[0] // 2)), interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
        levels.append((img, w))
    img, w = levels[-1]
    cur = img / np.maximum(w, 1e-8)[..., None]
    for img, w in reversed(levels[:-1]):
        up = cv2.resize(cur, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        a = np.clip(w, 0, 1)[..., None]  # partly known pixels: their own average, the rest from the coarser level
        cur = img / np.maximum(w, 1e-8)[..., None] * a + up * (1 - a)
    out = np.where(known[..., None], image.astype(np.float32), cur)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class PlateBuilder:
    """Collects sampled frames with the pixels the head leaves visible, then makes the plate.

    ``add(frame, visible)``: frame [H, W, 3] uint8 at the plate's size, visible [H, W] bool.
    :meth:`build` -> (plate [H, W, 3] uint8, observed [H, W] bool: seen in at least one frame).
    """

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.frames: list[np.ndarray] = []
        self.visible: list[np.ndarray] = []

    def add(self, frame: np.ndarray, visible: np.ndarray) -> None:
        if frame.shape[:2] != (self.height, self.width) or visible.shape != (self.height, self.width):
            raise ValueError(f"plate frames are {self.width}x{self.height}, got {frame.shape[1]}x{frame.shape[0]}")
        self.frames.append(frame)
        self.visible.append(visible)

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.frames:
            raise ValueError("no frames for the plate")
        frames = np.stack(self.frames)  # [n, H, W, 3]
        vis = np.stack(self.visible)  # [n, H, W]
        observed = vis.any(0)
        plate = np.zeros((self.height, self.width, 3), np.uint8)
        rows = max(1, 2 ** 22 // max(1, len(frames) * self.width * 3))  # ~16 MB of float32 per chunk
        for y in range(0, self.height, rows):
            f = frames[:, y:y + rows].astype(np.float32)
            f[~vis[:, y:y + rows]] = np.nan
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: filled below
                    med = np.nanmedian(f, axis=0)
            plate[y:y + rows] = np.clip(np.nan_to_num(med) + 0.5, 0, 255).astype(np.uint8)
        if not observed.any():
            raise ValueError("the head covers every pixel of every sampled frame")
        if not observed.all():
            plate = fill_holes(plate, observed)
        return plate, observed


def sample_steps(num_timesteps: int, n: int = PLATE_FRAMES) -> set[int]:
    """The time steps the plate is made from: ``n`` evenly spread over the clip (all when shorter)."""
    if num_timesteps <= n:
        return set(range(num_timesteps))
    return {int(round(x)) for x in np.linspace(0, num_timesteps - 1, n)}


def warp_view(image: np.ndarray, K_from: np.ndarray, K_to: np.ndarray, width: int, height: int) -> np.ndarray:
    """An image seen by camera ``K_from`` resampled for camera ``K_to`` of the same pose and the same axes (a crop
    or a resize of it: zero skew, one focal-length ratio per axis): [h, w, C] -> [height, width, C] (bilinear,
    area-filtered when shrinking; outside ``image`` is black).  Pixel centres at +0.5."""
    import cv2

    sx, sy = K_to[0, 0] / K_from[0, 0], K_to[1, 1] / K_from[1, 1]
    k = int(1.0 / max(sx, sy)) if max(sx, sy) < 1 else 1
    K_src = np.array(K_from, np.float64)
    if k > 1:  # a big downscale: box-filter by an integer factor first so the warp does not alias
        h, w = image.shape[:2]
        image = cv2.resize(image[: h - h % k, : w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
        K_src = scale_intrinsics(K_src, 1.0 / k)
        sx, sy = sx * k, sy * k
    # continuous u_to = s * (u_from - c_from) + c_to; index i = u - 0.5
    tx = K_to[0, 2] - sx * K_src[0, 2] + 0.5 * sx - 0.5
    ty = K_to[1, 2] - sy * K_src[1, 2] + 0.5 * sy - 0.5
    M = np.array([[sx, 0, tx], [0, sy, ty]])
    return cv2.warpAffine(image, M, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
