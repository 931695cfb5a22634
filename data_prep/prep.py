"""`talksplat prep`: raw video (monocular or calibrated multi-view) -> tracked dataset.

Stages (one function each, returning its data and its wall time; :func:`_prep_videos` lists them):
inputs (probe, calibration, rig) -> audio -> landmarks (pass 1: decode, FaceMesh, one subject, gap
filling) -> tracking (the rig fitted to the landmarks) -> frames (pass 2: decode again, crop or
undistort, selfie-segmentation masks, write images) -> metadata (landmarks, parameters, meta.json, commit).
Decoding twice keeps memory bounded: only landmarks are held for the whole clip.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from talksplat.core.errors import TalksplatError
from talksplat.core.ffmpeg import SAMPLE_RATE
from talksplat.core.outputs import output_lock
from talksplat.render.device import pick_device

from .config import PrepConfig
from .dataset import (BACKGROUND_PLATE, BACKGROUND_PLATE_OBSERVED, PLATE, PLATE_OBSERVED, DatasetWriter, Frame,
                      check_output_dir, default_split, image_name)
from .tracking import MONO_C2W, TrackingResult


class PrepError(TalksplatError):
    """A problem with the input that stops prep (one line, names the file)."""


@dataclass
class PrepReport:
    out: Path
    num_timesteps: int
    num_images: int
    dropped: list[int]
    interpolated: list[int]
    tracking_error: dict[str, float]
    timings: dict[str, float]
    """Seconds spent in each kind of work (decode, landmarks, embedding, tracking, crop, masks, write,
    total), summed over the stages; meta.json's ``timings_s``."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each stage in order (inputs, audio, landmarks, tracking, frames, metadata); empty
    for an imported dataset."""

    def describe(self) -> str:
        """One line: time steps, images, tracking error, dropped frames, the stages' wall times."""
        err = self.tracking_error
        return (f"{self.num_timesteps} time steps, {self.num_images} images"
                + (f", tracking error {100 * err['mean_iod']:.2f}% of the inter-ocular distance "
                   f"({err['mean_px']:.2f} px)" if err else "")
                + (f", {len(self.dropped)} frames dropped" if self.dropped else "")
                + (" (" + ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items()) + ")"
                   if self.stage_seconds else ""))


def _timed_frames(path: Path, fps: float, max_frames: int | None, timings: dict[str, float],
                  allow_damaged: bool = False):
    """Frames of `path` at `fps` ([H, W, 3] uint8), adding the decoding time to timings["decode"]."""
    from .decode import iter_frames

    with iter_frames(path, fps, max_frames=max_frames, allow_damaged=allow_damaged) as stream:
        while True:
            t0 = time.perf_counter()
            frame = next(stream, None)
            timings["decode"] += time.perf_counter() - t0
            if frame is None:
                return
            yield frame


def run_prep(cfg: PrepConfig) -> PrepReport:
    """Do the work of `talksplat prep` (see :class:`PrepConfig`)."""
    t_start = time.perf_counter()
    videos = [Path(v) for v in cfg.videos]
    if not videos:
        raise PrepError("no input video given")
    inputs = [*videos, cfg.calibration, cfg.landmark_embedding]
    check_output_dir(cfg.out, cfg.overwrite, inputs)
    with output_lock(cfg.out):
        if len(videos) == 1 and videos[0].is_dir():
            return _import_nerf(cfg, videos[0])
        return _prep_videos(cfg, videos, inputs, t_start)


