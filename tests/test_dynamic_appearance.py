"""Expression-dependent appearance: the colour blendshapes ``sh_dc_blend`` [N, D, 3] driven by
``appearance_code(params)`` (rendering, files, densification, and a tiny fit that must learn them)."""

from __future__ import annotations

import json

import pytest
import torch

from talksplat.avatar import GaussianAvatar, init_avatar, load_avatar, save_avatar
from talksplat.avatar.appearance import JAW_UNIT_RAD, appearance_code, appearance_code_size
from talksplat.avatar.gaussians import PARAM_NAMES, TENSOR_NAMES
from talksplat.avatar.render import render_avatar
from talksplat.render import intrinsics, orbit_cameras

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny renders (conftest.py)

W = H = 32


def _render(avatar, rig, params):
    vm = orbit_cameras(2, 0.35, start_azimuth_deg=-20, sweep_deg=40)
    K = intrinsics(fov_deg=45, width=W, height=H)[None].expand(2, 3, 3).contiguous()
    with torch.no_grad():
        colors, _, _ = render_avatar(avatar, rig, params, vm, K, W, H, backend="cpu")
    return colors  # [B, 2, H, W, 3]


def _params(rig, expression: float = 0.0, jaw: float = 0.0, batch: int = 1):
    p = rig.zero_params(batch)
    p.expression.fill_(expression)
    p.jaw[:, 0] = jaw
    return p


def _without_blend(av: GaussianAvatar) -> GaussianAvatar:
    """The same avatar with a static colour (D = 0)."""
    return GaussianAvatar(*(getattr(av, k).detach() for k in TENSOR_NAMES[:7]), rig_name=av.rig_name,
                          rig_checksum=av.rig_checksum, sh_degree=av.sh_degree)


def _with_blend(sphere_rig, seed: int = 0) -> GaussianAvatar:
    torch.manual_seed(seed)
    av = init_avatar(sphere_rig, per_face=1, sh_degree=1, dynamic_appearance=True)
    with torch.no_grad():
        av.sh_dc_blend.normal_(0.0, 0.5)
    return av


def test_the_code_is_expression_then_jaw_for_any_rig(sphere_rig, open_rig):
    for rig in (sphere_rig, open_rig):
        p = _params(rig, expression=0.3, jaw=0.1, batch=2)
        code = appearance_code(p)
        assert code.shape == (2, appearance_code_size(rig.num_expression)) == (2, rig.num_expression + 3)
        assert torch.equal(code[:, :rig.num_expression], p.expression)
        assert torch.allclose(code[:, -3], torch.full((2,), 0.1 / JAW_UNIT_RAD))
        assert not appearance_code(rig.zero_params(1)).any()  # neutral face -> code 0
        assert init_avatar(rig, per_face=1, dynamic_appearance=True).code_size == code.shape[1]
        assert init_avatar(rig, per_face=1).code_size == 0


def test_zero_blendshapes_render_exactly_as_a_static_avatar(sphere_rig):
    av = init_avatar(sphere_rig, per_face=1, sh_degree=1, dynamic_appearance=True)
    assert av.code_size == sphere_rig.num_expression + 3 and not av.sh_dc_blend.any()
    static = _without_blend(av)
    p = _params(sphere_rig, expression=0.7, jaw=0.2, batch=2)
    assert torch.equal(_render(av, sphere_rig, p), _render(static, sphere_rig, p))


def test_blendshapes_change_colour_only_when_the_code_changes(sphere_rig):
    av = _with_blend(sphere_rig)
    static = _without_blend(av)
    # neutral code, any head pose: exactly the static colour
    neutral = _params(sphere_rig)
    neutral.global_rot[:, 1] = 0.3
    assert torch.equal(_render(av, sphere_rig, neutral), _render(static, sphere_rig, neutral))
    # an expression: the geometry is the static avatar's, the colour is not
    p = _params(sphere_rig, expression=0.8, jaw=0.15)
    assert (_render(av, sphere_rig, p) - _render(static, sphere_rig, p)).abs().max() > 0.05
    # the offset is linear in the code: sh_dc + B @ code; sh_rest untouched
    code = appearance_code(p)
    sh = av.sh_at(code)
    assert torch.allclose(sh[0, :, 0], av.sh_dc[:, 0] + torch.einsum("ndc,d->nc", av.sh_dc_blend, code[0]), atol=1e-6)
    assert torch.equal(sh[0, :, 1:], av.sh_rest)
    with pytest.raises(ValueError, match="appearance code"):
        av.sh_at(code[:, :-1])


