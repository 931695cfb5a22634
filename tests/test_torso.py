"""The torso (talksplat.avatar.torso): the bust proxy, the torso pose, torso Gaussians in avatar files and renders,
and `talksplat fit --torso` on a real GRID clip's whole frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talksplat.avatar import init_avatar, load_avatar, save_avatar
from talksplat.avatar.init import add_torso
from talksplat.avatar.torso import FOLLOW, bust_proxy, posed_bust, torso_poses


@pytest.fixture(scope="module")
def torso_avatar(open_rig):
    return add_torso(init_avatar(open_rig, per_face=1, sh_degree=0), open_rig, per_face=2)


def test_bust_proxy_hangs_under_the_neck_and_faces_out(open_rig):
    """The proxy starts at the neck's lowest ring, widens to adult shoulders below it and its triangles face away
    from the body (the binding frames' normals point out, as the rig's own)."""
    zero = open_rig.zero_params(1)
    root = open_rig.rest_joints(zero.shape, zero.expression)[0, open_rig.semantic_joints["global"]].numpy()
    tmpl = open_rig.template.numpy()
    neck = open_rig.region("neck").numpy()
    P, F = bust_proxy(tmpl, neck, root)
    world = P + root
    assert world[:, 1].max() <= tmpl[neck, 1].min() + 0.016  # not above the neck's lowest ring
    assert world[:, 1].min() < tmpl[neck, 1].min() - 0.3  # down the chest
    width = world[:, 0].max() - world[:, 0].min()
    assert 0.3 < width < 0.45, width  # shoulder to shoulder
    assert F.min() >= 0 and F.max() < len(P)
    tri = world[F]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centre = tri.mean(1)
    axis = np.array([tmpl[neck, 0].mean(), 0.0, tmpl[neck, 2].mean()])
    out = (centre - axis) * np.array([1, 0, 1])
    assert ((normal * out).sum(1) > 0).mean() > 0.95


def test_torso_poses_follow_the_head_weakly_and_smoothly():
    """The torso takes FOLLOW of the head's root rotation, smoothed over time and causally: a head that turns by
    0.5 rad from one frame to the next turns the torso by FOLLOW x 0.5 rad over several frames after it (never
    before); frame by frame (no fps) the same share without smoothing; the translation is the smoothed root."""
    T = 80
    rot = torch.zeros(T, 3)
    rot[25:, 1] = 0.5  # a sudden turn about +y
    root = torch.zeros(T, 3)
    root[25:, 0] = 0.02
    poses = torso_poses(rot, root, fps=25.0)
    angle = torch.atan2(poses[:, 0, 2], poses[:, 0, 0])  # rotation about +y
    assert angle[:25].abs().max() < 1e-6 and abs(float(angle[-1]) - FOLLOW * 0.5) < 1e-4
    steps = angle.diff()
    assert steps.max() < 0.3 * FOLLOW * 0.5 and (steps > 1e-3).sum() >= 5  # spread over frames, not one jump
    assert poses[:25, 0, 3].abs().max() < 1e-6 and abs(float(poses[-1, 0, 3]) - 0.02) < 1e-5
    assert float(poses[25, 0, 3]) < 0.01  # lags the head
    raw = torso_poses(rot, root)  # no fps: frame by frame
    assert abs(float(torch.atan2(raw[25, 0, 2], raw[25, 0, 0])) - FOLLOW * 0.5) < 1e-5
    p = torch.tensor([[0.0, -0.1, 0.05]])
    assert torch.allclose(posed_bust(p, raw[:1]), p + root[:1])  # at rest: the proxy at the root


def test_avatar_files_keep_the_torso_and_old_files_load(open_rig, torso_avatar, tmp_path):
    from safetensors.torch import load_file, save_file

    from talksplat.avatar import AvatarFileError

    av = torso_avatar
    F = open_rig.faces.shape[0]
    n_torso = int((av.binding >= F).sum())
    assert av.has_torso and n_torso == 2 * av.torso_faces.shape[0]
    path = save_avatar(av, tmp_path / "a.safetensors")
    back = load_avatar(path, rig=open_rig)
    assert back.has_torso and torch.equal(back.torso_vertices, av.torso_vertices)
    assert torch.equal(back.torso_faces, av.torso_faces) and torch.equal(back.binding, av.binding)
    # a file without the torso tensors (written before them) is a head-only avatar ...
    t = load_file(str(path))
    head = {k: (v[t["binding"] < F] if v.shape[:1] == t["binding"].shape else v) for k, v in t.items()
            if not k.startswith("torso_")}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(head, str(tmp_path / "old.safetensors"), metadata=meta)
    old = load_avatar(tmp_path / "old.safetensors", rig=open_rig)
    assert not old.has_torso and old.num_gaussians == av.num_gaussians - n_torso
    # ... and torso Gaussians without their proxy are refused, naming the file
    save_file({k: v for k, v in t.items() if not k.startswith("torso_")}, str(tmp_path / "bad.safetensors"),
              metadata=meta)
    with pytest.raises(AvatarFileError, match="bad.safetensors.*binding"):
        load_avatar(tmp_path / "bad.safetensors", rig=open_rig)


def test_torso_moves_with_its_pose_and_leaves_the_head_alone(open_rig, torso_avatar):
    """Rendered twice with the same head and two torso poses 3 cm apart sideways: the bust's pixels move, the
    face's do not; without a pose, render_avatar poses the torso from the frame's own parameters."""
    from talksplat.avatar.render import render_avatar
    from talksplat.avatar.torso import rig_torso_poses
    from talksplat.render.camera import intrinsics, look_at

    params = open_rig.zero_params(1)
    vm = look_at(torch.tensor([0.0, -0.1, 1.3]), torch.tensor([0.0, -0.1, 0.0]))[None]
    K = intrinsics(30.0, 160, 160)[None]
    with torch.no_grad():
        out = open_rig(params)
        pose = rig_torso_poses(open_rig, params, out.joints)
        moved = pose.clone()
        moved[:, 0, 3] += 0.03
        a = render_avatar(torso_avatar, open_rig, params, vm, K, 160, 160, torso=pose)[1][0, 0, ..., 0]
        b = render_avatar(torso_avatar, open_rig, params, vm, K, 160, 160, torso=moved)[1][0, 0, ..., 0]
        c = render_avatar(torso_avatar, open_rig, params, vm, K, 160, 160)[1][0, 0, ..., 0]
    assert torch.equal(a, c)
    rows = a.shape[0]
    face, bust = slice(0, int(rows * 0.45)), slice(int(rows * 0.75), rows)
    assert (a[bust] > 0.5).float().mean() > 0.3  # the bust fills the bottom
    assert (a[face] - b[face]).abs().max() < 0.02
    assert (a[bust] - b[bust]).abs().mean() > 0.02


def test_torso_fit_on_a_grid_clip(shared_data, tmp_path_factory):
    """`talksplat prep` keeps the training steps' whole frames and masks; `talksplat fit --torso` trains head and
    torso on them (one step in three) and scores the held-out whole frames beyond the head crop; the fitted torso
    Gaussians survive densification and the avatar file carries the proxy."""
    from talksplat.data_prep.config import PrepConfig
    from talksplat.data_prep.dataset import load_dataset
    from talksplat.data_prep.prep import run_prep
    from talksplat.fitting.config import FitConfig
    from talksplat.fitting.trainer import Trainer

    root = tmp_path_factory.mktemp("torso")
    run_prep(PrepConfig(videos=(shared_data / "grid" / "sbwe5n.mpg",), out=root / "ds", resolution=96, quiet=True,
                        source_frames=20))
    ds = load_dataset(root / "ds")
    sf = ds.source_frame
    train = [t for t in sf.masks]
    assert len(train) == 20 and set(train) <= set(ds.split["train"])
    assert set(ds.split["heldout"]) <= set(sf.frames)
    mask = ds.load_source_mask(train[0])
    assert mask.shape == (sf.height, sf.width) and 0.1 < (mask > 0.5).mean() < 0.8  # a person, not everything
    tr = Trainer(FitConfig(dataset=ds.root, out=root / "fit", preset="fast", steps=90, torso=True, torso_size=192,
                           torso_plate="person-free", sh_degree=0, threads=1, eval_frames=4, side_by_side=1, quiet=True))
    F = tr.rig.faces.shape[0]
    assert tr.avatar.has_torso and tr.torso_poses.shape == (75, 4, 4)
    assert np.array_equal(tr.plate, ds.load_plate(person_free=True))  # behind the torso: the background alone
    tr.train(checkpoints=False)
    assert int((tr.avatar.binding >= F).sum()) > 100
    held = tr.evaluate()
    print("held-out with --torso:", held)
    assert held["frame_body_psnr"] > 25 and held["frame_psnr"] > 22
    tr.write_outputs({"heldout": held})  # the fit folder's plate, where `talksplat drive` renders: the same one
    import cv2

    fit_plate = cv2.imread(str(root / "fit" / "plate.png"))[..., ::-1]
    assert np.array_equal(fit_plate, ds.load_plate(person_free=True))
    # driven as `talksplat drive` renders: the head turns, the shoulders follow (less, and later)
    from talksplat.driving.drive import render_batches

    seq = ds.rig_params[np.zeros(20, int)]  # the first frame held, then a turn at frame 10
    seq.frames["global_rot"] = seq.frames["global_rot"].copy()
    seq.frames["global_rot"][10:, 1] += 0.25
    vm = torch.as_tensor(sf.viewmat, dtype=torch.float32)
    K = torch.as_tensor(sf.K, dtype=torch.float32)
    av, rig = tr.avatar.cpu(), tr.rig.cpu()
    frames = np.concatenate(list(render_batches(av, rig, seq, vm, K, sf.width, sf.height, 8, fps=25.0))).astype(float)
    assert frames.shape == (20, sf.height, sf.width, 3)
    low = frames[:, int(sf.height * 0.85):]  # the shoulders, under the head
    change = np.abs(np.diff(low, axis=0)).mean(axis=(1, 2, 3))  # frame-to-frame, levels
    print("shoulder band change per frame:", np.round(change, 2))
    assert change[:9].max() < 0.01  # nothing moves before the turn (the torso follows, never anticipates)
    assert (change[9:] > 0.05).sum() >= 4 and change[9:].max() < 0.6 * change[9:].sum()  # after it, over frames
    # a dataset without the whole training frames (made before them, or --source-frames 0): one line, nothing made
    import json
    import shutil

    from talksplat.fitting.trainer import FitError

    old = root / "old"
    shutil.copytree(root / "ds", old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["source_frame"]["frame_masks"]
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FitError, match=f"--torso: {old}: no whole training frames"):
        Trainer(FitConfig(dataset=old, out=root / "fit_old", preset="fast", torso=True, quiet=True))
    assert not (root / "fit_old").exists()
    # one prepared before the person-free plate: fitted over the plate (the median torso stays in it), with a warning
    meta = json.loads((root / "ds" / "meta.json").read_text())
    del meta["source_frame"]["background_plate"]
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=f"{old}: no person-free plate"):
        tr = Trainer(FitConfig(dataset=old, out=root / "fit_old", preset="fast", torso=True, torso_plate="person-free",
                               quiet=True))
    assert np.array_equal(tr.plate, ds.load_plate())
    tr = Trainer(FitConfig(dataset=ds.root, out=root / "fit_default", preset="fast", torso=True, quiet=True))
    assert np.array_equal(tr.plate, ds.load_plate())  # the default: the plate that keeps the median torso


def test_every_rig_gets_a_bust_under_its_neck(tmp_path):
    """The proxy comes from the rig's `neck` region alone: a (synthetic) FLAME model gets one under its neck too,
    and its torso Gaussians render below the head."""
    from test_flame import synthetic_flame, write_flame

    from talksplat.avatar.render import render_avatar
    from talksplat.render.camera import intrinsics, look_at
    from talksplat.rigs import load_rig

    rig = load_rig(f"flame:{write_flame(tmp_path / 'generic_model.pkl', synthetic_flame())}")
    av = add_torso(init_avatar(rig, per_face=1, sh_degree=0), rig, per_face=2)
    params = rig.zero_params(1)
    with torch.no_grad():
        verts = rig(params).vertices[0]
        centre = verts.mean(0)
        vm = look_at(centre + torch.tensor([0.0, -0.1, 1.2]), centre + torch.tensor([0.0, -0.1, 0.0]))[None]
        alpha = render_avatar(av, rig, params, vm, intrinsics(35.0, 128, 128)[None], 128, 128)[1][0, 0, ..., 0]
    neck_bottom = float(verts[rig.region("neck"), 1].min())
    bust = av.torso_vertices.numpy()  # root-relative, at rest
    zero = rig.zero_params(1)
    root = rig.rest_joints(zero.shape, zero.expression)[0, rig.semantic_joints["global"]].numpy()
    assert (bust[:, 1] + root[1]).max() <= neck_bottom + 0.016
    rows = alpha.shape[0]
    assert (alpha[int(rows * 0.8):] > 0.5).float().mean() > 0.3  # the bottom of the image: the bust
