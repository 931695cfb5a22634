"""`talksplat prep`: raw video (monocular or calibrated multi-view) -> tracked dataset.

Stages: probe + audio -> pass 1 (decode, FaceMesh landmarks, one subject) -> gap filling -> head
tracking -> pass 2 (decode again, crop or undistort, selfie-segmentation masks, write) -> commit.
Decoding twice keeps memory bounded: only landmarks are held for the whole clip.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talksplat.core.errors import TalksplatError
from talksplat.core.ffmpeg import SAMPLE_RATE
from talksplat.core.outputs import output_lock
from talksplat.render.device import pick_device

from .config import PrepConfig
from .dataset import DatasetWriter, Frame, check_output_dir, default_split, image_name
from .tracking import MONO_C2W


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

    def describe(self) -> str:
        """One line: time steps, images, tracking error, dropped frames."""
        err = self.tracking_error
        return (f"{self.num_timesteps} time steps, {self.num_images} images"
                + (f", tracking error {100 * err['mean_iod']:.2f}% of the inter-ocular distance "
                   f"({err['mean_px']:.2f} px)" if err else "")
                + (f", {len(self.dropped)} frames dropped" if self.dropped else ""))


class _Progress:
    """rich progress bars on stderr, one per stage (only when stderr is a terminal and not quiet);
    messages as plain lines on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self._p = None

    def __enter__(self):
        from talksplat.core.progress import progress_bar, show_progress

        if show_progress(self.quiet):
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

            self._p = progress_bar(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                   TimeElapsedColumn())
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, name: str, total: int | None):
        """``(advance(n=1), update(completed, total=None))`` of a new bar (no-ops without bars)."""
        if self._p is None:
            return lambda n=1: None, lambda completed, total=None: None
        t = self._p.add_task(name, total=total)
        return (lambda n=1: self._p.advance(t, n),
                lambda completed, total=None: self._p.update(t, completed=completed, total=total))

    def log(self, msg: str, warning: bool = False) -> None:
        """One line on stderr (above the bars when they are shown): ``talksplat: [warning: ]msg``;
        without ``warning`` nothing when quiet."""
        import sys

        if self.quiet and not warning:
            return
        line = "talksplat: " + ("warning: " if warning else "") + " ".join(msg.split())
        if self._p is not None:
            self._p.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)


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
    timings = {k: 0.0 for k in ("decode", "landmarks", "embedding", "tracking", "crop", "masks", "write")}
    videos = [Path(v) for v in cfg.videos]
    if not videos:
        raise PrepError("no input video given")
    inputs = [*videos, cfg.calibration, cfg.landmark_embedding]
    check_output_dir(cfg.out, cfg.overwrite, inputs)
    with output_lock(cfg.out):
        if len(videos) == 1 and videos[0].is_dir():
            return _import_nerf(cfg, videos[0])
        return _prep_videos(cfg, videos, inputs, timings, t_start)


