"""Train the subject's audio-to-rig predictor on a prepared dataset (``talksplat fit``'s second stage).

    drv, metrics = train_predictor_on_dataset(load_dataset("dataset/"), "avatar/", rig, PredictorConfig())

Training samples random windows (``window_s``) of the training time steps: the audio under the window
(plus 0.4 s of context each side) and the per-frame targets.  Augmentation makes the predictor care
about what is said rather than who says it: tempo (the audio is resampled by 0.85-1.15 and the targets
follow in time, which also moves the pitch), a frequency-axis warp of 0.85-1.18 (formants, i.e. a
different vocal tract), white noise at 10-40 dB SNR and ±6 dB gain.  Loss: smooth-L1 on standardised
parameters, lip-vertex distance (cm², through the rig), and frame-to-frame velocity; with a viseme head
(``phonetic``) on a rig with a viseme prior (the open head's hand-set ARKit mouth shapes), the head starts at
the prior where the subject's frames are few and is pulled towards it (``lambda_viseme_prior``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from talksplat.core.errors import InputError
from talksplat.core.files import file_digest
from talksplat.data_prep.dataset import Dataset
from talksplat.fitting import fit_folder
from talksplat.rigs.base import HeadRig

from .audio import SAMPLE_RATE, load_audio
from .config import PredictorConfig
from .evaluate import LipGeometry, lip_sync_metrics
from .features import make_encoder
from .phonetic import NUM_VISEMES, VISEMES, silent_visemes
from .predictor import AudioToRig, AudioPredictor, TargetLayout, choose_layout, frame_loudness, silence_gate

CONTEXT_S = 0.4
#: Frames per step that go through the rig for the lip loss.
LIP_FRAMES = 256


class PredictorTrainingError(InputError):
    """A dataset the audio predictor cannot be trained on (no audio, too short)."""


def _runs(ids: np.ndarray) -> list[np.ndarray]:
    """Split sorted time steps into runs of consecutive ones."""
    ids = np.sort(np.asarray(ids))
    if len(ids) == 0:
        return []
    cuts = np.nonzero(np.diff(ids) != 1)[0] + 1
    return [r for r in np.split(ids, cuts) if len(r) >= 2]


def _interp_rows(y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows of ``y`` [T, K] at fractional indices ``idx`` (linear)."""
    i0 = np.floor(idx).astype(np.int64).clip(0, len(y) - 1)
    i1 = (i0 + 1).clip(max=len(y) - 1)
    a = (idx - i0)[:, None]
    return y[i0] * (1 - a) + y[i1] * a


