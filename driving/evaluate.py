"""Lip-sync measurements on the rig's lip vertices.

* Lip vertex error (LVE, FaceFormer's definition): for each frame the maximum over the rig's lip
  vertices of the squared distance between the predicted and the tracked posed mesh, averaged over
  frames; mm².  Both meshes use the tracked head pose, so only expression and jaw differ.
* Mouth opening: mean height of the upper lip's midline vertices above the lower lip's, in the head
  frame (no head pose); metres.  Its correlation between prediction and tracking says whether the
  mouth opens and closes at the right times.
"""

from __future__ import annotations

import numpy as np
import torch

from talksplat.rigs.base import HeadRig
from talksplat.rigs.sequence import FRAME_FIELDS, RigSequence


class LipGeometry:
    """Poses only the rig's lip vertices (cheap) for a fixed identity."""

    def __init__(self, rig: HeadRig, shape: np.ndarray):
        self.rig = rig
        lips = rig.region("lips").cpu()
        self.lips = rig.restricted(lips)
        self.shape = torch.as_tensor(np.asarray(shape, np.float32)).reshape(1, -1)
        tpl = rig.template.detach().cpu()[lips]  # [L, 3] neutral
        x_mid = 0.5 * (tpl[:, 0].max() + tpl[:, 0].min())
        half = 0.5 * (tpl[:, 0].max() - tpl[:, 0].min())
        central = (tpl[:, 0] - x_mid).abs() < 0.3 * half
        corner_y = tpl[(tpl[:, 0] - x_mid).abs() > 0.8 * half, 1].mean()
        self.upper = torch.nonzero(central & (tpl[:, 1] > corner_y)).flatten()
        self.lower = torch.nonzero(central & (tpl[:, 1] <= corner_y)).flatten()
        if len(self.upper) == 0 or len(self.lower) == 0:  # degenerate lip region: use the extremes
            self.upper = tpl[:, 1].argmax().reshape(1)
            self.lower = tpl[:, 1].argmin().reshape(1)

    def sequence(self, expression, jaw, pose: dict | None = None) -> RigSequence:
        """This identity with ``expression`` [T, E] and ``jaw`` [T, 3] radians; the other frame fields from
        ``pose`` (field -> [T, ...]; None values and absent fields are zero: head frame, eyes ahead)."""
        expression = np.asarray(expression, np.float32)
        frames = {k: v for k, v in (pose or {}).items() if k in FRAME_FIELDS and v is not None}
        return RigSequence.zeros(len(expression), expression.shape[1], self.shape[0].numpy()).with_frames(
            **{**frames, "expression": expression, "jaw": jaw})

    def vertices(self, seq: RigSequence, chunk: int = 2048) -> torch.Tensor:
        """[T, L, 3] metres: the posed lip vertices."""
        outs = []
        with torch.no_grad():
            for s in range(0, len(seq), chunk):
                outs.append(self.lips(seq[s:s + chunk].to_params()).vertices)
        return torch.cat(outs) if outs else torch.zeros(0, len(self.upper), 3)

    def opening(self, expression, jaw) -> np.ndarray:
        """[T] metres: upper-lip midline height above the lower-lip midline, head frame."""
        v = self.vertices(self.sequence(expression, jaw))
        return (v[:, self.upper, 1].mean(1) - v[:, self.lower, 1].mean(1)).numpy()


def lip_vertex_error(geo: LipGeometry, pred: dict, tracked: dict) -> float:
    """Mean over frames of max over lip vertices of squared distance, mm² (tracked pose for both)."""
    pose = {k: v for k, v in tracked.items() if k not in ("expression", "jaw")}  # the tracked head pose and gaze
    a = geo.vertices(geo.sequence(pred["expression"], pred["jaw"], pose))
    b = geo.vertices(geo.sequence(tracked["expression"], tracked["jaw"], pose))
    return float(((a - b) * 1000.0).pow(2).sum(-1).max(-1).values.mean())


def lip_sync_metrics(geo: LipGeometry, pred: dict, tracked: dict, baseline: dict) -> dict:
    """LVE of the prediction and of a baseline, and mouth-opening correlation (prediction vs tracking)."""
    o_pred = geo.opening(pred["expression"], pred["jaw"])
    o_true = geo.opening(tracked["expression"], tracked["jaw"])
    if o_pred.std() < 1e-9 or o_true.std() < 1e-9:
        corr = 0.0
    else:
        corr = float(np.corrcoef(o_pred, o_true)[0, 1])
    return {"lve_mm2": round(lip_vertex_error(geo, pred, tracked), 4),
            "lve_mean_baseline_mm2": round(lip_vertex_error(geo, baseline, tracked), 4),
            "mouth_open_corr": round(corr, 4), "frames": int(len(o_true))}
