"""The plate and the source frame (talksplat.data_prep.plate): its parts on small synthetic images, then on a real
GRID clip through `talksplat prep` (the plate against the clip's own held-out frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talksplat.data_prep.framing import crop_image, crop_intrinsics
from talksplat.data_prep.plate import (PlateBuilder, fill_holes, frame_scale, head_region, head_silhouettes,
                                       person_region, scale_intrinsics, warp_view)


def _scene(H: int = 60, W: int = 80) -> np.ndarray:
    """A smooth, non-constant background: [H, W, 3] uint8."""
    y, x = np.mgrid[:H, :W]
    return np.stack([40 + 2 * x, 30 + 3 * y, 200 - x - y], -1).clip(0, 255).astype(np.uint8)


def test_plate_is_the_median_of_what_the_head_leaves_visible():
    bg = _scene()
    rng = np.random.default_rng(0)
    b = PlateBuilder(80, 60)
    for t in range(9):  # a bright "head" disc moving across; noise on every frame
        y, x = np.mgrid[:60, :80]
        head = (x - (30 + 2 * t)) ** 2 + (y - 30) ** 2 < 12 ** 2
        f = bg.astype(int) + rng.integers(-3, 4, bg.shape)
        f[head] = [250, 250, 250]
        b.add(f.clip(0, 255).astype(np.uint8), ~head)
    plate, observed = b.build()
    assert observed.mean() > 0.9
    err = np.abs(plate.astype(int) - bg)
    assert err[observed].max() <= 3  # the median of the visible pixels: the background, not the head
    # never-seen pixels (the disc's middle, covered in every frame) are filled from around them, not left black
    assert (~observed).any() and err[~observed].mean() < 20


def test_fill_holes_keeps_known_pixels_and_fills_smoothly():
    img = _scene()
    known = np.ones(img.shape[:2], bool)
    known[20:40, 30:50] = False
    out = fill_holes(np.where(known[..., None], img, 0).astype(np.uint8), known)
    assert np.array_equal(out[known], img[known])
    err = np.abs(out.astype(int) - img)[~known]
    assert err.mean() < 15 and err.max() < 60  # a gradient's hole filled near the gradient


def test_head_region_adds_hair_above_the_middle_and_keeps_the_torso():
    sil = np.zeros((40, 40), bool)
    sil[10:30, 15:25] = True
    fg = np.zeros_like(sil)
    fg[5:12, 12:28] = True  # hair above and beside the silhouette
    fg[32:40, 0:40] = True  # shoulders below
    r = head_region(sil, fg, margin=4)
    assert r[5, 14] and r[6, 27]  # hair within the margin
    assert not r[35, 5] and not r[35, 20]  # the torso stays in the plate
    assert np.array_equal(r & ~fg, sil & ~fg)


def test_person_region_is_the_dilated_person_and_the_head():
    head = np.zeros((40, 40), bool)
    head[5:15, 15:25] = True  # hair the segmentation missed
    fg = np.zeros_like(head)
    fg[15:40, 10:30] = True  # neck and torso
    r = person_region(head, fg, dilate=3)
    assert r[head].all() and r[fg].all()
    assert r[20, 7] and not r[20, 6]  # three pixels beside the person, no more
    assert not r[2, 2] and not r[30, 35]  # the background stays


def test_silhouette_of_a_triangle():
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    verts = torch.tensor([[[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, 1.0]]])  # camera = world
    m = head_silhouettes(verts, torch.tensor([[0, 1, 2]]), K, np.eye(4), 100, 80, dilate=0)[0]
    # projected: (40, 30), (60, 30), (50, 50) px (pixel centres at +0.5)
    assert m[35, 49] and m[45, 49] and not m[25, 49] and not m[35, 30] and not m[55, 49]
    assert 0.6 < m.sum() / 200 < 1.4  # the triangle's area: 20 x 20 / 2 px
    md = head_silhouettes(verts, torch.tensor([[0, 1, 2]]), K, np.eye(4), 100, 80, dilate=5)[0]
    assert md[25, 49] and (md | ~m).all()


def test_warp_view_is_the_crop_of_the_source_camera():
    rng = np.random.default_rng(1)
    img = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    img = np.asarray(torch.nn.functional.avg_pool2d(torch.from_numpy(img).permute(2, 0, 1).float()[None], 5, 1, 2)[0]
                     .permute(1, 2, 0).round().byte())  # smooth enough for bilinear resampling to agree
    K = np.array([[100.0, 0, 60], [0, 100, 45], [0, 0, 1]])
    box = np.array([55.0, 40.0, 50.0])
    for res in (50, 64, 20):
        a = crop_image(img, box, res).astype(int)
        b = warp_view(img, K, crop_intrinsics(K, box, res), res, res).astype(int)
        assert np.abs(a - b)[2:-2, 2:-2].mean() < 1.0, res
    # and back: a crop warped to the source camera lands where it was cut
    Kc = crop_intrinsics(K, box, 50)
    back = warp_view(crop_image(img, box, 50), Kc, K, 120, 90).astype(int)
    inner = (slice(20, 60), slice(35, 75))
    assert np.abs(back[inner] - img[inner]).mean() < 2.0


def test_frame_scale_and_intrinsics():
    assert frame_scale(360, 288) == (1.0, 360, 288)
    s, w, h = frame_scale(3840, 2160)
    assert (w, h) == (1920, 1080) and s == 0.5
    s, w, h = frame_scale(1001, 333, 500)
    assert w % 2 == 0 and h % 2 == 0 and w == 500
    K = np.array([[100.0, 0, 50], [0, 90, 40], [0, 0, 1]])
    assert np.allclose(scale_intrinsics(K, 0.5), [[50, 0, 25], [0, 45, 20], [0, 0, 1]])


@pytest.fixture(scope="module")
def grid_prep(shared_data, tmp_path_factory):
    from talksplat.data_prep.config import PrepConfig
    from talksplat.data_prep.dataset import load_dataset
    from talksplat.data_prep.prep import run_prep

    out = tmp_path_factory.mktemp("plate") / "ds"
    run_prep(PrepConfig(videos=(shared_data / "grid" / "lbax4n.mpg",), out=out, resolution=96, quiet=True))
    return load_dataset(out)


def test_prep_writes_the_plate_and_the_heldout_frames(grid_prep, open_rig):
    """The plate of a real clip: outside the head it is the clip's own held-out frames (which it was partly made from,
    at other time steps), within the encoder's and the speaker's noise; the head's region is left out."""
    ds = grid_prep
    sf = ds.source_frame
    assert (sf.width, sf.height) == (360, 288)
    held = ds.split["heldout"]
    assert set(held) <= set(sf.frames) and len(held) == 15  # beside the training steps' frames (`--torso`)
    assert sorted(sf.masks) == sorted(set(sf.frames) - set(held)) == ds.split["train"]  # every one, 60 < 300
    plate = ds.load_plate()
    assert plate.shape == (288, 360, 3)
    seq = ds.rig_params[np.array(held)]
    with torch.no_grad():
        verts = open_rig(seq.to_params()).vertices
    head = head_silhouettes(verts, open_rig.faces, sf.K, sf.viewmat, sf.width, sf.height, dilate=12)
    for t, h in zip(held, head):
        frame = ds.load_source_frame(t).astype(float)
        err = np.abs(frame - plate)
        assert err[~h].mean() < 6, t  # background and torso: the frame itself
        assert err[h].mean() > 2 * err[~h].mean()  # the head is not in the plate
    # the crops' cameras are crops of the source camera: the plate seen by a crop is that crop of the plate
    fr = ds.frames[0]
    view = warp_view(plate, sf.K, fr.K, fr.width, fr.height).astype(float)
    img = ds.load_image(fr).astype(float)
    corner = (slice(0, 12), slice(0, 12))
    assert np.abs(view[corner] - img[corner]).mean() < 8