class WindowSampler:
    """Random (augmented) training windows: features, query positions and standardised targets."""

    def __init__(self, wave: np.ndarray, fps: float, Y: np.ndarray, train_ids: np.ndarray, encoder,
                 window_s: float, augment: bool, rng: np.random.Generator):
        self.wave, self.fps, self.Y, self.enc, self.augment, self.rng = wave, fps, Y, encoder, augment, rng
        self.runs = _runs(train_ids)
        if not self.runs:
            raise PredictorTrainingError("no two consecutive training time steps to learn from")
        self.L = max(2, int(round(window_s * fps)))
        self.weights = np.array([len(r) for r in self.runs], np.float64)
        self.weights /= self.weights.sum()
        # A phonetic encoder recognises the whole recording once; windows slice its track.
        self.track = encoder.visemes(wave).numpy() if hasattr(encoder, "visemes") else None

    def sample(self):
        rng = self.rng
        run = self.runs[rng.choice(len(self.runs), p=self.weights)]
        L = min(self.L, len(run))
        t0 = int(run[rng.integers(0, len(run) - L + 1)])
        speed = rng.uniform(0.85, 1.15) if self.augment and rng.random() < 0.8 else 1.0
        a = t0 / self.fps - CONTEXT_S
        b = (t0 + L - 1) / self.fps + CONTEXT_S
        s_a, s_b = int(round(a * SAMPLE_RATE)), int(round(b * SAMPLE_RATE))
        seg = np.zeros(s_b - s_a, np.float32)
        lo, hi = max(s_a, 0), min(s_b, len(self.wave))
        if hi > lo:
            seg[lo - s_a:hi - s_a] = self.wave[lo:hi]
        seg = torch.from_numpy(seg)
        if speed != 1.0:
            n = max(400, int(round(len(seg) / speed)))
            seg = torch.nn.functional.interpolate(seg[None, None], size=n, mode="linear", align_corners=False)[0, 0]
        warp = 1.0
        if self.augment:
            seg = seg * 10 ** (rng.uniform(-6, 6) / 20)
            if rng.random() < 0.5:
                rms = seg.pow(2).mean().sqrt().item()
                seg = seg + torch.randn(len(seg), generator=None) * rms * 10 ** (-rng.uniform(10, 40) / 20)
            if rng.random() < 0.8:
                warp = rng.uniform(0.85, 1.18)
        if self.track is None:
            feats = self.enc.encode(seg, warp=warp)
        else:  # feature frame j of the (tempo-changed) window lies at a + j * hop * speed in the recording
            Tf = self.enc.num_frames(len(seg))
            shift = rng.integers(-2, 3) if self.augment else 0  # +-20 ms recogniser timing jitter
            src = np.round((a + np.arange(Tf) * (self.enc.hop / SAMPLE_RATE) * speed) * self.enc.rate).astype(int) + shift
            ok = (src >= 0) & (src < len(self.track))
            v = silent_visemes(Tf, self.track.shape[1])  # silence outside the recording
            v[ok] = self.track[src[ok]]
            feats = self.enc.encode(seg, warp=warp, visemes=torch.from_numpy(v))
        K = int(math.floor((L - 1) / speed)) + 1
        k = np.arange(K)
        targets = _interp_rows(self.Y, t0 + k * speed)
        query = (CONTEXT_S / speed + k / self.fps) * self.enc.rate
        return feats, torch.from_numpy(query.astype(np.float32)), torch.from_numpy(targets.astype(np.float32))

    def batch(self, n: int):
        items = [self.sample() for _ in range(n)]
        Tf = max(f.shape[0] for f, _, _ in items)
        T = max(q.shape[0] for _, q, _ in items)
        D, K = items[0][0].shape[1], items[0][2].shape[1]
        feats = torch.zeros(n, Tf, D)
        query = torch.zeros(n, T)
        target = torch.zeros(n, T, K)
        mask = torch.zeros(n, T)
        for i, (f, q, y) in enumerate(items):
            feats[i, :f.shape[0]] = f
            query[i, :len(q)] = q
            target[i, :len(q)] = y
            mask[i, :len(q)] = 1
        return feats, query, target, mask


def _lip_fn(geo: LipGeometry, layout: TargetLayout, mean: np.ndarray, std: np.ndarray,
            device: torch.device = torch.device("cpu")):
    """Standardised outputs [N, K] on ``device`` -> lip vertices [N, L, 3] metres (differentiable, head frame)."""
    fill = torch.from_numpy(layout.fill_expression).to(device)
    ids = torch.as_tensor(layout.expr_ids, dtype=torch.long, device=device)
    m, s = torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device)
    ne = len(layout.expr_ids)
    lips = geo.lips if device.type == "cpu" else copy.deepcopy(geo.lips).to(device)  # geo's rig stays where it is
    shape = geo.shape.to(device)

    def fn(y: torch.Tensor) -> torch.Tensor:
        raw = y * s + m
        N = raw.shape[0]
        expr = fill[None].expand(N, -1).clone()
        expr[:, ids] = raw[:, :ne]
        p = dataclasses.replace(geo.rig.zero_params(N, device=device), shape=shape.expand(N, -1),
                                expression=expr, jaw=raw[:, ne:])  # head frame: no pose, eyes ahead
        return lips(p).vertices

    return fn


#: Frames of evidence a viseme's own estimate needs to outweigh the prior (the rig's hand-set shape of the
#: viseme when it has one, else the subject's mean shape).
VISEME_PRIOR_FRAMES = 3.0
#: The farthest (in the subject's training standard deviations) the rig's viseme prior may put a predicted
#: value from its training mean: a unit the subject barely moves is not pulled far by the prior.
VISEME_PRIOR_MAX_STD = 3.0