def _prep_videos(cfg: PrepConfig, videos: list[Path], inputs: list, t_start: float) -> PrepReport:
    """The stages of a video prep, in order: inputs, audio, landmarks, tracking, frames, metadata."""
    from talksplat.core.progress import Bars

    timings = {k: 0.0 for k in ("decode", "landmarks", "embedding", "tracking", "crop", "masks", "plate",
                                "write")}
    src = probe_inputs(cfg, videos)
    with DatasetWriter(cfg.out, overwrite=cfg.overwrite, inputs=inputs) as writer, Bars(cfg.quiet) as bars:
        audio = audio_stage(cfg, src, writer, bars)
        lm = landmarks_stage(cfg, src, timings, bars)
        tracked = tracking_stage(cfg, src, lm, timings, bars)
        frames = frames_stage(cfg, src, lm, tracked, writer, timings, bars)
        timings["total"] = time.perf_counter() - t_start
        md = metadata_stage(cfg, src, lm, tracked, frames, audio.present, writer, timings)
    stages = {"inputs": src.seconds, "audio": audio.seconds, "landmarks": lm.seconds, "tracking": tracked.seconds,
              "frames": frames.seconds, "metadata": md.seconds}
    return PrepReport(out=Path(cfg.out), num_timesteps=lm.num_timesteps, num_images=len(writer.frames),
                      dropped=md.dropped, interpolated=md.meta["interpolated_timesteps"],
                      tracking_error=md.tracking_error, timings=timings, stage_seconds=stages)


@dataclass
class PrepInputs:
    """The inputs stage: the probed videos, their cameras, the rig and where to run."""

    videos: list[Path]
    infos: list  # decode.VideoInfo per camera
    calibs: list | None  # calibration.Camera per camera (multi-view) or None (monocular)
    cam_ids: list[str]
    rig: object  # HeadRig
    device: torch.device
    fps: float
    seconds: float

    @property
    def multiview(self) -> bool:
        return self.calibs is not None


def probe_inputs(cfg: PrepConfig, videos: list[Path]) -> PrepInputs:
    """Probe the videos, match them to the calibration (multi-view), load the rig."""
    from talksplat.rigs import load_rig

    from .decode import probe_video

    t0 = time.perf_counter()
    multiview = cfg.calibration is not None
    if len(videos) > 1 and not multiview:
        raise PrepError(f"{len(videos)} videos given without --calibration (multi-view needs cameras.json)")

    infos = [probe_video(v, min_duration=1.0, allow_damaged=cfg.allow_damaged) for v in videos]
    if multiview:
        from .calibration import load_calibration, match_videos

        calibs = match_videos(load_calibration(cfg.calibration), videos, cfg.calibration)
        for info, cal in zip(infos, calibs):
            if (info.width, info.height) != (cal.width, cal.height):
                raise PrepError(f"{cfg.calibration}: camera '{cal.id}' is {cal.width}x{cal.height} but "
                                f"{info.path} is {info.width}x{info.height}")
        cam_ids = [c.id for c in calibs]
    else:
        calibs = None
        cam_ids = ["cam0"]

    rig = load_rig(cfg.rig)
    device = pick_device(cfg.device)
    return PrepInputs(videos=videos, infos=infos, calibs=calibs, cam_ids=cam_ids, rig=rig, device=device,
                      fps=float(cfg.fps), seconds=time.perf_counter() - t0)


@dataclass
class PrepAudio:
    """The audio stage: the first video's audio as the dataset's audio.wav."""

    present: bool  # False: the video has no audio track (no audio.wav)
    seconds: float


def audio_stage(cfg: PrepConfig, src: PrepInputs, writer: DatasetWriter, bars) -> PrepAudio:
    """Extract the first video's audio into the dataset (a warning when it has none)."""
    from .decode import extract_audio

    t0 = time.perf_counter()
    present = extract_audio(src.videos[0], writer.root / "audio.wav", allow_damaged=cfg.allow_damaged)
    if not present:
        bars.log(f"{src.videos[0]}: no audio track — the avatar can be fitted but not trained to speak",
                 warning=True)
    return PrepAudio(present=present, seconds=time.perf_counter() - t0)


@dataclass
class PrepLandmarks:
    """The landmarks stage (pass 1): FaceMesh landmarks per camera and time step, gaps filled."""

    points: np.ndarray  # [C, T, 478, 2] pixels of the source video (distorted)
    keep: np.ndarray  # [C, T] bool: observed or interpolated
    interpolated: np.ndarray  # [C, T] bool
    seconds: float

    @property
    def num_timesteps(self) -> int:
        return self.points.shape[1]

    @property
    def step_kept(self) -> np.ndarray:
        """[T] bool: a time step is in the dataset when some camera sees the face."""
        return self.keep.any(0)


