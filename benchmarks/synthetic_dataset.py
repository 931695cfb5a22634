"""A dataset in talksplat's format rendered from a known ground-truth avatar (for fitting tests)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from talksplat.avatar import init_avatar
from talksplat.avatar.render import render_avatar
from talksplat.data_prep.dataset import DatasetWriter, Frame, default_split, image_name
from talksplat.data_prep.embedding import landmark_embedding
from talksplat.data_prep.tracking import project
from talksplat.render.camera import intrinsics, orbit_cameras
from talksplat.render.sh import rgb_to_sh
from talksplat.render.video import to_uint8
from talksplat.rigs.base import HeadRig
from talksplat.rigs.sequence import RigSequence


def textured_avatar(rig: HeadRig, per_face: int = 2):
    """The open-head avatar with a varied texture (stripes and blotches over the skin tone)."""
    av = init_avatar(rig, per_face=per_face, sh_degree=0)
    with torch.no_grad():
        verts = rig.template[None]
        means, _, _ = av.posed_geometry(verts, rig.faces)
        p = means[0] / 0.1
        base = av.sh_dc[:, 0] * 0.28209479 + 0.5  # SH DC -> RGB
        pattern = 0.5 + 0.5 * torch.sin(6 * p[:, 0]) * torch.cos(5 * p[:, 1]) * torch.sin(4 * p[:, 2] + 1)
        tint = torch.stack([0.8 + 0.4 * pattern, 0.9 - 0.3 * pattern, 0.8 + 0.2 * torch.cos(9 * p[:, 1])], -1)
        av.sh_dc[:, 0] = rgb_to_sh((base * tint).clamp(0.02, 0.98))
    return av


def write_synthetic_dataset(out: Path, rig: HeadRig, T: int = 30, size: int = 96, cameras=(-20.0, 20.0),
                            seed: int = 0) -> dict:
    """Render a textured avatar talking (jaw, smile, head turns) from fixed cameras into a dataset.

    Returns the ground truth: {"avatar", "params" (RigParams [T])}.
    """
    g = torch.Generator().manual_seed(seed)
    avatar = textured_avatar(rig)
    t = torch.linspace(0, 2 * math.pi, T)
    p = rig.zero_params(T)
    k = min(4, rig.num_shape)  # a subject that is not the mean head
    p.shape[:, :k] = torch.tensor([0.4, -0.3, 0.5, 0.2])[:k]
    p.expression[:, rig.expression_index("jawOpen")] = 0.4 * (0.5 - 0.5 * torch.cos(3 * t))
    p.expression[:, rig.expression_index("mouthSmileLeft")] = 0.3 * (0.5 + 0.5 * torch.sin(t))
    p.global_rot[:, 1] = 0.3 * torch.sin(t) + 0.02 * torch.randn(T, generator=g)
    p.global_rot[:, 0] = 0.1 * torch.sin(2 * t)
    emb = landmark_embedding(rig)
    K = intrinsics(focal=2.4 * size, width=size, height=size)
    with DatasetWriter(out) as w:
        # cameras 0.75 m from the head's axis, 2 cm above its origin, looking at the origin
        vms = torch.cat([orbit_cameras(1, math.hypot(0.75, 0.02), elevation_deg=math.degrees(math.atan2(0.02, 0.75)),
                                       start_azimuth_deg=yaw) for yaw in cameras])
        with torch.no_grad():
            lm3d = emb.points(rig, rig(p).vertices)
            uv = project(lm3d, vms, K[None].expand(len(vms), 3, 3)).numpy()  # [C, T, L, 2]
        seq = RigSequence.from_params(p, source="synthetic")
        for c, vm in enumerate(vms):
            cam = f"cam{c}"
            for i in range(T):
                pi = seq[i].to_params()
                with torch.no_grad():
                    col, alpha, _ = render_avatar(avatar, rig, pi, vm[None], K[None], size, size,
                                                  backgrounds=torch.zeros(1, 3), backend="cpu")
                a = alpha[0, 0, ..., 0].clamp(1e-6, 1)
                fg = (col[0, 0] / a[..., None]).clamp(0, 1)  # un-premultiplied foreground colour
                w.write_image(image_name(cam, i), to_uint8(fg))
                w.write_image(image_name(cam, i, "masks"), to_uint8(a[..., None].expand(-1, -1, 3))[..., 0])
                c2w = torch.linalg.inv(vm).numpy()
                w.add_frame(Frame(image=image_name(cam, i), mask=image_name(cam, i, "masks"), K=K.numpy(), c2w=c2w,
                                  timestep=i, camera=cam, width=size, height=size))
        w.write_rig_params(seq)
        w.write_landmarks([f"cam{c}" for c in range(len(vms))], uv, np.ones((len(vms), T)), np.zeros((len(vms), T)))
        w.commit({"fps": 25.0, "num_timesteps": T, "cameras": [f"cam{c}" for c in range(len(vms))],
                  "monocular": False, "rig": {"name": rig.name, "checksum": rig.checksum, "spec": "open"},
                  "split": default_split(T), "audio": None, "source": ["synthetic"]})
    return {"avatar": avatar, "params": p}