def _prep_videos(cfg: PrepConfig, videos: list[Path], inputs: list, timings: dict[str, float],
                 t_start: float) -> PrepReport:
    from talksplat.rigs import load_rig, recorded_spec

    from .decode import extract_audio, probe_video
    from .embedding import landmark_embedding
    from .landmarks import NUM_LANDMARKS, FaceMeshDetector, SubjectTracker, fill_gaps

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
    fps = float(cfg.fps)
    max_gap = max(0, int(round(cfg.max_gap * fps)))

    with DatasetWriter(cfg.out, overwrite=cfg.overwrite, inputs=inputs) as writer, _Progress(cfg.quiet) as progress:
        has_audio = extract_audio(videos[0], writer.root / "audio.wav", allow_damaged=cfg.allow_damaged)
        if not has_audio:
            progress.log(f"{videos[0]}: no audio track — the avatar can be fitted but not trained to speak",
                         warning=True)

        # ---------------------------------------------------------------- pass 1: landmarks
        per_cam_points, per_cam_found = [], []
        for info, cam in zip(infos, cam_ids):
            total = int(round(info.duration * fps))
            if cfg.max_frames:
                total = min(total, cfg.max_frames)
            advance, set_total = progress.task(f"landmarks {cam}", total)
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
            raise PrepError(f"{infos[0].path}: only {T} frames at {fps:g} fps (need at least 1 s)")
        points = np.stack([p[:T] for p in per_cam_points])  # [C, T, 478, 2]
        found = np.stack([f[:T] for f in per_cam_found])  # [C, T]
        keep = np.zeros_like(found)
        interpolated, reports = [], []
        for c in range(len(cam_ids)):
            points[c], keep[c], rep = fill_gaps(points[c], found[c], max_gap)
            reports.append(rep)
            interpolated.append(np.isin(np.arange(T), rep.interpolated))
            frac = found[c].mean()
            if frac < cfg.min_face_fraction:
                raise PrepError(f"{infos[c].path}: face lost for most of the clip (found in {100 * frac:.0f}% "
                                f"of {T} frames, need {100 * cfg.min_face_fraction:.0f}%)")
            if rep.interpolated or rep.dropped:
                progress.log(f"{infos[c].path.name}: {rep.describe(fps)}")
        interpolated = np.stack(interpolated)
        step_kept = keep.any(0)  # a time step is in the dataset when some camera sees the face

        # ---------------------------------------------------------------- tracking
        if multiview:
            from .calibration import undistort_points

            track_pts = points.copy()
            for c, cal in enumerate(calibs):
                # mediapipe pixels have centres at +0.5, OpenCV's calibration at +0: shift, undistort, shift back
                flat = track_pts[c].reshape(-1, 2) - 0.5
                track_pts[c] = (undistort_points(flat, cal) + 0.5).reshape(T, NUM_LANDMARKS, 2)
            Ks = np.stack([c.K_talksplat for c in calibs])
            viewmats = np.stack([c.viewmat for c in calibs])
            sizes = [(c.width, c.height) for c in calibs]
        else:
            track_pts = points
            W, H = infos[0].width, infos[0].height
            from talksplat.render.camera import intrinsics

            Ks = intrinsics(focal=max(W, H), width=W, height=H, dtype=torch.float64).numpy()[None]  # initial guess
            viewmats = np.linalg.inv(MONO_C2W)[None]
            sizes = [(W, H)]
        t0 = time.perf_counter()
        embedding = landmark_embedding(rig, cfg.landmark_embedding)
        timings["embedding"] = time.perf_counter() - t0

        from .tracking import track_clip

        _, set_progress = progress.task("tracking", cfg.tracking.rigid_iters + cfg.tracking.full_iters)
        t0 = time.perf_counter()
        result = track_clip(rig, embedding, track_pts, keep, Ks, viewmats, sizes, fit_focal=not multiview,
                       cfg=cfg.tracking, device=device, progress=lambda s, n: set_progress(s, n))
        timings["tracking"] = time.perf_counter() - t0
        if not multiview:
            Ks = Ks.copy()
            Ks[:, 0, 0] = Ks[:, 1, 1] = result.focal

        # ---------------------------------------------------------------- pass 2: images and masks
        from .masks import Segmenter, smooth_stream, to_uint8_mask

        out_points = np.zeros_like(points)
        pool = ThreadPoolExecutor(max_workers=2)
        pending = []

        def submit(rel: str, img: np.ndarray) -> None:
            pending.append(pool.submit(writer.write_image, rel, img))
            while len(pending) > 16:
                pending.pop(0).result()

        try:
            for c, (info, cam) in enumerate(zip(infos, cam_ids)):
                if multiview:
                    from .calibration import undistort_image

                    cal = calibs[c]
                    s = min(1.0, cfg.resolution / max(cal.width, cal.height))
                    out_cal = cal.scaled(s)
                    out_size = (out_cal.width, out_cal.height)
                    K_img = out_cal.K_talksplat
                    c2w = cal.c2w
                    sx, sy = out_cal.width / cal.width, out_cal.height / cal.height
                    out_points[c] = track_pts[c] * np.array([sx, sy])
                else:
                    from .framing import crop_image, crop_intrinsics, crop_points, head_boxes, inside_mask

                    boxes = head_boxes(points[0], keep[0], scale=cfg.crop_scale, sigma_frames=0.16 * fps,
                                       frame_size=(info.width, info.height))
                    c2w = MONO_C2W
                    for t in range(T):
                        out_points[0, t] = crop_points(points[0, t], boxes[t], cfg.resolution)
                advance, _ = progress.task(f"images+masks {cam}", T)
                seg = Segmenter()

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
                        submit(mrel, to_uint8_mask(m))
                        K = K_img if multiview else crop_intrinsics(Ks[0], boxes[t], cfg.resolution)
                        writer.add_frame(Frame(image=rel, mask=mrel, K=K, c2w=c2w, timestep=t, camera=cam,
                                               width=img.shape[1], height=img.shape[0]))
                    timings["write"] += time.perf_counter() - t0
                    advance()
                seg.close()
            t0 = time.perf_counter()
            for f in pending:
                f.result()
            timings["write"] += time.perf_counter() - t0
        finally:
            pool.shutdown(wait=True)

        # ---------------------------------------------------------------- metadata
        conf = keep.astype(np.float32) * np.where(interpolated, 0.5, 1.0)
        writer.write_landmarks(cam_ids, out_points, conf, interpolated)
        writer.write_rig_params(result.sequence())
        err = result.error[keep & ~interpolated]
        err_px = result.error_px[keep & ~interpolated]
        tracking_error = {"mean_iod": float(np.mean(err)), "median_iod": float(np.median(err)),
                          "p95_iod": float(np.percentile(err, 95)), "mean_px": float(np.mean(err_px))}
        split = default_split(T, cfg.heldout)
        dropped = [int(t) for t in np.flatnonzero(~step_kept)]
        split = {k: [t for t in v if step_kept[t]] for k, v in split.items()}
        timings["total"] = time.perf_counter() - t_start
        meta = {
            "source": [str(v.resolve()) for v in videos],
            "source_info": [{"width": i.width, "height": i.height, "fps": i.fps, "duration": i.duration,
                             "rotation": i.rotation} for i in infos],
            "fps": fps, "num_timesteps": T, "cameras": cam_ids, "monocular": not multiview,
            "rig": {"name": rig.name, "checksum": rig.checksum, "spec": recorded_spec(cfg.rig)},
            "split": split, "dropped_timesteps": dropped,
            "interpolated_timesteps": [int(t) for t in np.flatnonzero(interpolated.any(0))],
            "audio": "audio.wav" if has_audio else None, "audio_sample_rate": SAMPLE_RATE if has_audio else None,
            "resolution": cfg.resolution, "focal_px": result.focal,
            "tracking_error": tracking_error, "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "landmarks": "mediapipe FaceMesh 478 (refine_landmarks), mediapipe 0.10.21",
        }
        writer.commit(meta)
    return PrepReport(out=Path(cfg.out), num_timesteps=T, num_images=len(writer.frames), dropped=dropped,
                      interpolated=meta["interpolated_timesteps"], tracking_error=tracking_error, timings=timings)


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