def landmarks_stage(cfg: PrepConfig, src: PrepInputs, timings: dict[str, float], bars) -> PrepLandmarks:
    """Decode each video, detect one subject's landmarks per frame, fill short gaps (adds to timings'
    ``decode`` and ``landmarks``)."""
    from .landmarks import NUM_LANDMARKS, FaceMeshDetector, SubjectTracker, fill_gaps

    t_stage = time.perf_counter()
    fps = src.fps
    max_gap = max(0, int(round(cfg.max_gap * fps)))
    per_cam_points, per_cam_found = [], []
    for info, cam in zip(src.infos, src.cam_ids):
        total = int(round(info.duration * fps))
        if cfg.max_frames:
            total = min(total, cfg.max_frames)
        advance, set_total = bars.task(f"landmarks {cam}", total)
        pts, found = [], []
        with FaceMeshDetector() as det:
            tracker = SubjectTracker()
            for frame in _timed_frames(info.path, fps, cfg.max_frames, timings, cfg.allow_damaged):
                t1 = time.perf_counter()
                face = tracker.pick(det.detect(frame))
                timings["landmarks"] += time.perf_counter() - t1
                found.append(face is not None)
                pts.append(face[:, :2] if face is not None else np.zeros((NUM_LANDMARKS, 2), np.float32))
                advance()
        set_total(len(found), len(found))  # the container's duration was an estimate
        if not any(found):
            raise PrepError(f"{info.path}: no face found in the video")
        per_cam_points.append(np.stack(pts))
        per_cam_found.append(np.array(found))

    T = min(len(f) for f in per_cam_found)
    if T < fps:
        raise PrepError(f"{src.infos[0].path}: only {T} frames at {fps:g} fps (need at least 1 s)")
    points = np.stack([p[:T] for p in per_cam_points])  # [C, T, 478, 2]
    found = np.stack([f[:T] for f in per_cam_found])  # [C, T]
    keep = np.zeros_like(found)
    interpolated = []
    for c in range(len(src.cam_ids)):
        points[c], keep[c], rep = fill_gaps(points[c], found[c], max_gap)
        interpolated.append(np.isin(np.arange(T), rep.interpolated))
        frac = found[c].mean()
        if frac < cfg.min_face_fraction:
            raise PrepError(f"{src.infos[c].path}: face lost for most of the clip (found in {100 * frac:.0f}% "
                            f"of {T} frames, need {100 * cfg.min_face_fraction:.0f}%)")
        if rep.interpolated or rep.dropped:
            bars.log(f"{src.infos[c].path.name}: {rep.describe(fps)}")
    return PrepLandmarks(points=points, keep=keep, interpolated=np.stack(interpolated),
                         seconds=time.perf_counter() - t_stage)


@dataclass
class PrepTracking:
    """The tracking stage: the rig fitted to the landmarks."""

    points: np.ndarray  # [C, T, 478, 2] the landmarks tracking saw (undistorted pixels)
    Ks: np.ndarray  # [C, 3, 3] pixels of the source video (monocular: with the fitted focal length)
    result: TrackingResult
    seconds: float


