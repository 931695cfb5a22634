"""Initialise a :class:`GaussianAvatar` on a rig: k Gaussians per face, sized to the face,
coloured with a plausible albedo per rig region (skin, lips, eyes, teeth, tongue, brows, hair)
and a soft baked key light, so that an untrained avatar already renders as a recognisable head.
"""

from __future__ import annotations

import math

import torch

from talksplat.rigs.base import HeadRig
from talksplat.rigs.geometry import vertex_normals

from .binding import face_frames
from talksplat.render.sh import num_sh_bases, rgb_to_sh

from .appearance import appearance_code_size
from .gaussians import GaussianAvatar

#: Albedo per region, linear-ish sRGB in [0, 1]; later entries win where regions overlap.
REGION_ALBEDO: dict[str, tuple[float, float, float]] = {
    "skin": (0.82, 0.62, 0.52),
    "scalp": (0.24, 0.16, 0.11),
    "eyebrows": (0.28, 0.19, 0.13),
    "lips": (0.72, 0.38, 0.38),
    "tongue": (0.70, 0.30, 0.33),
    "teeth": (0.93, 0.91, 0.84),
    "eyes": (0.93, 0.93, 0.90),
}
IRIS = (0.30, 0.20, 0.12)
PUPIL = (0.03, 0.03, 0.03)
#: Direction the baked key light comes from, canonical rig frame (+y up, +z out of the face).
KEY_LIGHT = (0.35, 0.55, 1.0)


def vertex_albedo(rig: HeadRig) -> torch.Tensor:
    """[V, 3] plausible albedo per rig vertex from its named regions (iris/pupil painted on the eyes)."""
    V = rig.num_vertices
    col = torch.tensor(REGION_ALBEDO["skin"]).repeat(V, 1)
    for name, rgb in REGION_ALBEDO.items():
        if name not in rig.region_names:
            continue
        idx = rig.region(name)
        if name == "eyebrows" and len(idx):
            # The brow region is where brow motion reaches (a tall band); paint only its middle
            # third vertically and keep the glabella bare.
            y, x = rig.template[idx, 1], rig.template[idx, 0]
            lo, hi = float(y.min()), float(y.max())
            keep = (y > lo + 0.3 * (hi - lo)) & (y < lo + 0.65 * (hi - lo)) & (x.abs() > 0.2 * float(x.abs().max()))
            idx = idx[keep]
        col[idx] = torch.tensor(rgb)
    if "eyes" in rig.region_names:
        idx = rig.region("eyes")
        pts = rig.template[idx]
        for side in (pts[:, 0] > 0, pts[:, 0] <= 0):
            if side.sum() < 4:
                continue
            sub = idx[side]
            p = rig.template[sub]
            centre = p.mean(0)
            d = p - centre
            cos = d[:, 2] / d.norm(dim=-1).clamp_min(1e-9)  # alignment with the gaze (+z)
            col[sub[cos > math.cos(math.radians(32))]] = torch.tensor(IRIS)
            col[sub[cos > math.cos(math.radians(14))]] = torch.tensor(PUPIL)
    return col


def barycentric_samples(k: int) -> torch.Tensor:
    """[k, 3] deterministic, well-spread barycentric coordinates (centroid for k = 1)."""
    if k == 1:
        return torch.full((1, 3), 1.0 / 3.0)
    # R2 low-discrepancy sequence on the unit square, folded onto the triangle.
    g = 1.32471795724474602596
    i = torch.arange(k, dtype=torch.float64) + 0.5
    u = (i / g) % 1.0
    v = (i / (g * g)) % 1.0
    su = u.sqrt()
    b = torch.stack([1 - su, su * (1 - v), su * v], dim=-1)
    return b.float()


def surface_gaussians(vertices: torch.Tensor, faces: torch.Tensor, per_face: int):
    """``per_face`` Gaussians on every face of a mesh, flat on its surface and covering it without gaps.

    Args:
        vertices: [V, 3] metres.  faces: [F, 3] int64.
    Returns:
        binding [N] (face index, N = per_face * F), barycentrics [N, 3], local_means [N, 3] (face units),
        local_quats [N, 4] (identity), log_scales [N, 3] (face units) in the faces' frames
        (:func:`~talksplat.avatar.binding.face_frames`).
    """
    F = faces.shape[0]
    verts = vertices[None]  # [1, V, 3]
    origins, R, s = (t[0] for t in face_frames(verts, faces))
    bary = barycentric_samples(per_face)  # [k, 3]
    binding = torch.arange(F).repeat_interleave(per_face)  # [N]
    b = bary.repeat(F, 1)  # [N, 3]
    tri = verts[0][faces[binding]]  # [N, 3, 3]
    p = (b[:, :, None] * tri).sum(1)
    local_means = torch.einsum("nji,nj->ni", R[binding], p - origins[binding]) / s[binding, None]
    # Extent along the face's first edge (axis 0) and its height (axis 2) ~ the spacing of k
    # samples, so thin triangles get thin Gaussians and the surface is covered without gaps;
    # flat along the normal (axis 1).
    e1 = tri[:, 1] - tri[:, 0]
    e2 = tri[:, 2] - tri[:, 0]
    Rb = R[binding]
    base = e1.norm(dim=-1)
    height = (Rb[:, :, 2] * e2).sum(-1).abs()
    k = math.sqrt(per_face)
    sx = (0.6 * base / k).clamp_min(1e-6) / s[binding]
    sz = (0.6 * height / k).clamp_min(1e-6) / s[binding]
    log_scales = torch.stack([sx, 0.15 * torch.minimum(sx, sz), sz], dim=-1).log()
    local_quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(binding.shape[0], 1)
    return binding, b, local_means, local_quats, log_scales


