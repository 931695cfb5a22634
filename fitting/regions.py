"""Image-space region masks and loss weights from FaceMesh landmarks.

Landmarks are MediaPipe FaceMesh's 478 points (``refine_landmarks=True`` topology) in pixels of
the image (x right, y down; pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``, its centre at
``+0.5`` as everywhere in talksplat).  The contours are the outer contours of MediaPipe's
``FACEMESH_LIPS`` / ``FACEMESH_LEFT_EYE`` / ``FACEMESH_RIGHT_EYE``, written out as closed polygons.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["LIPS_OUTER", "LEFT_EYE", "RIGHT_EYE", "EYE_OUTER_CORNERS", "INNER_LIP_PAIRS", "OPEN_MOUTH", "REGIONS",
           "region_mask", "loss_weight_map", "inter_ocular_distance", "mouth_gap"]

#: Outer lip contour (closed polygon order), FaceMesh indices.
LIPS_OUTER: tuple[int, ...] = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37,
                               39, 40, 185)
#: The subject's left eye contour (image right for a frontal face).
LEFT_EYE: tuple[int, ...] = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
#: The subject's right eye contour.
RIGHT_EYE: tuple[int, ...] = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
#: Outer eye corners (right, left): their distance is the inter-ocular distance.
EYE_OUTER_CORNERS: tuple[int, int] = (33, 263)
#: (upper, lower) inner-lip points facing each other: the middle, then towards each corner.
INNER_LIP_PAIRS: tuple[tuple[int, ...], ...] = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))
#: A mouth is open when its :func:`mouth_gap` exceeds this (closed lips measure 0.000-0.003 on GRID clips,
#: speech's open vowels 0.05-0.3).
OPEN_MOUTH = 0.04
#: Region name -> polygons filled for it.
REGIONS: dict[str, tuple[tuple[int, ...], ...]] = {"mouth": (LIPS_OUTER,), "eyes": (LEFT_EYE, RIGHT_EYE)}

_SHIFT = 4  # fillPoly fractional bits: 1/16 px vertex precision


def inter_ocular_distance(landmarks: np.ndarray) -> float:
    """Distance in pixels between the outer eye corners (landmarks 33 and 263) of [478, 2+] px."""
    lm = np.asarray(landmarks, dtype=np.float64)
    a, b = EYE_OUTER_CORNERS
    return float(np.linalg.norm(lm[a, :2] - lm[b, :2]))


def mouth_gap(landmarks: np.ndarray) -> float:
    """The mean inner-lip gap of :data:`INNER_LIP_PAIRS` over the inter-ocular distance, of [478, 2+] px."""
    lm = np.asarray(landmarks, dtype=np.float64)
    up, lo = (list(i) for i in zip(*INNER_LIP_PAIRS))
    return float(np.linalg.norm(lm[up, :2] - lm[lo, :2], axis=-1).mean()) / max(inter_ocular_distance(lm), 1e-9)


def region_mask(landmarks: np.ndarray, height: int, width: int, region: str,
                dilate_frac: float = 0.15) -> np.ndarray:
    """Pixels of a facial region.

    Args:
        landmarks: [478, 2] (or [478, 3], z ignored) FaceMesh landmarks, pixels.
        height, width: image size in pixels.
        region: "mouth" (outer lip contour) or "eyes" (both eye contours).
        dilate_frac: grow the filled polygon(s) by this fraction of the inter-ocular distance
            (outer eye corners 33–263), with a disc; 0 disables it.
    Returns:
        [H, W] bool mask.
    Raises:
        ValueError: unknown region, wrong landmark shape or non-finite landmarks.
    """
    if region not in REGIONS:
        raise ValueError(f"region_mask: unknown region '{region}' (expected one of: {', '.join(REGIONS)})")
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] != 478 or lm.shape[1] < 2:
        raise ValueError(f"region_mask: expected [478, 2] landmarks, got {lm.shape}")
    used = [i for poly in REGIONS[region] for i in poly] + list(EYE_OUTER_CORNERS)
    if not np.isfinite(lm[used, :2]).all():
        raise ValueError(f"region_mask: non-finite landmarks for region '{region}'")
    mask = np.zeros((height, width), np.uint8)
    # cv2 puts integer coordinates at pixel centres; ours are at +0.5.
    polys = [np.round((lm[list(poly), :2] - 0.5) * (1 << _SHIFT)).astype(np.int32) for poly in REGIONS[region]]
    cv2.fillPoly(mask, polys, 1, lineType=cv2.LINE_8, shift=_SHIFT)
    r = int(round(dilate_frac * inter_ocular_distance(lm)))
    if r > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = cv2.dilate(mask, kernel)
    return mask.astype(bool)


def loss_weight_map(landmarks: np.ndarray, height: int, width: int, mouth: float = 2.0,
                    eyes: float = 1.5, dilate_frac: float = 0.15) -> np.ndarray:
    """Per-pixel photometric loss weights: ``mouth`` on the (dilated) mouth, ``eyes`` on the eyes,
    1 elsewhere (the mouth wins where they overlap).

    Args:
        landmarks: [478, 2] FaceMesh landmarks, pixels.
        height, width: image size in pixels.
        mouth, eyes: weights of the two regions.
        dilate_frac: as :func:`region_mask`.
    Returns:
        [H, W] float32.
    """
    w = np.ones((height, width), np.float32)
    w[region_mask(landmarks, height, width, "eyes", dilate_frac)] = eyes
    w[region_mask(landmarks, height, width, "mouth", dilate_frac)] = mouth
    return w
