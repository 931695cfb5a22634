"""The parts of prep on their own: gap filling, subject choice, mask smoothing, crops, embedding files."""

from __future__ import annotations

import numpy as np
import pytest

from talksplat.data_prep.embedding import EmbeddingError, landmark_embedding, load_embedding_file
from talksplat.data_prep.framing import crop_image, crop_intrinsics, crop_points, head_boxes, inside_mask
from talksplat.data_prep.landmarks import NUM_LANDMARKS, SubjectTracker, fill_gaps
from talksplat.data_prep.masks import smooth_stream
from talksplat.rigs import load_rig


def test_fill_gaps_interpolates_short_and_drops_long():
    T = 20
    pts = np.zeros((T, 2, 2))
    pts[:, 0, 0] = np.arange(T)
    found = np.ones(T, bool)
    found[3:5] = False  # 2-frame gap: interpolated
    found[8:14] = False  # 6-frame gap: dropped
    found[0] = False  # a gap at the start cannot be interpolated
    out, keep, rep = fill_gaps(pts * found[:, None, None], found, max_gap=3)
    assert rep.interpolated == [3, 4]
    assert rep.dropped == [0] + list(range(8, 14))
    assert np.allclose(out[3:5, 0, 0], [3, 4])
    assert keep.sum() == T - 7
    assert "dropped 7 frames" in rep.describe(25.0)