def add_torso(avatar: GaussianAvatar, rig: HeadRig, per_face: int = 8, opacity: float = 0.95,
              rgb: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> GaussianAvatar:
    """The avatar with torso Gaussians appended: ``per_face`` on every face of the rig's bust proxy
    (:func:`talksplat.avatar.torso.bust_proxy`, made on the rig's rest template), colour ``rgb``, bound to
    proxy face j as ``binding`` F + j.  The avatar's own Gaussians are kept as they are (copied)."""
    from .torso import bust_proxy

    if avatar.has_torso:
        raise ValueError("the avatar already has a torso")
    zero = rig.zero_params(1)
    joints = rig.rest_joints(zero.shape, zero.expression)[0]
    proxy, pfaces = bust_proxy(rig.template.cpu().numpy(), rig.region("neck").cpu().numpy(),
                               joints[rig.semantic_joints["global"]].cpu().numpy())
    proxy_t, pfaces_t = torch.from_numpy(proxy), torch.from_numpy(pfaces)
    binding, _, means, quats, log_scales = surface_gaussians(proxy_t, pfaces_t, per_face)
    n, dev = binding.shape[0], avatar.binding.device
    sh_dc = rgb_to_sh(torch.tensor(rgb).float())[None, None].expand(n, 1, 3)
    logit = math.log(opacity / (1.0 - opacity))
    new = {"binding": binding + rig.faces.shape[0], "local_means": means, "local_quats": quats,
           "log_scales": log_scales, "sh_dc": sh_dc, "sh_rest": torch.zeros(n, avatar.sh_rest.shape[1], 3),
           "opacity_logits": torch.full((n,), logit), "sh_dc_blend": torch.zeros(n, avatar.sh_dc_blend.shape[1], 3),
           "means_blend": torch.zeros(n, avatar.means_blend.shape[1], 3)}
    cat = {k: torch.cat([getattr(avatar, k).detach(), v.to(dev, getattr(avatar, k).dtype)]) for k, v in new.items()}
    return GaussianAvatar(**cat, rig_name=avatar.rig_name, rig_checksum=avatar.rig_checksum,
                          sh_degree=avatar.sh_degree, torso_vertices=proxy_t.to(dev), torso_faces=pfaces_t.to(dev))


def init_avatar(rig: HeadRig, per_face: int = 2, sh_degree: int = 3, opacity: float = 0.95,
                bake_light: bool = True, dynamic_appearance: bool = False,
                dynamic_geometry: bool = False) -> GaussianAvatar:
    """An untrained avatar: ``per_face`` Gaussians on every rig face.

    Args:
        rig: the head rig; Gaussians are placed on its neutral template.
        per_face: Gaussians per face (N = per_face * F).
        sh_degree: degree of the colour SH (0..3); only the DC term is initialised.
        opacity: initial opacity of every Gaussian.
        bake_light: multiply the albedo by a soft key light (Lambert + ambient) so that the
            untrained head shows its shape.
        dynamic_appearance: give the avatar colour blendshapes ``sh_dc_blend`` [N, D, 3], D =
            :func:`~talksplat.avatar.appearance.appearance_code_size` of the rig, all zero (it renders as
            without them until trained); else D = 0 (static colour).
        dynamic_geometry: give it position blendshapes ``means_blend`` [N, D, 3] too (zero: the rig alone moves
            the Gaussians until trained).
    """
    if not 1 <= per_face <= 64:
        raise ValueError(f"per_face must be in 1..64, got {per_face}")
    if not 0 <= sh_degree <= 3:
        raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
    faces = rig.faces
    binding, b, local_means, local_quats, log_scales = surface_gaussians(rig.template, faces, per_face)

    albedo = vertex_albedo(rig)
    if bake_light:
        n = vertex_normals(rig.template, faces)
        light = torch.tensor(KEY_LIGHT)
        light = light / light.norm()
        shade = 0.55 + 0.5 * (n @ light).clamp_min(0.0)
        albedo = (albedo * shade[:, None]).clamp(0.0, 1.0)
    rgb = (b[:, :, None] * albedo[faces[binding]]).sum(1)
    sh_dc = rgb_to_sh(rgb)[:, None, :]
    sh_rest = torch.zeros(binding.shape[0], num_sh_bases(sh_degree) - 1, 3)
    logit = math.log(opacity / (1.0 - opacity))
    opacity_logits = torch.full((binding.shape[0],), logit)
    d = appearance_code_size(rig.num_expression) if dynamic_appearance else 0
    sh_dc_blend = torch.zeros(binding.shape[0], d, 3)
    dm = appearance_code_size(rig.num_expression) if dynamic_geometry else 0
    means_blend = torch.zeros(binding.shape[0], dm, 3)
    return GaussianAvatar(binding, local_means, local_quats, log_scales, sh_dc, sh_rest, opacity_logits,
                          rig_name=rig.name, rig_checksum=rig.checksum, sh_degree=sh_degree, sh_dc_blend=sh_dc_blend,
                          means_blend=means_blend)