def test_position_blendshapes_move_gaussians_only_with_the_code(sphere_rig, tmp_path):
    """`--dynamic-geometry`: ``means_blend`` [N, D, 3] adds ``means_blend @ code`` (face units, in the parent
    face's frame) to each Gaussian's position: none at the neutral code, linear in the code, kept by files."""
    torch.manual_seed(0)
    av = init_avatar(sphere_rig, per_face=1, sh_degree=1, dynamic_appearance=True, dynamic_geometry=True)
    assert av.means_blend.shape == (av.num_gaussians, av.code_size, 3) and not av.means_blend.any()
    p = _params(sphere_rig, expression=0.6, jaw=0.1)
    assert torch.equal(_render(av, sphere_rig, p), _render(_without_blend(av), sphere_rig, p))  # zero: no effect
    with torch.no_grad():
        av.means_blend.normal_(0.0, 0.3)
        verts = sphere_rig(p).vertices
        code = appearance_code(p)
        rest = av.posed_geometry(verts, sphere_rig.faces)[0]
        moved = av.posed_geometry(verts, sphere_rig.faces, code=code)[0]
        neutral = av.posed_geometry(verts, sphere_rig.faces, code=torch.zeros_like(code))[0]
        half = av.posed_geometry(verts, sphere_rig.faces, code=code / 2)[0]
    assert torch.equal(rest, neutral) and (moved - rest).norm(dim=-1).mean() > 1e-3
    assert torch.allclose(half - rest, (moved - rest) / 2, atol=1e-6)  # linear in the code
    assert (_render(av, sphere_rig, p) - _render(_without_blend(av), sphere_rig, p)).abs().max() > 0.05
    back = load_avatar(save_avatar(av, tmp_path / "g.safetensors"), rig=sphere_rig)
    assert torch.equal(back.means_blend, av.means_blend)
    with pytest.raises(ValueError, match="position"):
        av.posed_geometry(verts, sphere_rig.faces, code=code[:, :-1])


def test_save_load_round_trip_keeps_the_blendshapes(sphere_rig, tmp_path):
    av = _with_blend(sphere_rig)
    path = save_avatar(av, tmp_path / "a.safetensors")
    back = load_avatar(path, rig=sphere_rig)
    assert back.code_size == av.code_size
    for k in TENSOR_NAMES:
        assert torch.equal(getattr(back, k), getattr(av, k)), k
    p = _params(sphere_rig, expression=0.5, jaw=0.1)
    assert torch.equal(_render(back, sphere_rig, p), _render(av, sphere_rig, p))