def tracking_stage(cfg: PrepConfig, src: PrepInputs, lm: PrepLandmarks, timings: dict[str, float],
                   bars) -> PrepTracking:
    """The landmark embedding on the rig, then the rig tracked over the clip (sets timings'
    ``embedding`` and ``tracking``)."""
    from .embedding import landmark_embedding
    from .landmarks import NUM_LANDMARKS
    from .tracking import track_clip

    t_stage = time.perf_counter()
    T = lm.num_timesteps
    if src.multiview:
        from .calibration import undistort_points

        track_pts = lm.points.copy()
        for c, cal in enumerate(src.calibs):
            # mediapipe pixels have centres at +0.5, OpenCV's calibration at +0: shift, undistort, shift back
            flat = track_pts[c].reshape(-1, 2) - 0.5
            track_pts[c] = (undistort_points(flat, cal) + 0.5).reshape(T, NUM_LANDMARKS, 2)
        Ks = np.stack([c.K_talksplat for c in src.calibs])
        viewmats = np.stack([c.viewmat for c in src.calibs])
        sizes = [(c.width, c.height) for c in src.calibs]
    else:
        from talksplat.render.camera import intrinsics

        track_pts = lm.points
        W, H = src.infos[0].width, src.infos[0].height
        Ks = intrinsics(focal=max(W, H), width=W, height=H, dtype=torch.float64).numpy()[None]  # initial guess
        viewmats = np.linalg.inv(MONO_C2W)[None]
        sizes = [(W, H)]
    t0 = time.perf_counter()
    embedding = landmark_embedding(src.rig, cfg.landmark_embedding)
    timings["embedding"] = time.perf_counter() - t0

    _, set_progress = bars.task("tracking", cfg.tracking.rigid_iters + cfg.tracking.full_iters)
    t0 = time.perf_counter()
    result = track_clip(src.rig, embedding, track_pts, lm.keep, Ks, viewmats, sizes, fit_focal=not src.multiview,
                        cfg=cfg.tracking, device=src.device, progress=lambda s, n: set_progress(s, n))
    timings["tracking"] = time.perf_counter() - t0
    if not src.multiview:
        Ks = Ks.copy()
        Ks[:, 0, 0] = Ks[:, 1, 1] = result.focal
    return PrepTracking(points=track_pts, Ks=Ks, result=result, seconds=time.perf_counter() - t_stage)