def _opening_fit(tr: np.ndarray, layout: TargetLayout, unit: int | None, angle: float | None):
    """How the subject splits a mouth opening between the jaw-opening unit (expression index ``unit``) and the
    jaw rotation: ``tr`` [N, dim] raw training targets -> a function opening (in the unit's coefficients: the
    unit plus the jaw's rotation about +x over ``angle``, the rotation the unit amounts to) -> {output column:
    value} for the unit's column (when predicted) and the 3 jaw columns (least squares on the training
    frames), or None when the training frames do not open the mouth."""
    ne = len(layout.expr_ids)
    col = layout.expr_ids.index(unit) if unit is not None and unit in layout.expr_ids else None
    u = tr[:, col] if col is not None else np.full(len(tr), layout.fill_expression[unit] if unit is not None else 0.0)
    o = u + (tr[:, ne] / angle if angle else 0.0)
    if len(tr) < 2 or o.std() < 1e-4:
        return None
    cols = ([col] if col is not None else []) + [ne, ne + 1, ne + 2]
    z = tr[:, cols].astype(np.float64)
    slope = ((o - o.mean())[:, None] * (z - z.mean(0))).mean(0) / o.var()
    icpt = z.mean(0) - slope * o.mean()
    return lambda p: dict(zip(cols, icpt + slope * p))


def viseme_prior_targets(prior: dict[str, dict[str, float]], expression_names: list[str], layout: TargetLayout,
                         tr: np.ndarray, mean: np.ndarray, std: np.ndarray, rest: np.ndarray,
                         jaw_unit: int | None = None, jaw_angle: float | None = None) -> np.ndarray:
    """The rig's viseme prior (:meth:`~talksplat.rigs.base.HeadRig.viseme_prior`) in the predictor's
    standardised outputs: [15, dim], rows in :data:`~talksplat.driving.phonetic.VISEMES` order.

    Each viseme starts at the subject's training mean ``mean`` [dim] (``sil``: the subject's ``rest``, and
    nothing else) and the predicted units it names take its values; a unit that is not predicted (it does not
    move in training) is skipped.  The jaw-opening unit (expression index ``jaw_unit``: the rig's ``jaw_open``
    group) names the whole opening: it is split between the unit and the jaw rotation (``jaw_angle``: radians
    about +x that the unit at 1.0 amounts to, None when the rig's unit is no rotation) as the subject's
    training targets ``tr`` [N, dim] split it (a least-squares line); when they do not open the mouth, the
    unit takes the value and the jaw stays at the mean.  Then standardised with ``mean`` and ``std`` and kept
    within :data:`VISEME_PRIOR_MAX_STD` of 0.  A viseme the prior does not name gets 0 (the mean)."""
    index = {n: i for i, n in enumerate(expression_names)}
    col = {e: j for j, e in enumerate(layout.expr_ids)}
    jaw_name = expression_names[jaw_unit] if jaw_unit is not None else None
    opening = _opening_fit(np.asarray(tr, np.float64), layout, jaw_unit, jaw_angle)
    out = np.zeros((NUM_VISEMES, layout.dim), np.float64)
    for v, name in enumerate(VISEMES):
        if name not in prior:
            continue
        if name == "sil":
            row = np.asarray(rest, np.float64).copy()
        else:
            row = np.asarray(mean, np.float64).copy()
            for u, value in prior[name].items():
                if u in index and index[u] in col:
                    row[col[index[u]]] = value
            if jaw_name in prior[name] and opening is not None:
                for c, value in opening(prior[name][jaw_name]).items():
                    row[c] = value
        out[v] = (row - mean) / std
    return np.clip(out, -VISEME_PRIOR_MAX_STD, VISEME_PRIOR_MAX_STD).astype(np.float32)