def test_an_old_file_without_blendshapes_loads_as_a_static_avatar(sphere_rig, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    av = init_avatar(sphere_rig, per_face=1, sh_degree=1)
    new = save_avatar(av, tmp_path / "new.safetensors")
    with safe_open(str(new), "pt") as f:
        meta = f.metadata()
    header = json.loads(meta["talksplat"])
    header.pop("appearance")
    old = tmp_path / "old.safetensors"  # what talksplat wrote before colour blendshapes existed
    save_file({k: getattr(av, k).detach() for k in TENSOR_NAMES if k != "sh_dc_blend"}, str(old),
              metadata={"talksplat": json.dumps(header)})
    back = load_avatar(old, rig=sphere_rig)
    assert back.code_size == 0 and back.sh_dc_blend.shape == (av.num_gaussians, 0, 3)
    p = _params(sphere_rig, expression=0.5, jaw=0.1)
    assert torch.equal(_render(back, sphere_rig, p), _render(av, sphere_rig, p))


def test_densification_keeps_blendshape_rows_with_their_gaussians(sphere_rig):
    from talksplat.fitting.strategy.ops import duplicate, remove, split

    av = _with_blend(sphere_rig)
    n = av.num_gaussians
    with torch.no_grad():  # tag every Gaussian: its row number in sh_dc and in every blendshape entry
        av.sh_dc[:, 0, 0] = torch.arange(n, dtype=torch.float32)
        av.sh_dc_blend[:] = torch.arange(n, dtype=torch.float32)[:, None, None]
    opts = {k: torch.optim.Adam([getattr(av, k)], lr=1e-3) for k in PARAM_NAMES}
    state = {"grad2d": torch.zeros(n)}
    g = torch.Generator().manual_seed(0)
    duplicate(av, opts, state, torch.rand(n, generator=g) < 0.3)
    split(av, opts, state, torch.rand(av.num_gaussians, generator=g) < 0.3)
    remove(av, opts, state, torch.rand(av.num_gaussians, generator=g) < 0.3)
    assert av.num_gaussians != n and av.sh_dc_blend.shape == (av.num_gaussians, av.code_size, 3)
    assert isinstance(av.sh_dc_blend, torch.nn.Parameter) and opts["sh_dc_blend"].param_groups[0]["params"][0] is av.sh_dc_blend
    tags = av.sh_dc[:, 0, 0]
    assert torch.equal(av.sh_dc_blend, tags[:, None, None].expand_as(av.sh_dc_blend))


@pytest.fixture(scope="module")
def expressive_dataset(open_rig, tmp_path_factory):
    """A synthetic open-head dataset whose colour darkens as the jaw opens (ground truth: blendshapes on
    jawOpen only)."""
    import benchmarks.synthetic_dataset as synthetic

    jaw_open = open_rig.expression_index("jawOpen")
    textured = synthetic.textured_avatar

    def darkening(rig, per_face=2):
        av = textured(rig, per_face=1)
        blend = torch.zeros(av.num_gaussians, appearance_code_size(rig.num_expression), 3)
        blend[:, jaw_open] = -2.5  # SH DC per unit of jawOpen (0..0.4 here): up to 0.28 darker in RGB
        return GaussianAvatar(*(getattr(av, k).detach() for k in TENSOR_NAMES[:7]), rig_name=av.rig_name,
                              rig_checksum=av.rig_checksum, sh_degree=av.sh_degree, sh_dc_blend=blend)

    root = tmp_path_factory.mktemp("dynamic_fit") / "ds"
    mp = pytest.MonkeyPatch()
    mp.setattr(synthetic, "textured_avatar", darkening)
    try:
        synthetic.write_synthetic_dataset(root, open_rig, T=16, size=32, cameras=(0.0,))
    finally:
        mp.undo()
    return root, jaw_open


def _train_psnr(tr) -> float:
    """Mean PSNR over the training images, tracked parameters."""
    from talksplat.fitting.data import FrameSampler
    from talksplat.fitting.losses import psnr

    train = set(tr.ds.split["train"])
    sampler = FrameSampler(tr.ds, "train", cache_mb=16, device=tr.device)
    bg = torch.ones(3)
    out = []
    with torch.no_grad():
        for i, f in enumerate(tr.ds.frames):
            if f.timestep in train:
                s = sampler.load(i)
                render, _ = tr.render(s, tr.frames.rig_params(torch.tensor([s.timestep]), tuned=False), bg, 0)
                out.append(float(psnr(render.clamp(0, 1), s.composite(bg))))
    return sum(out) / len(out)


def test_a_tiny_fit_learns_colour_that_follows_the_expression(expressive_dataset, tmp_path):
    from talksplat.fitting.config import FitConfig, LossConfig, OptimConfig
    from talksplat.fitting.trainer import Trainer

    ds, jaw_open = expressive_dataset
    optim = OptimConfig(lr_sh_dc=0.1, lr_sh_dc_blend=0.1, lr_local_means=0.0, lr_log_scales=0.0,
                        lr_local_quats=0.0, lr_opacity_logits=0.0)  # colour only: geometry stays as initialised
    psnrs, trainers = {}, {}
    for on in (True, False):
        cfg = FitConfig(dataset=ds, out=tmp_path / str(on), preset="fast", steps=30, sh_degree=0, quiet=True,
                        tune_params=False, eval_frames=0, side_by_side=0, dynamic_appearance=on, optim=optim,
                        background="white", device="cpu",
                        # 9444 Gaussians on 32x32 px: each covers a sliver of a pixel, so the image term's gradient
                        # per Gaussian is far smaller than in a real fit and the default L2 would win
                        loss=LossConfig(lambda_appearance=1e-3))
        tr = Trainer(cfg)
        tr.train(checkpoints=False)
        psnrs[on], trainers[on] = _train_psnr(tr), tr
    # the static avatar can only fit the mean colour; the blendshapes learn the darkening with jawOpen
    assert psnrs[True] > psnrs[False] + 1.5, psnrs
    blend = trainers[True].avatar.sh_dc_blend.detach()
    others = torch.ones(blend.shape[1], dtype=torch.bool)
    others[jaw_open] = False
    assert blend[:, jaw_open].mean() < -0.3  # the right unit, the right sign (ground truth -2.5)
    assert blend[:, jaw_open].abs().mean() > 2 * blend[:, others].abs().mean()
    # the checkpoint holds them and --resume brings them back
    tr = trainers[True]
    tr.save_checkpoint()
    from dataclasses import replace

    back = Trainer(replace(tr.cfg, resume=True))
    assert torch.equal(back.avatar.sh_dc_blend, tr.avatar.sh_dc_blend)
    assert torch.equal(back.optimizers["sh_dc_blend"].state[back.avatar.sh_dc_blend]["exp_avg"],
                       tr.optimizers["sh_dc_blend"].state[tr.avatar.sh_dc_blend]["exp_avg"])