class RigSilhouettes:
    """Where the tracked rig covers an image (:func:`talksplat.data_prep.plate.head_silhouettes`, no dilation):
    the prior added to the segmented masks (``--mask-prior``).  Posed in chunks of time steps, as asked."""

    CHUNK = 64

    def __init__(self, rig, sequence):
        self.rig, self.seq = rig, sequence
        self._chunk: tuple[int, torch.Tensor] | None = None

    def __call__(self, t: int, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> np.ndarray:
        """[H, W] float32 in {0, 1}: time step ``t`` seen by a camera (``K`` [3, 3] px, ``c2w`` [4, 4] OpenCV,
        metres)."""
        from .plate import head_silhouettes

        start = t - t % self.CHUNK
        if self._chunk is None or self._chunk[0] != start:
            with torch.no_grad():
                verts = self.rig(self.seq[start:start + self.CHUNK].to_params(self.rig.template.device)).vertices
            self._chunk = (start, verts.cpu())
        v = self._chunk[1][t - start][None]
        return head_silhouettes(v, self.rig.faces, K, np.linalg.inv(c2w), width, height, dilate=0)[0].astype(np.float32)


@dataclass
class PrepFrames:
    """The frames stage (pass 2): images and masks written, one :class:`Frame` each."""

    points: np.ndarray  # [C, T, 478, 2] landmarks in the written images' pixels
    seconds: float
    source_frame: dict | None = None  # monocular: meta.json's ``source_frame`` (the plate, held-out frames)


def frames_stage(cfg: PrepConfig, src: PrepInputs, lm: PrepLandmarks, tracked: PrepTracking,
                 writer: DatasetWriter, timings: dict[str, float], bars) -> PrepFrames:
    """Decode each video again, crop (monocular) or undistort (multi-view), segment, write the kept
    time steps' images and masks (adds to timings' ``decode``, ``crop``, ``masks`` and ``write``)."""
    from .masks import Segmenter, smooth_stream, to_uint8_mask

    t_stage = time.perf_counter()
    fps, T, multiview = src.fps, lm.num_timesteps, src.multiview
    points, keep, step_kept, Ks = lm.points, lm.keep, lm.step_kept, tracked.Ks
    out_points = np.zeros_like(points)
    pool = ThreadPoolExecutor(max_workers=2)
    pending = []

    def submit(rel: str, img: np.ndarray) -> None:
        pending.append(pool.submit(writer.write_image, rel, img))
        while len(pending) > 16:
            pending.pop(0).result()

    try:
        for c, (info, cam) in enumerate(zip(src.infos, src.cam_ids)):
            if multiview:
                from .calibration import undistort_image

                cal = src.calibs[c]
                s = min(1.0, cfg.resolution / max(cal.width, cal.height))
                out_cal = cal.scaled(s)
                out_size = (out_cal.width, out_cal.height)
                K_img = out_cal.K_talksplat
                c2w = cal.c2w
                sx, sy = out_cal.width / cal.width, out_cal.height / cal.height
                out_points[c] = tracked.points[c] * np.array([sx, sy])
            else:
                from .framing import crop_image, crop_intrinsics, crop_points, head_boxes, inside_mask

                boxes = head_boxes(points[0], keep[0], scale=cfg.crop_scale, sigma_frames=0.16 * fps,
                                   frame_size=(info.width, info.height))
                c2w = MONO_C2W
                for t in range(T):
                    out_points[0, t] = crop_points(points[0, t], boxes[t], cfg.resolution)
                split = default_split(T, cfg.heldout)
                source = SourceFrameBuilder(src, tracked, boxes, heldout=split["heldout"],
                                            train=_spread([t for t in split["train"] if step_kept[t]],
                                                          cfg.source_frames))
            advance, _ = bars.task(f"images+masks {cam}", T)
            seg = Segmenter()
            prior = RigSilhouettes(src.rig, tracked.result.sequence()) if cfg.mask_prior else None

            def frames():
                for t, frame in enumerate(_timed_frames(info.path, fps, T, timings, cfg.allow_damaged)):
                    t1 = time.perf_counter()
                    if multiview:
                        img = undistort_image(frame, cal)
                        if s < 1:
                            import cv2

                            img = cv2.resize(img, out_size, interpolation=cv2.INTER_AREA)
                    else:
                        img = crop_image(frame, boxes[t], cfg.resolution)
                        if step_kept[t]:
                            source.add(t, frame, submit)
                    t2 = time.perf_counter()
                    timings["crop"] += t2 - t1
                    m = seg(img)
                    if not multiview:
                        m = m * inside_mask(boxes[t], cfg.resolution, (info.width, info.height))
                    timings["masks"] += time.perf_counter() - t2
                    yield (t, img), m

            for (t, img), m in smooth_stream(frames()):
                t0 = time.perf_counter()
                if step_kept[t] and keep[c, t]:
                    rel, mrel = image_name(cam, t), image_name(cam, t, "masks")
                    submit(rel, img)
                    K = K_img if multiview else crop_intrinsics(Ks[0], boxes[t], cfg.resolution)
                    if prior is not None:
                        sil = prior(t, K, c2w, img.shape[1], img.shape[0])
                        if not multiview:  # not over the crop's padding beyond the source frame
                            sil = sil * inside_mask(boxes[t], cfg.resolution, (info.width, info.height))
                        m = np.maximum(m, sil)
                    submit(mrel, to_uint8_mask(m))
                    writer.add_frame(Frame(image=rel, mask=mrel, K=K, c2w=c2w, timestep=t, camera=cam,
                                           width=img.shape[1], height=img.shape[0]))
                timings["write"] += time.perf_counter() - t0
                advance()
            seg.close()
        if not multiview:
            t0 = time.perf_counter()
            source_frame = source.finish(submit)
            timings["plate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for f in pending:
            f.result()
        timings["write"] += time.perf_counter() - t0
    finally:
        pool.shutdown(wait=True)
    return PrepFrames(points=out_points, seconds=time.perf_counter() - t_stage,
                      source_frame=None if multiview else source_frame)


def _spread(steps: list[int], n: int) -> list[int]:
    """At most ``n`` of ``steps``, evenly spread (all of them when there are no more)."""
    if n <= 0:
        return []
    if len(steps) <= n:
        return list(steps)
    return sorted({steps[int(round(x))] for x in np.linspace(0, len(steps) - 1, n)})


class SourceFrameBuilder:
    """Monocular prep's record of the source frame (:mod:`talksplat.data_prep.plate`): the plate made from
    sampled frames, the held-out time steps' whole frames (for the full-frame evaluation) and the ``train``
    time steps' whole frames with their person masks (the torso's whole-frame supervision), all at the
    dataset's frame size (the source scaled to at most ``MAX_SIDE``)."""

    def __init__(self, src: PrepInputs, tracked: PrepTracking, boxes: np.ndarray, heldout: list[int],
                 train: list[int] = ()):
        from .plate import (HEAD_DILATE, PERSON_DILATE, PlateBuilder, frame_scale, head_silhouettes, sample_steps,
                            scale_intrinsics)

        info = src.infos[0]
        T = len(boxes)
        _, self.width, self.height = frame_scale(info.width, info.height)
        self.src_size = (info.width, info.height)
        self.K = scale_intrinsics(tracked.Ks[0], self.width / info.width, self.height / info.height)
        self.heldout = set(heldout)
        self.train = set(train)
        self.steps = sorted(sample_steps(T))
        seq = tracked.result.sequence()[np.array(self.steps)]
        with torch.no_grad():
            verts = src.rig.cpu()(seq.to_params()).vertices
        # the head region: the rig's silhouette dilated by HEAD_DILATE of the crop side (hair beyond the scalp)
        side = float(np.median(boxes[:, 2])) * self.width / info.width
        sil = head_silhouettes(verts, src.rig.faces.cpu(), self.K, np.linalg.inv(MONO_C2W), self.width,
                               self.height, dilate=HEAD_DILATE * side)
        self.silhouettes = dict(zip(self.steps, sil))
        self.margin = 0.15 * side
        self.person_dilate = PERSON_DILATE * side
        self.plate = PlateBuilder(self.width, self.height)
        self.background = PlateBuilder(self.width, self.height)  # the person-free plate (same frames)
        self.segmenter = None
        self.frames: dict[int, str] = {}
        self.masks: dict[int, str] = {}

    def add(self, t: int, frame: np.ndarray, submit) -> None:
        """Source frame ``t`` [H, W, 3] uint8: into the plate when sampled, written when held out, written with
        its mask when a whole-frame training step."""
        if t not in self.silhouettes and t not in self.heldout and t not in self.train:
            return
        from .masks import Segmenter, to_uint8_mask
        from .plate import head_region, person_region, resize_to

        if self.segmenter is None:
            self.segmenter = Segmenter()
        small = resize_to(frame, self.width, self.height)
        person = self.segmenter(small) if t in self.silhouettes or t in self.train else None
        if t in self.silhouettes:
            fg = person > 0.5
            head = head_region(self.silhouettes[t], fg, self.margin)
            self.plate.add(small, ~head)
            self.background.add(small, ~person_region(head, fg, self.person_dilate))
        if t in self.heldout or t in self.train:
            rel = image_name("cam0", t, "frames")
            submit(rel, small)
            self.frames[t] = rel
        if t in self.train:
            rel = image_name("cam0", t, "frame_masks")
            submit(rel, to_uint8_mask(person))
            self.masks[t] = rel

    def finish(self, submit) -> dict:
        """Make and write the plate; the ``source_frame`` entry of meta.json."""
        if self.segmenter is not None:
            self.segmenter.close()
        plate, observed = self.plate.build()
        submit(PLATE, plate)
        submit(PLATE_OBSERVED, (observed * 255).astype(np.uint8))
        background = {}
        try:
            plate, observed = self.background.build()
        except ValueError:  # the person covers every pixel of every sampled frame: no person-free plate
            pass
        else:
            submit(BACKGROUND_PLATE, plate)
            submit(BACKGROUND_PLATE_OBSERVED, (observed * 255).astype(np.uint8))
            background = {"background_plate": BACKGROUND_PLATE, "background_plate_observed": BACKGROUND_PLATE_OBSERVED}
        return {"width": self.width, "height": self.height, "source_size": list(self.src_size),
                "K": self.K.tolist(), "c2w": MONO_C2W.tolist(), "plate": PLATE, "plate_observed": PLATE_OBSERVED,
                **background,
                "plate_frames": len(self.plate.frames),
                "frames": {str(t): rel for t, rel in sorted(self.frames.items())},
                "frame_masks": {str(t): rel for t, rel in sorted(self.masks.items())}}


@dataclass
class PrepMetadata:
    """The metadata stage: landmarks.npz, rig_params.npz and meta.json written, the dataset committed."""

    meta: dict
    tracking_error: dict[str, float]
    dropped: list[int]
    seconds: float


def metadata_stage(cfg: PrepConfig, src: PrepInputs, lm: PrepLandmarks, tracked: PrepTracking,
                   frames: PrepFrames, has_audio: bool, writer: DatasetWriter,
                   timings: dict[str, float]) -> PrepMetadata:
    """Write the landmarks, the tracked parameters and meta.json (with ``timings``), then commit."""
    from talksplat.rigs import recorded_spec

    t_stage = time.perf_counter()
    T, keep, interpolated, step_kept = lm.num_timesteps, lm.keep, lm.interpolated, lm.step_kept
    result, rig = tracked.result, src.rig
    conf = keep.astype(np.float32) * np.where(interpolated, 0.5, 1.0)
    writer.write_landmarks(src.cam_ids, frames.points, conf, interpolated)
    writer.write_rig_params(result.sequence())
    err = result.error[keep & ~interpolated]
    err_px = result.error_px[keep & ~interpolated]
    tracking_error = {"mean_iod": float(np.mean(err)), "median_iod": float(np.median(err)),
                      "p95_iod": float(np.percentile(err, 95)), "mean_px": float(np.mean(err_px))}
    split = default_split(T, cfg.heldout)
    dropped = [int(t) for t in np.flatnonzero(~step_kept)]
    split = {k: [t for t in v if step_kept[t]] for k, v in split.items()}
    meta = {
        "source": [str(v.resolve()) for v in src.videos],
        "source_info": [{"width": i.width, "height": i.height, "fps": i.fps, "duration": i.duration,
                         "rotation": i.rotation} for i in src.infos],
        "fps": src.fps, "num_timesteps": T, "cameras": src.cam_ids, "monocular": not src.multiview,
        "rig": {"name": rig.name, "checksum": rig.checksum, "spec": recorded_spec(cfg.rig)},
        "split": split, "dropped_timesteps": dropped,
        "interpolated_timesteps": [int(t) for t in np.flatnonzero(interpolated.any(0))],
        "audio": "audio.wav" if has_audio else None, "audio_sample_rate": SAMPLE_RATE if has_audio else None,
        "resolution": cfg.resolution, "focal_px": result.focal,
        "tracking_error": tracking_error, **({"source_frame": frames.source_frame} if frames.source_frame else {}),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "landmarks": "mediapipe FaceMesh 478 (refine_landmarks), mediapipe 0.10.21",
    }
    writer.commit(meta)
    return PrepMetadata(meta=meta, tracking_error=tracking_error, dropped=dropped,
                        seconds=time.perf_counter() - t_stage)


def _import_nerf(cfg: PrepConfig, src: Path) -> PrepReport:
    from talksplat.rigs import load_rig, recorded_spec

    from .dataset import load_dataset
    from .nerf_import import import_nerf_dataset

    if not (src / "transforms_train.json").is_file():
        raise PrepError(f"{src}: a directory, but not a NeRF-style dataset (no transforms_train.json)")
    t0 = time.perf_counter()
    out = import_nerf_dataset(src, cfg.out, load_rig(cfg.rig), overwrite=cfg.overwrite,
                              allow_external_paths=cfg.allow_external_paths, rig_spec=recorded_spec(cfg.rig))
    ds = load_dataset(out)
    return PrepReport(out=out, num_timesteps=ds.num_timesteps, num_images=len(ds.frames), dropped=[],
                      interpolated=[], tracking_error={}, timings={"total": time.perf_counter() - t0})