def init_viseme_table(model: AudioToRig, enc, wave: np.ndarray, track: np.ndarray, fps: float, Y: np.ndarray,
                      train_ids: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """Start the viseme head at the subject's mean standardised target per viseme (weighted by each
    training frame's viseme weights, shrunk towards the prior where a viseme is rare: ``prior`` [15, dim], the
    rig's standardised viseme prior (:func:`viseme_prior_targets`), or, without one, 0 = the subject's mean
    shape) and the temporal network's output at zero: the model begins as a viseme-to-mouth table the training
    then corrects.  Returns the table [15, dim]."""
    with torch.no_grad():
        feats = enc.encode(torch.from_numpy(np.asarray(wave, np.float32)), visemes=torch.from_numpy(track))
        query = torch.from_numpy((np.asarray(train_ids) / fps * enc.rate).astype(np.float32))
        W = model.viseme_weights(feats[None], query[None])[0].numpy().astype(np.float64)  # [N, 15]
        y = Y[train_ids].astype(np.float64)
        p = np.zeros((W.shape[1], y.shape[1])) if prior is None else np.asarray(prior, np.float64)
        table = (W.T @ y + VISEME_PRIOR_FRAMES * p) / (W.sum(0)[:, None] + VISEME_PRIOR_FRAMES)
        model.viseme_head.weight.copy_(torch.from_numpy(table.T.astype(np.float32)))
        last = model.head[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    return table.astype(np.float32)


def train_predictor(wave: np.ndarray, fps: float, targets: np.ndarray, train_ids: np.ndarray,
                    layout: TargetLayout, cfg: PredictorConfig, geo: LipGeometry | None = None,
                    rest: np.ndarray | None = None, rig_checksum: str = "", progress=None,
                    own_ids: np.ndarray | None = None, rig: HeadRig | None = None,
                    device: str | torch.device = "cpu") -> AudioPredictor:
    """Fit :class:`AudioToRig` to ``targets`` [T, layout.dim] (rig units) aligned with ``wave`` at ``fps``.

    ``train_ids``: time steps to learn from.  ``own_ids``: those of them that are the subject's own (the
    rest and the mouth amplitude are the subject's; default: all of ``train_ids``).  ``rest``: [dim]
    parameters of the closed, silent mouth (default: the mean over the subject's silent training frames).
    ``rig`` (default: ``geo``'s): the rig of the targets; with a viseme head (the ``phonetic`` encoder),
    its viseme prior (:meth:`HeadRig.viseme_prior`, the open head's), when it has one, starts the head
    (:func:`init_viseme_table`) and pulls it (``cfg.lambda_viseme_prior``).  ``device``: where the network trains
    (the fit's; the audio features are made on the CPU and uploaded per batch).  Returns the
    :class:`AudioPredictor`, on the CPU."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_ids = np.asarray(train_ids)
    own_ids = train_ids if own_ids is None else np.asarray(own_ids)
    enc = make_encoder(cfg.encoder)
    tr = targets[train_ids]
    mean = tr.mean(0).astype(np.float32)
    floor = np.full(layout.dim, 0.02, np.float32)
    floor[len(layout.expr_ids):] = 0.01  # jaw radians
    std = np.maximum(tr.std(0), floor).astype(np.float32)
    Y = (targets - mean) / std
    gate = silence_gate(wave, fps, len(targets))[own_ids]  # [N] 1 in the subject's silences
    own = targets[own_ids]
    if rest is None:
        rest = (own[gate > 0.5].mean(0) if (gate > 0.5).sum() >= 3 else np.percentile(own, 10, axis=0)).astype(np.float32)
    sampler = WindowSampler(wave, fps, Y, train_ids, enc, cfg.window_s, cfg.augment, rng)
    prior = prior_t = None  # the rig's viseme prior [15, dim] standardised, and as the head's weight
    if sampler.track is None:
        model = AudioToRig(enc.dim, layout.dim, hidden=cfg.hidden)
    else:
        model = AudioToRig(enc.dim, layout.dim, hidden=cfg.hidden, visemes=(enc.dim - enc.num_visemes, enc.dim))
        rig = rig if rig is not None else (geo.rig if geo is not None else None)
        table = rig.viseme_prior() if rig is not None else None
        if table is not None:
            from .arkit_csv import jaw_open_angle

            jaw_unit = (rig.expression_group("jaw_open") or [None])[0]
            prior = viseme_prior_targets(table, rig.expression_names, layout, tr, mean, std, rest, jaw_unit,
                                         jaw_open_angle(rig))
        init_viseme_table(model, enc, wave, sampler.track, fps, Y, train_ids, prior)
        prior_t = None if prior is None or cfg.lambda_viseme_prior <= 0 else torch.from_numpy(prior).T  # [dim, 15]
    device = torch.device(device)
    model.to(device)
    if prior_t is not None:
        prior_t = prior_t.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    lip = _lip_fn(geo, layout, mean, std, device) if geo is not None and cfg.lambda_lip > 0 else None
    model.train()
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        feats, query, target, mask = (x.to(device, non_blocking=True) for x in sampler.batch(cfg.batch))
        pred = model(feats, query)
        m = mask[..., None]
        loss = (torch.nn.functional.smooth_l1_loss(pred, target, reduction="none") * m).sum() / (m.sum() * layout.dim)
        if cfg.lambda_velocity > 0 and pred.shape[1] > 1:
            mv = (mask[:, 1:] * mask[:, :-1])[..., None]
            dv = (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
            loss = loss + cfg.lambda_velocity * (dv.pow(2) * mv).sum() / (mv.sum() * layout.dim).clamp(min=1)
        if lip is not None:
            sel = torch.nonzero(mask.reshape(-1) > 0).flatten()
            sel = sel[torch.randperm(len(sel), device=device)[:LIP_FRAMES]]  # a random subset keeps the rig cheap
            a = lip(pred.reshape(-1, layout.dim)[sel])
            with torch.no_grad():
                b = lip(target.reshape(-1, layout.dim)[sel])
            loss = loss + cfg.lambda_lip * (a - b).mul(100.0).pow(2).sum(-1).mean()  # cm²
        if prior_t is not None:
            loss = loss + cfg.lambda_viseme_prior * (model.viseme_head.weight - prior_t).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if progress is not None and (step % 50 == 0 or step == cfg.steps - 1):
            progress(step + 1, cfg.steps, loss.item(), (step + 1) / (time.perf_counter() - t0))
    model.cpu().eval()
    meta = {"steps": cfg.steps, "device": device.type, "train_frames": int(len(train_ids)),
            "seconds": round(time.perf_counter() - t0, 2)}
    if model.visemes is not None:
        meta["viseme_prior"] = prior is not None
    drv = AudioPredictor(model, layout, mean, std, np.asarray(rest, np.float32), enc.spec, fps, rig_checksum,
                         meta=meta)
    speech = own_ids[gate < 0.5]
    drv.amp_axis, drv.amp_std = mouth_motion_axis(Y[speech] if len(speech) >= 10 else Y[own_ids])
    return drv


def mouth_motion_axis(yn: np.ndarray) -> tuple[np.ndarray, float]:
    """Standardised training targets [N, D] in speech -> (the unit axis [D] of their largest variance: the
    subject's dominant mouth motion, mostly opening; the std along it)."""
    c = yn - yn.mean(0)
    _, s, vt = np.linalg.svd(c.astype(np.float64), full_matrices=False)
    return vt[0].astype(np.float32), float(s[0] / np.sqrt(max(len(yn), 1)))


def _dataset_arrays(dataset, out_dir: Path | None, use_tuned: bool) -> tuple[dict, dict]:
    """(training parameters, tracked parameters), each field -> [T, ...]: the fit-tuned ones from
    ``out_dir``/tuned_params.npz when asked and present (and of the dataset's size), else the tracked ones."""
    tracked = dataset.rig_params
    train = tracked
    tuned = None if out_dir is None else fit_folder.path(out_dir, fit_folder.TUNED)
    if use_tuned and tuned is not None and tuned.is_file():
        from .fit_reader import read_tuned

        try:
            stored = read_tuned(tuned)
        except InputError as e:
            raise PredictorTrainingError(str(e)) from None
        if len(stored) == len(tracked) and stored.num_expression == tracked.num_expression:
            train = stored
    return dict(train.frames), dict(tracked.frames)


#: Share of a recording's frames, the quietest, whose median pose is its speaker's resting mouth.
QUIET_FRACTION = 0.2


def quiet_pose(wave: np.ndarray, fps: float, targets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """[dim]: the median of ``targets`` [T, dim] over the quietest :data:`QUIET_FRACTION` of the time steps
    ``ids`` (loudness of ``wave`` [N] 16 kHz at each frame): the speaker's mouth at rest, measured relative
    to the recording's own level, so it holds for recordings whose pauses are not silent (room noise)."""
    loud = frame_loudness(wave, fps, len(targets))[ids]
    k = max(1, int(round(QUIET_FRACTION * len(ids))))
    return np.median(targets[ids[np.argsort(loud, kind="stable")[:k]]], 0).astype(np.float32)


#: Seconds of silence between the subject's recording and each extra dataset's in the joined training audio.
EXTRA_GAP_S = 1.0


def join_extra_data(wave: np.ndarray, fps: float, targets: np.ndarray, train_ids: np.ndarray,
                    layout: TargetLayout, extra: tuple[Path, ...], rig: HeadRig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The subject's training audio [N], targets [T, dim] and time steps [K] with each ``extra`` dataset's
    (all of its time steps but dropped ones, its tracked parameters) appended after ``EXTRA_GAP_S`` of
    silence, frame-aligned.  Each extra dataset's parameters are moved so that its quiet mouth is the
    subject's (:func:`quiet_pose`), so what joins is another speaker's mouth *motion* about this subject's
    resting face, not theirs.  A dataset of another rig, frame rate or without audio is a
    :class:`PredictorTrainingError` naming it; with no ``extra`` the inputs come back unchanged."""
    if not extra:
        return wave, targets, train_ids
    from talksplat.data_prep.dataset import load_dataset

    gap = int(round(EXTRA_GAP_S * fps))
    rest = quiet_pose(wave, fps, targets, np.asarray(train_ids))
    pieces = [(wave, targets, np.asarray(train_ids))]
    for path in extra:
        ds = load_dataset(path)
        if ds.meta.get("rig", {}).get("checksum") != rig.checksum:
            raise PredictorTrainingError(f"{path}: tracked with another rig ({ds.meta.get('rig', {}).get('name')}) "
                                      f"than the subject's ({rig.name}): extra data must share the rig")
        if abs(float(ds.meta["fps"]) - fps) > 1e-6:
            raise PredictorTrainingError(f"{path}: {ds.meta['fps']} frames/s, the subject's dataset has {fps}: "
                                      "extra data must share the frame rate")
        if ds.audio_path is None or not Path(ds.audio_path).is_file():
            raise PredictorTrainingError(f"{path}: the dataset has no audio.wav: extra data needs speech")
        dropped = set(ds.meta.get("dropped_timesteps", []))
        ids = np.array([t for t in range(ds.num_timesteps) if t not in dropped])
        p = ds.params
        w = load_audio(ds.audio_path)
        y = layout.pack(p["expression"], p["jaw"])
        y = y + (rest - quiet_pose(w, fps, y, ids))[None]
        pieces.append((w, y.astype(np.float32), ids))
    T = sum(len(y) for _, y, _ in pieces) + gap * (len(pieces) - 1)
    out_wave = np.zeros(int(round(T / fps * SAMPLE_RATE)) + 1, np.float32)
    out_targets = np.repeat(targets.mean(0, keepdims=True), T, 0).astype(np.float32)
    out_ids, f0 = [], 0
    for w, y, ids in pieces:
        s0 = int(round(f0 / fps * SAMPLE_RATE))
        n = min(len(w), int(round(len(y) / fps * SAMPLE_RATE)), len(out_wave) - s0)
        out_wave[s0:s0 + n] = w[:n]
        out_targets[f0:f0 + len(y)] = y
        out_ids.append(ids + f0)
        f0 += len(y) + gap
    return out_wave, out_targets, np.concatenate(out_ids)


def evaluate_predictor(drv: AudioPredictor, geo: LipGeometry, wave: np.ndarray, fps: float, tracked: dict,
                    eval_ids: np.ndarray, baseline_from: dict, baseline_ids: np.ndarray) -> dict:
    """Lip-sync metrics of ``drv`` on ``eval_ids`` (see :func:`lip_sync_metrics`); the baseline predicts
    the mean training expression and jaw (``baseline_from`` at ``baseline_ids``)."""
    T = len(tracked["expression"])
    pred = drv.predict(wave, fps, T)
    ids = np.asarray(eval_ids)
    sel = lambda d: {k: np.asarray(d[k])[ids] for k in d if k != "shape"}  # noqa: E731
    mean = {k: np.repeat(np.asarray(baseline_from[k])[baseline_ids].mean(0, keepdims=True), len(ids), 0)
            for k in ("expression", "jaw")}
    return lip_sync_metrics(geo, sel(pred), sel(tracked), mean)


def train_predictor_on_dataset(ds: Dataset, out_dir: str | Path, rig: HeadRig, cfg: PredictorConfig,
                            progress=None, device: str | torch.device = "cpu") -> tuple[AudioPredictor, dict]:
    """Train on a loaded talksplat dataset (the network on ``device``), save ``OUT/driver.safetensors``, add
    ``driver`` to ``OUT/metrics.json``.

    Returns the driver and its held-out metrics (lip vertex error against the mean baseline, mouth-opening
    correlation)."""
    out_dir = Path(out_dir)
    if ds.audio_path is None or not Path(ds.audio_path).is_file():
        raise PredictorTrainingError(f"{ds.root}: the dataset has no audio.wav (the video had no sound): the audio "
                                  "predictor needs the subject's speech; use --driver.no-enabled to skip it")
    wave = load_audio(ds.audio_path)
    fps = float(ds.meta["fps"])
    T = ds.num_timesteps
    if len(wave) < 0.5 * T / fps * SAMPLE_RATE:
        raise PredictorTrainingError(f"{ds.audio_path}: {len(wave) / SAMPLE_RATE:.2f} s of audio for "
                                  f"{T / fps:.2f} s of video")
    train_p, tracked = _dataset_arrays(ds, out_dir, cfg.use_tuned)
    dropped = set(ds.meta.get("dropped_timesteps", []))
    train_ids = np.array([t for t in ds.split["train"] if t not in dropped])
    eval_ids = np.array([t for t in ds.split["heldout"] if t not in dropped])
    layout = choose_layout(rig, train_p["expression"][train_ids])
    targets = layout.pack(train_p["expression"], train_p["jaw"])
    geo = LipGeometry(rig.cpu(), ds.shape)
    all_wave, all_targets, all_ids = join_extra_data(wave, fps, targets, train_ids, layout, cfg.extra_data, rig)
    drv = train_predictor(all_wave, fps, all_targets, all_ids, layout, cfg, geo=geo, rig_checksum=rig.checksum,
                          progress=progress, own_ids=train_ids, rig=rig, device=device)
    metrics = dict(drv.meta)
    if cfg.extra_data:
        metrics["own_frames"] = int(len(train_ids))
        metrics["extra_data"] = [str(p) for p in cfg.extra_data]
    if len(eval_ids):
        metrics["heldout"] = evaluate_predictor(drv, geo, wave, fps, tracked, eval_ids, train_p, train_ids)
    metrics["train"] = evaluate_predictor(drv, geo, wave, fps, tracked, train_ids, train_p, train_ids)
    drv.meta = metrics
    avatar = fit_folder.path(out_dir, fit_folder.AVATAR)
    drv.avatar_sha256 = file_digest(avatar) if avatar.is_file() else None  # drive checks it belongs together
    fit_folder.write_driver(out_dir, drv)
    fit_folder.record_metrics(out_dir, {"driver": metrics})
    return drv, metrics