def test_the_person_free_plate_is_the_background_alone(grid_prep):
    """Prep's second plate, behind torso Gaussians: where the clip's person masks say background in every kept frame,
    both plates are that background; where they say person in every one (the torso under the head), the plate keeps
    the torso (the frames' own colours) and the person-free plate does not (it is filled from the background)."""
    import cv2

    ds = grid_prep
    sf = ds.source_frame
    assert sf.background_plate == "plate_background.png"
    assert (ds.root / "plate_background_observed.png").is_file()
    plate, free = ds.load_plate().astype(float), ds.load_plate(person_free=True).astype(float)
    steps = sorted(sf.masks)[::6]
    masks = np.stack([ds.load_source_mask(t) for t in steps])
    frames = np.stack([ds.load_source_frame(t) for t in steps]).astype(float)
    person, background = (masks > 0.5).all(0), (masks < 0.5).all(0)
    seen = cv2.imread(str(ds.root / "plate_observed.png"), cv2.IMREAD_GRAYSCALE) > 127  # not the head's region
    torso = person & seen & (np.arange(sf.height)[:, None] > 0.75 * sf.height)  # the torso, below the head
    assert torso.sum() > 500 and background.sum() > 0.2 * background.size
    far = background.copy()  # the background away from the person's (soft) outline
    far &= cv2.erode(background.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert np.abs(free - plate)[far].mean() < 1.5
    err_plate = np.abs(frames - plate)[:, torso].mean()
    err_free = np.abs(frames - free)[:, torso].mean()
    print(f"torso: frames vs plate {err_plate:.1f}, vs person-free plate {err_free:.1f} levels")
    assert err_plate < 8 and err_free > 3 * err_plate


def test_masks_add_the_rig_silhouette_where_it_lies_on_the_person(grid_prep, open_rig):
    """Prep's mask prior: each mask holds the tracked rig's silhouette in its crop, and that silhouette lies on the
    person the segmentation found (at least 97 % of it inside the segmented foreground): a prior that fills holes,
    not one that paints background in."""
    from talksplat.data_prep.masks import Segmenter
    from talksplat.data_prep.prep import RigSilhouettes

    ds = grid_prep
    prior = RigSilhouettes(open_rig, ds.rig_params)
    seg = Segmenter()
    try:
        for fr in ds.frames[::25]:
            sil = prior(fr.timestep, fr.K, fr.c2w, fr.width, fr.height) > 0.5
            mask = ds.load_mask(fr) >= 128
            raw = seg(ds.load_image(fr)) > 0.5
            assert sil.sum() > 0.1 * sil.size and mask[sil].all(), fr.timestep
            assert raw[sil].mean() > 0.97, (fr.timestep, raw[sil].mean())
    finally:
        seg.close()


def test_background_specs(tmp_path):
    """`--background`: auto (the caller's default), colours, and an image cropped to the frame's aspect ratio."""
    import cv2

    from talksplat.driving.drive import background_image, parse_background

    assert parse_background("auto", 40, 30) is None and background_image("auto") is None
    assert background_image("#102030") is None and background_image("white") is None
    assert parse_background("black", 40, 30).shape == (30, 40, 3)
    assert np.allclose(parse_background("#ff0080", 8)[0, 0], [1, 0, 128 / 255])
    img = np.zeros((100, 300, 3), np.uint8)  # wide: red left third, green middle, blue right third (RGB)
    img[:, :100, 0] = img[:, 100:200, 1] = img[:, 200:, 2] = 255
    cv2.imwrite(str(tmp_path / "bg.png"), img[..., ::-1])
    bg = parse_background(str(tmp_path / "bg.png"), 40, 40)  # a square frame keeps the middle square: green
    assert bg.shape == (40, 40, 3) and bg[..., 1].mean() > 0.95 and bg[..., 0].max() < 0.05
    wide = parse_background(str(tmp_path / "bg.png"), 60, 20)  # the same aspect ratio: all of it
    assert wide[10, 2, 0] > 0.9 and wide[10, 30, 1] > 0.9 and wide[10, 57, 2] > 0.9


def test_gaussians_leave_the_background_to_the_plate(grid_prep, tmp_path):
    """Over the plate, `--loss.lambda-outside` keeps the avatar's opacity off what the masks call background
    (Gaussians painting background beside the jaw would move with the head when driven); without it, the same
    seeded short fit leaves several times more opacity there."""
    from talksplat.fitting.config import FitConfig, LossConfig
    from talksplat.fitting.trainer import Trainer

    outside = {}
    for lam in (0.0, 3.0):
        tr = Trainer(FitConfig(dataset=grid_prep.root, out=tmp_path / f"fit{lam}", preset="fast", steps=150,
                               background="plate", quiet=True, loss=LossConfig(lambda_outside=lam), sh_degree=0,
                               threads=1, eval_frames=5, side_by_side=0))
        tr.train(checkpoints=False)
        outside[lam] = tr.evaluate()["outside"]  # held-out images: the avatar's opacity share the masks call background
    print("opacity share outside the masks, by lambda:", outside)
    assert outside[3.0] < 0.4 * outside[0.0], outside


def test_fidelity_table_rows_and_means():
    """`talksplat bench fidelity`'s table: a line per fit, the mean per background; missing figures shown as -."""
    from talksplat.benchmarks.fidelity import FIGURES, rows_text

    def row(clip, bg, base, outside):
        return {"clip": clip, "background": bg, **{k: base for k in FIGURES}, "outside": outside}

    rows = [row("a", "plate", 36.0, 0.01), row("b", "plate", 34.0, 0.03), row("a", "white", 28.0, None)]
    lines = rows_text(rows).splitlines()
    assert len(lines) == 1 + 3 + 2 and "outside %" in lines[0]
    mean_plate = lines[4].split()
    assert mean_plate[:4] == ["mean", "of", "2", "plate"] and mean_plate[4] == "35.00"
    assert lines[1].split()[-1] == "1.00" and lines[3].split()[-1] == "-" and mean_plate[-1] == "2.00"
