"""BindingStrategy: densification of triangle-bound Gaussians, with real CPU rasterization."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch

from talksplat.avatar import init_avatar
from talksplat.avatar.gaussians import PARAM_NAMES
from talksplat.avatar.render import render_avatar
from talksplat.fitting.strategy import BindingStrategy, keep_one_per_face, remove
from talksplat.render import intrinsics, orbit_cameras
from talksplat.render.cpu import quat_to_rotmat

W = H = 48
LRS = {"local_means": 2e-3, "local_quats": 5e-3, "log_scales": 5e-3, "sh_dc": 2e-2, "sh_rest": 1e-3,
       "opacity_logits": 5e-2, "sh_dc_blend": 2e-2, "means_blend": 1e-3}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny renders (conftest.py)


def _cams(n: int = 2):
    vm = orbit_cameras(n, 0.35, start_azimuth_deg=-30, sweep_deg=60)
    K = intrinsics(fov_deg=45, width=W, height=H)[None].expand(n, 3, 3).contiguous()
    return vm, K


def _setup(rig):
    torch.manual_seed(0)
    avatar = init_avatar(rig, per_face=2, sh_degree=1, dynamic_appearance=True,  # colour and position
                         dynamic_geometry=True)  # blendshapes too
    optimizers = {k: torch.optim.Adam([getattr(avatar, k)], lr=LRS[k]) for k in PARAM_NAMES}
    return avatar, optimizers


def _render(avatar, rig, **raster):
    vm, K = _cams()
    params = rig.zero_params(1)
    params.expression.fill_(0.5)  # a nonzero appearance code: the colour blendshapes get gradients too
    colors, _, metas = render_avatar(avatar, rig, params, vm, K, W, H, backend="cpu", **raster)
    return colors[0], metas[0]


def _backward_and_step(avatar, rig, optimizers, strategy, state, step, **raster):
    """One real training step: render, pre-hook, backward, optimizer step. Returns the meta."""
    colors, info = _render(avatar, rig, **raster)
    strategy.step_pre_backward(avatar, optimizers, state, step, info)
    (colors - 0.3).abs().mean().backward()
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad(set_to_none=True)
    return info


def _assert_in_sync(avatar, optimizers, state):
    n = avatar.num_gaussians
    assert avatar.binding.shape == (n,)
    for k in PARAM_NAMES:
        p = getattr(avatar, k)
        assert isinstance(p, torch.nn.Parameter) and p.shape[0] == n
        opt = optimizers[k]
        assert opt.param_groups[0]["params"][0] is p
        st = opt.state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            assert st[key].shape == p.shape, (k, key)
    assert state["grad2d"].shape == (n,) and state["count"].shape == (n,)


def test_grow_clone_and_split_from_hand_set_gradients(sphere_rig):
    rig = sphere_rig
    avatar, optimizers = _setup(rig)
    strategy = BindingStrategy(refine_start_iter=0, refine_every=10, reset_every=1000)
    strategy.check_sanity(avatar, optimizers)
    state = strategy.initialize_state()
    n0 = avatar.num_gaussians
    info = _backward_and_step(avatar, rig, optimizers, strategy, state, step=10)

    visible = (info["radii"] > 0).all(-1).all(0)  # [N] visible in every camera
    idx = torch.where(visible)[0]
    clone_ids, split_ids = idx[:7], idx[7:12]
    with torch.no_grad():
        avatar.log_scales[clone_ids] = torch.tensor([0.2, 0.03, 0.2]).log()
        avatar.log_scales[split_ids] = torch.tensor([0.9, 0.1, 0.7]).log()
        avatar.local_quats[split_ids] = torch.tensor([0.9, 0.1, -0.3, 0.2])
    grad = torch.zeros_like(info["means2d"])
    grad[:, clone_ids] = torch.tensor([1e-3, 0.0])  # pixels^-1; normalised: 1e-3 * 24 * 2 = 0.048
    grad[:, split_ids] = torch.tensor([0.0, -1e-3])
    grad[:, idx[12:20]] = 1e-7  # below grow_grad2d after normalisation
    info["means2d"].grad = grad

    before = {k: getattr(avatar, k).detach().clone() for k in PARAM_NAMES}
    binding_before = avatar.binding.clone()
    st_before = {k: {kk: v.clone() for kk, v in optimizers[k].state[getattr(avatar, k)].items()} for k in PARAM_NAMES}

    strategy.step_post_backward(avatar, optimizers, state, step=10, info=info)

    last = state["last"]
    assert (last["cloned"], last["split"], last["pruned"], last["capped"]) == (7, 5, 0, 0)
    assert avatar.num_gaussians == last["n"] == n0 + 7 + 5
    _assert_in_sync(avatar, optimizers, state)
    assert torch.all(state["grad2d"] == 0) and torch.all(state["count"] == 0)

    # layout (as gsplat): clones appended, then split parents removed and their 2 children appended
    rest = torch.ones(n0 + 7, dtype=torch.bool)
    rest[split_ids] = False
    parents_after_clone = torch.cat([torch.arange(n0), clone_ids])
    kept = parents_after_clone[rest]  # original index of each surviving row
    n_rest = kept.shape[0]
    children = torch.cat([split_ids, split_ids])
    assert torch.equal(avatar.binding[:n_rest], binding_before[kept])
    assert torch.equal(avatar.binding[n_rest:], binding_before[children])
    for k in PARAM_NAMES:
        p = getattr(avatar, k).detach()
        assert torch.equal(p[:n_rest], before[k][kept]), k
        st = optimizers[k].state[getattr(avatar, k)]
        assert torch.equal(st["step"], st_before[k]["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            old = st_before[k][key]
            assert torch.equal(st[key][:n0 - 5], old[kept[:n0 - 5]]), (k, key)  # surviving originals
            assert torch.all(st[key][n0 - 5:] == 0), (k, key)  # clones and split children are new
            assert st_before[k][key][clone_ids].abs().sum() > 0 or k == "sh_rest"
        if k not in ("local_means", "log_scales"):
            assert torch.equal(p[n_rest:], before[k][children]), k
    # clones are exact copies of their parents (rows n0-5 .. n0+2 after split removed 5 originals)
    assert torch.equal(avatar.binding[n0 - 5:n_rest], binding_before[clone_ids])
    assert torch.allclose(avatar.log_scales[n0 - 5:n_rest], before["log_scales"][clone_ids])
    # split children: scales / 1.6, means sampled from the parent's Gaussian in the face frame
    assert torch.allclose(avatar.log_scales[n_rest:], before["log_scales"][children] - math.log(1.6), atol=1e-6)
    R = quat_to_rotmat(before["local_quats"][children])
    z = torch.einsum("nji,nj->ni", R, avatar.local_means[n_rest:].detach() - before["local_means"][children])
    z = z / before["log_scales"][children].exp()
    assert z.abs().max() < 6 and z.abs().max() > 1e-3
    assert not torch.allclose(avatar.local_means[n_rest:n_rest + 5], avatar.local_means[n_rest + 5:])

    # the avatar still renders and trains after surgery
    _backward_and_step(avatar, rig, optimizers, strategy, state, step=11)
    assert optimizers["sh_dc"].state[avatar.sh_dc]["exp_avg"][n0 - 5:].abs().sum() > 0


def test_prune_keeps_one_gaussian_per_face(sphere_rig):
    rig = sphere_rig
    avatar, optimizers = _setup(rig)
    strategy = BindingStrategy(refine_start_iter=0, refine_every=10, reset_every=1000, grow_grad2d=1e9)
    state = strategy.initialize_state()
    # faces 0..9 lose their Gaussians beforehand: they must stay empty
    remove(avatar, optimizers, None, avatar.binding < 10)
    faces = torch.unique(avatar.binding)
    info = _backward_and_step(avatar, rig, optimizers, strategy, state, step=20)
    n = avatar.num_gaussians
    with torch.no_grad():
        tiny = torch.rand(n) * 0.004 + 1e-4  # all below prune_opa = 0.005
        tiny[::4] = 0.9  # every other face (first Gaussian of even faces) has an opaque one
        avatar.opacity_logits.copy_(torch.logit(tiny))
    binding = avatar.binding.clone()
    expect_best = {}
    for f in faces.tolist():
        ids = torch.where(binding == f)[0]
        expect_best[f] = float(tiny[ids].max())

    strategy.step_post_backward(avatar, optimizers, state, step=20, info=info)

    assert state["last"]["cloned"] == state["last"]["split"] == 0
    assert avatar.num_gaussians == len(faces)
    assert torch.equal(torch.sort(avatar.binding).values, faces)  # exactly one per face that had any
    assert state["last"]["rescued"] == len(faces) - int((tiny > 0.5).sum())
    got = torch.sigmoid(avatar.opacity_logits.detach())
    for i, f in enumerate(avatar.binding.tolist()):
        assert got[i].item() == pytest.approx(expect_best[f], rel=1e-5)
    _assert_in_sync(avatar, optimizers, state)


def test_keep_one_per_face_helper():
    binding = torch.tensor([0, 0, 1, 1, 1, 3])
    score = torch.tensor([0.1, 0.3, 0.2, 0.5, 0.4, 0.05])
    kept = torch.tensor([False, False, True, False, False, False])
    assert keep_one_per_face(binding, score, kept).tolist() == [False, True, False, False, False, True]


def test_budget_caps_growth_keeping_largest_gradients(sphere_rig):
    rig = sphere_rig
    avatar, optimizers = _setup(rig)
    n0 = avatar.num_gaussians
    strategy = BindingStrategy(refine_start_iter=0, refine_every=10, reset_every=1000, budget=n0 + 10,
                               grow_scale_face=10.0)  # everything counts as small: clones only
    state = strategy.initialize_state()
    info = _backward_and_step(avatar, rig, optimizers, strategy, state, step=10)
    visible = (info["radii"] > 0).all(-1).all(0)
    g = torch.rand(n0) * 1e-3 + 1e-4  # all well above the threshold
    info["means2d"].grad = torch.stack([g, torch.zeros(n0)], -1)[None].expand(2, n0, 2).clone()
    binding_before = avatar.binding.clone()
    strategy.step_post_backward(avatar, optimizers, state, step=10, info=info)
    assert avatar.num_gaussians == n0 + 10
    assert state["last"]["cloned"] == 10 and state["last"]["capped"] == int(visible.sum()) - 10
    top = torch.sort(torch.topk(torch.where(visible, g, -1.0), 10).indices).values
    assert torch.equal(avatar.binding[n0:], binding_before[top])
    _assert_in_sync(avatar, optimizers, state)

    # at the budget: no growth at all
    info = _backward_and_step(avatar, rig, optimizers, strategy, state, step=20)
    info["means2d"].grad = torch.full_like(info["means2d"], 1e-3)
    strategy.step_post_backward(avatar, optimizers, state, step=20, info=info)
    assert avatar.num_gaussians == n0 + 10 and state["last"]["cloned"] == 0


def test_opacity_reset(sphere_rig):
    rig = sphere_rig
    avatar, optimizers = _setup(rig)
    strategy = BindingStrategy(refine_start_iter=1000, reset_every=50, refine_stop_iter=200)
    state = strategy.initialize_state()
    with torch.no_grad():
        avatar.opacity_logits[:5] = torch.logit(torch.tensor(0.001))
    for step in (0, 49):  # no reset at step 0 or between resets
        info = _backward_and_step(avatar, rig, optimizers, strategy, state, step=step)
        strategy.step_post_backward(avatar, optimizers, state, step=step, info=info)
        assert torch.sigmoid(avatar.opacity_logits[5:]).min() > 0.5
    info = _backward_and_step(avatar, rig, optimizers, strategy, state, step=50)
    before = avatar.opacity_logits.detach().clone()
    st_means = optimizers["local_means"].state[avatar.local_means]["exp_avg"].clone()
    step_before = optimizers["opacity_logits"].state[avatar.opacity_logits]["step"].clone()
    strategy.step_post_backward(avatar, optimizers, state, step=50, info=info)
    opa = torch.sigmoid(avatar.opacity_logits.detach())
    assert opa.max() <= 2 * strategy.prune_opa + 1e-6
    assert torch.equal(avatar.opacity_logits[:5].detach(), before[:5])  # lower ones untouched
    st = optimizers["opacity_logits"].state[avatar.opacity_logits]
    assert torch.all(st["exp_avg"] == 0) and torch.all(st["exp_avg_sq"] == 0)
    assert torch.equal(st["step"], step_before)
    assert torch.equal(optimizers["local_means"].state[avatar.local_means]["exp_avg"], st_means)
    assert state["last_reset"] == 50 and state["last"] is None
    _assert_in_sync(avatar, optimizers, state)
    # no reset at or after refine_stop_iter
    with torch.no_grad():
        avatar.opacity_logits.fill_(2.0)
    info = _backward_and_step(avatar, rig, optimizers, strategy, state, step=200)
    strategy.step_post_backward(avatar, optimizers, state, step=200, info=info)
    assert torch.sigmoid(avatar.opacity_logits).min() > 0.8  # moved by the optimizer step only


def test_short_optimisation_with_refinements(sphere_rig):
    rig = sphere_rig
    avatar, optimizers = _setup(rig)
    torch.manual_seed(1)
    target_avatar = copy.deepcopy(avatar)
    with torch.no_grad():
        target_avatar.sh_dc.add_(0.4 * torch.randn_like(target_avatar.sh_dc))
        target_avatar.local_means.add_(0.1 * torch.randn_like(target_avatar.local_means))
        target, _ = _render(target_avatar, rig)
    strategy = BindingStrategy(refine_start_iter=10, refine_every=20, reset_every=1000, budget=1200,
                               grow_grad2d=2e-4)
    strategy.check_sanity(avatar, optimizers)
    state = strategy.initialize_state()
    n0 = avatar.num_gaussians
    losses, refined_at, sizes = [], [], []
    for step in range(60):
        colors, info = _render(avatar, rig)
        strategy.step_pre_backward(avatar, optimizers, state, step, info)
        loss = (colors - target).abs().mean()
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        strategy.step_post_backward(avatar, optimizers, state, step, info)
        losses.append(loss.item())
        if state["last"] is not None and state["last"]["step"] == step:
            refined_at.append(step)
            sizes.append(state["last"]["n"])
    assert refined_at == [20, 40]
    assert avatar.num_gaussians > n0 and avatar.num_gaussians <= 1200
    assert sizes[-1] == avatar.num_gaussians
    _assert_in_sync(avatar, optimizers, state)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    strategy.check_sanity(avatar, optimizers)


def test_absgrad_and_list_of_metas(sphere_rig):
    rig = sphere_rig
    avatar, optimizers = _setup(rig)
    strategy = BindingStrategy(absgrad=True, refine_start_iter=100)
    vm, K = _cams()
    states = []
    for b in (1, 2):  # one frame, then the same frame twice in one step (loss = mean over frames)
        state = strategy.initialize_state()
        colors, _, metas = render_avatar(avatar, rig, rig.zero_params(b), vm, K, W, H, backend="cpu", absgrad=True)
        strategy.step_pre_backward(avatar, optimizers, state, 1, metas)
        (colors - 0.3).abs().mean().backward()
        strategy.step_post_backward(avatar, optimizers, state, 1, metas)
        assert state["grad2d"].shape == (avatar.num_gaussians,)
        assert state["grad2d"].sum() > 0
        assert state["count"].max() == 2 * b  # b frames x 2 cameras
        states.append(state)
    # the mean normalised gradient does not depend on how many frames share a step
    assert torch.allclose(states[1]["grad2d"], 2 * states[0]["grad2d"], rtol=1e-4, atol=1e-9)
    assert torch.equal(states[1]["count"], 2 * states[0]["count"])
    # plain grad without absgrad rendering is refused clearly
    colors, _, metas = render_avatar(avatar, rig, rig.zero_params(1), vm, K, W, H, backend="cpu")
    colors.mean().backward()
    with pytest.raises(RuntimeError, match="absgrad"):
        strategy.step_post_backward(avatar, optimizers, state, 2, metas[0])


def test_check_sanity(sphere_rig):
    avatar, optimizers = _setup(sphere_rig)
    strategy = BindingStrategy()
    strategy.check_sanity(avatar, optimizers)
    missing = {k: v for k, v in optimizers.items() if k != "log_scales"}
    with pytest.raises(ValueError, match="log_scales"):
        strategy.check_sanity(avatar, missing)
    wrong = dict(optimizers, sh_dc=torch.optim.Adam([torch.nn.Parameter(avatar.sh_dc.detach().clone())]))
    with pytest.raises(ValueError, match="sh_dc"):
        strategy.check_sanity(avatar, wrong)
    two = dict(optimizers, sh_dc=torch.optim.Adam([avatar.sh_dc, avatar.sh_rest]))
    with pytest.raises(ValueError, match="one param group"):
        strategy.check_sanity(avatar, two)
    # a frozen parameter needs no optimizer
    avatar.sh_rest.requires_grad_(False)
    strategy.check_sanity(avatar, {k: v for k, v in optimizers.items() if k != "sh_rest"})


# ------------------------------------------------------------------------ config, CLI and the trainer
def _spread_opacities(avatar, seed: int = 1) -> None:
    """Opacities evenly spread over (0.01, 0.99), in random order."""
    g = torch.Generator().manual_seed(seed)
    o = torch.linspace(0.01, 0.99, avatar.num_gaussians)[torch.randperm(avatar.num_gaussians, generator=g)]
    with torch.no_grad():
        avatar.opacity_logits.copy_(torch.logit(o))


def test_a_threshold_set_on_the_command_line_reaches_the_strategy_and_changes_pruning(sphere_rig, capsys):
    import tyro

    from talksplat.cli import Command, main
    from talksplat.fit_command import FitCommandConfig

    cfg = tyro.cli(Command, args=["fit", "ds", "--strategy.prune-opa", "0.3", "--strategy.refine-every", "7"])
    assert isinstance(cfg, FitCommandConfig)
    assert cfg.strategy.prune_opa == 0.3 and cfg.strategy.refine_every == 7
    assert cfg.strategy.grow_grad2d == 0.0002  # the others keep the strategy's own defaults
    strategy = cfg.strategy.build(steps=1000, budget=10 ** 6)
    assert isinstance(strategy, BindingStrategy)
    assert (strategy.prune_opa, strategy.refine_every, strategy.refine_stop_iter) == (0.3, 7, 750)
    default = FitCommandConfig(dataset="ds").strategy.build(steps=1000, budget=10 ** 6)
    assert default.prune_opa == BindingStrategy().prune_opa == 0.005

    counts = {}
    for name, strat in (("default", default), ("cli", strategy)):
        avatar, optimizers = _setup(sphere_rig)
        _spread_opacities(avatar)
        faces_before = set(avatar.binding.tolist())
        state = strat.initialize_state()
        _backward_and_step(avatar, sphere_rig, optimizers, strat, state, 599)  # Adam state to carry along
        counts[name] = strat.refine(avatar, optimizers, state, step=600)
        assert set(avatar.binding.tolist()) == faces_before  # no face left empty
        _assert_in_sync(avatar, optimizers, state)
        if name == "cli":
            low = torch.sigmoid(avatar.opacity_logits.detach()) < 0.3
            assert int(low.sum()) == counts[name]["rescued"]  # only the rescued ones stay below it
    assert counts["default"]["pruned"] == 0  # every opacity is above 0.005
    assert counts["cli"]["pruned"] > 0.2 * counts["cli"]["n"]

    # out of range: one line, before any work
    assert main(["fit", "ds", "--strategy.prune-opa", "0.7"]) == 1
    assert "--strategy.prune-opa 0.7: out of range (above 0, up to 0.5)" in capsys.readouterr().err


def test_prune_opa_at_its_maximum_resets_without_clamping(sphere_rig):
    """prune_opa 0.5 (the top of its range): the reset value 2 * 0.5 = 1 clamps nothing (no log(1/0))."""
    avatar, optimizers = _setup(sphere_rig)
    strategy = BindingStrategy(prune_opa=0.5, refine_start_iter=10 ** 6, reset_every=10)
    state = strategy.initialize_state()
    info = _backward_and_step(avatar, sphere_rig, optimizers, strategy, state, 10)
    before = avatar.opacity_logits.detach().clone()
    strategy.step_post_backward(avatar, optimizers, state, 10, info)
    assert state["last_reset"] == 10
    assert torch.equal(avatar.opacity_logits.detach(), before)  # nothing clamped
    assert not optimizers["opacity_logits"].state[avatar.opacity_logits]["exp_avg"].any()  # moments reset


class _Recorder:
    """A densification strategy of our own: records the hooks and removes the first Gaussian at step 1."""

    def __init__(self):
        self.calls = []

    def initialize_state(self):
        return {"posts": 0}

    def check_sanity(self, avatar, optimizers):
        self.calls.append(("sanity", tuple(sorted(optimizers))))

    def step_pre_backward(self, avatar, optimizers, state, step, info):
        self.calls.append(("pre", step))
        info["means2d"].retain_grad()

    def step_post_backward(self, avatar, optimizers, state, step, info):
        self.calls.append(("post", step))
        state["posts"] += 1
        if step == 1:
            mask = torch.zeros(avatar.num_gaussians, dtype=torch.bool, device=avatar.binding.device)
            mask[0] = True
            remove(avatar, optimizers, state, mask)


@dataclass
class _RecorderConfig:
    """A strategy config of our own: what FitConfig.strategy may hold besides BindingStrategyConfig."""

    def build(self, steps: int, budget: int):
        return _Recorder()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from talksplat.benchmarks.synthetic_dataset import write_synthetic_dataset
    from talksplat.rigs import load_rig

    root = tmp_path_factory.mktemp("strategy_fit") / "ds"
    write_synthetic_dataset(root, load_rig("open"), T=5, size=32, cameras=(0.0,))
    return root


def test_the_trainer_takes_any_object_with_the_strategy_hooks(tiny_dataset, tmp_path):
    from dataclasses import replace

    from talksplat.avatar.gaussians import PARAM_NAMES as NAMES
    from talksplat.fitting.config import PRESETS, FitConfig
    from talksplat.fitting.strategy import Strategy, StrategyConfig
    from talksplat.fitting.trainer import Trainer

    cfg = FitConfig(dataset=tiny_dataset, out=tmp_path / "fit", preset="fast", steps=3, sh_degree=0, quiet=True,
                    eval_frames=0)
    # the default: built from cfg.strategy with the run's step count and the preset's budget
    default = Trainer(cfg).strategy
    assert isinstance(default, BindingStrategy)
    assert (default.refine_stop_iter, default.budget) == (int(0.75 * 3), PRESETS["fast"][1])

    rec = _Recorder()
    assert isinstance(rec, Strategy) and isinstance(_RecorderConfig(), StrategyConfig)
    tr = Trainer(replace(cfg, out=tmp_path / "own", overwrite=True), strategy=rec)
    n0 = tr.avatar.num_gaussians
    tr.train(checkpoints=False)
    assert rec.calls == [("sanity", tuple(sorted(NAMES))), ("pre", 0), ("post", 0), ("pre", 1), ("post", 1),
                         ("pre", 2), ("post", 2)]
    assert tr.avatar.num_gaussians == n0 - 1 and tr.strategy_state == {"posts": 3}
    # its state goes into the checkpoint and comes back on --resume
    tr.save_checkpoint()
    resumed = Trainer(replace(cfg, out=tmp_path / "own", resume=True), strategy=_Recorder())
    assert resumed.strategy_state == {"posts": 3} and resumed.avatar.num_gaussians == n0 - 1

    # a strategy config of another type: the trainer builds whatever it is given
    built = Trainer(replace(cfg, out=tmp_path / "cfg", strategy=_RecorderConfig()))
    assert isinstance(built.strategy, _Recorder) and built.strategy.calls[0][0] == "sanity"

    with pytest.raises(TypeError, match="not a densification strategy"):
        Trainer(replace(cfg, out=tmp_path / "bad"), strategy=object())
    assert not (tmp_path / "bad").exists()  # refused before the output folder is touched


def test_the_configs_import_no_torch():
    """The strategy's config lives apart from its torch implementation: the fit command's configs (and the
    strategy package itself) load without torch."""
    import subprocess
    import sys

    code = ("import sys\nimport talksplat.fit_command, talksplat.fitting.config, talksplat.driving.config\n"
            "import talksplat.fitting.strategy as s\nassert s.BindingStrategyConfig and s.Strategy\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