def _face(cx: float, cy: float, size: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([cx + size * (rng.random(NUM_LANDMARKS) - 0.5), cy + size * (rng.random(NUM_LANDMARKS) - 0.5),
                     np.zeros(NUM_LANDMARKS)], 1)


def test_subject_tracker_keeps_the_first_subject():
    tr = SubjectTracker()
    a, b = _face(100, 100, 80), _face(300, 100, 120)
    assert tr.pick([a, _face(300, 100, 40)]) is a  # the largest face at first
    # A larger stranger appears: the subject stays the one we had, wherever mediapipe lists it.
    assert tr.pick([b, _face(104, 102, 80)])[:, 0].mean() < 200
    assert tr.pick([b]) is None  # only the stranger is visible: no detection for the subject
    assert tr.pick([]) is None


def test_mask_smoothing_is_centred_and_complete():
    masks = [np.full((2, 2), float(v)) for v in (0, 4, 8, 4)]
    out = list(smooth_stream(((i, m) for i, m in enumerate(masks))))
    assert [i for i, _ in out] == [0, 1, 2, 3]
    assert [float(m[0, 0]) for _, m in out] == [1.0, 4.0, 6.0, 5.0]


def test_crop_intrinsics_points_and_pixels_agree():
    H, W = 300, 400
    img = np.zeros((H, W, 3), np.uint8)
    img[150, 250] = 255  # pixel centre (250.5, 150.5)
    box = np.array([240.0, 140.0, 100.0])
    res = 200
    crop = crop_image(img, box, res)
    y, x = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    expect = crop_points(np.array([250.5, 150.5]), box, res)
    assert abs(x + 0.5 - expect[0]) <= 1.0 and abs(y + 0.5 - expect[1]) <= 1.0
    # A 3D point projected with K, then cropped, equals its projection with the crop's K.
    K = np.array([[500.0, 0, 200], [0, 500, 150], [0, 0, 1]])
    Xc = np.array([0.03, -0.02, 0.5])
    uv = (K @ Xc)[:2] / Xc[2]
    Kc = crop_intrinsics(K, box, res)
    assert np.allclose(crop_points(uv, box, res), (Kc @ Xc)[:2] / Xc[2])
    m = inside_mask(np.array([20.0, 150.0, 100.0]), 100, (W, H))
    assert not m[:, :25].any() and m[:, 35:].all()  # the crop's left 30 px are outside the frame


def test_head_boxes_smooth_and_stay_inside():
    T = 50
    rng = np.random.default_rng(1)
    lm = np.zeros((T, NUM_LANDMARKS, 2))
    base = np.stack([rng.random(NUM_LANDMARKS) * 60, rng.random(NUM_LANDMARKS) * 80], 1)
    for t in range(T):
        lm[t] = base + [150 + rng.normal(0, 3), 100 + rng.normal(0, 3)]
    keep = np.ones(T, bool)
    boxes = head_boxes(lm, keep, scale=2.0, sigma_frames=4, frame_size=(360, 288))
    assert np.ptp(boxes[:, 2]) == 0  # constant size
    raw = lm.mean(1)
    assert np.abs(np.diff(boxes[:, 0])).mean() < 0.5 * np.abs(np.diff(raw[:, 0])).mean()  # smoother
    assert (boxes[:, 1] - boxes[:, 2] / 2 >= 0).all() and (boxes[:, 1] + boxes[:, 2] / 2 <= 288).all()


def test_embedding_is_cached_and_covers_the_face():
    rig = load_rig("open")
    emb = landmark_embedding(rig)
    assert emb.face_idx.shape == (NUM_LANDMARKS,) and (emb.views >= 3).all()
    again = landmark_embedding(rig)
    assert np.array_equal(again.face_idx, emb.face_idx)
    pts = emb.points(rig, rig.template[None])[0].numpy()
    iod = np.linalg.norm(pts[33] - pts[263])
    assert 0.07 < iod < 0.12  # outer eye corners of an adult head, metres
    assert pts[1, 2] > pts[33, 2]  # the nose tip is in front of the eye corners
    assert pts[10, 1] > pts[1, 1] > pts[152, 1]  # forehead above nose tip above chin


def test_embedding_file_errors(tmp_path):
    rig = load_rig("open")
    with pytest.raises(EmbeddingError, match="no such"):
        load_embedding_file(tmp_path / "none.npz", rig)
    np.savez(tmp_path / "short.npz", face_idx=np.zeros(10, int), bary=np.ones((10, 3)) / 3)
    with pytest.raises(EmbeddingError, match=r"short.npz: expected face_idx \[478\]"):
        load_embedding_file(tmp_path / "short.npz", rig)
    np.savez(tmp_path / "far.npz", face_idx=np.full(NUM_LANDMARKS, 10 ** 6), bary=np.ones((NUM_LANDMARKS, 3)) / 3)
    with pytest.raises(EmbeddingError, match="outside"):
        load_embedding_file(tmp_path / "far.npz", rig)
    emb = landmark_embedding(rig)
    np.savez(tmp_path / "ok.npz", face_idx=emb.face_idx, bary=emb.bary)
    assert np.array_equal(landmark_embedding(rig, override=tmp_path / "ok.npz").face_idx, emb.face_idx)


def test_quiet_native_stderr_holds_back_noise_only(capfd):
    """fd 2 is restored (exceptions included), nests, and replays what is not mediapipe's informational noise."""
    import os

    from talksplat.data_prep.landmarks import quiet_native_stderr

    before = os.fstat(2)
    with pytest.raises(KeyError, match="kept"):
        with quiet_native_stderr():
            os.write(2, b"W0000 00:00:1796336104.725632   11469 inference_feedback_manager.cc:114] Feedback\n")
            with quiet_native_stderr():
                os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
                os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
            assert os.fstat(2).st_ino != before.st_ino  # still redirected after the inner block
            os.write(2, b"E0000 00:00:1796336104.8 11470 calculator_graph.cc:1] a real error\n")
            raise KeyError("kept")
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err == "E0000 00:00:1796336104.8 11470 calculator_graph.cc:1] a real error\nafter\n"


def test_mediapipe_models_print_nothing(shared_data):
    """FaceMesh and the selfie segmenter, created and run on a blank and a real frame, leave stderr empty."""
    import os
    import subprocess
    import sys

    clip = shared_data / "grid" / "bbaf2n.mpg"
    if not clip.is_file():
        pytest.skip(f"{clip} not found")
    code = f"""
import numpy as np
from talksplat.data_prep.decode import iter_frames
from talksplat.data_prep.landmarks import FaceMeshDetector
from talksplat.data_prep.masks import Segmenter
with iter_frames({str(clip)!r}, fps=25, max_frames=3) as stream:
    frames = list(stream)
blank = np.zeros_like(frames[0])
seg = Segmenter()
with FaceMeshDetector() as det:
    found = [len(det.detect(blank))] + [len(det.detect(f)) for f in frames]
masks = [seg(blank), seg(frames[0])]
seg.close()
print(found, masks[0].shape, round(float(masks[1].mean()), 3))
"""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    for key in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(key, None)  # the modules set them
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[0, 1, 1, 1] (288, 360)"), proc.stdout
    assert proc.stderr == "", proc.stderr


def test_mediapipe_bad_arguments_are_python_errors():
    from talksplat.data_prep.landmarks import FaceMeshDetector
    from talksplat.data_prep.masks import Segmenter

    with pytest.raises(ValueError, match="model must be 0"):
        Segmenter(model=7)
    with pytest.raises(ValueError, match="max_faces"):
        FaceMeshDetector(max_faces=0)
