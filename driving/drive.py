"""`talksplat drive`: a fitted avatar + speech (or text) -> an H.264 MP4 with the audio muxed in.

Audio -> predictor -> rig parameters (written to OUT.npz for other tools and `talksplat view
--params`, with the audio as OUT.wav) -> rendered in batches ->
encoded by ffmpeg in a second thread (`talksplat.render.video.frame_pipeline`: rendering and encoding
overlap; a bounded queue keeps memory flat, so hours of audio work) -> AAC audio muxed -> renamed into place when complete.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from talksplat.core.errors import InputError, OptionError
from talksplat.core.ffmpeg import SAMPLE_RATE

from .config import DriveConfig

if TYPE_CHECKING:
    from talksplat.data_prep.dataset import Frame
    from talksplat.rigs.sequence import RigSequence


_NAMED_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def background_image(spec: str) -> Path | None:
    """The image file a `--background` spec names, or None for `auto` or a colour (`white`, `black`, `#rrggbb`)."""
    return None if spec.lower() in (*_NAMED_BACKGROUNDS, "auto") or spec.startswith("#") else Path(spec)


def parse_background(spec: str, width: int, height: int | None = None) -> torch.Tensor | None:
    """`white` | `black` | `#rrggbb` | image path -> [height, width, 3] float in [0, 1] (an image is cropped to the
    frame's aspect ratio about its centre, then scaled); `auto` -> None (the caller's default: the plate or white).
    ``height`` defaults to ``width`` (a square frame)."""
    height = width if height is None else height
    if spec.lower() == "auto":
        return None
    if spec.lower() in _NAMED_BACKGROUNDS:
        return torch.tensor(_NAMED_BACKGROUNDS[spec.lower()]).expand(height, width, 3)
    if spec.startswith("#"):
        h = spec[1:]
        if len(h) != 6 or any(c not in "0123456789abcdefABCDEF" for c in h):
            raise OptionError(f"--background {spec}: expected #rrggbb")
        return torch.tensor([int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)]).expand(height, width, 3)
    path = Path(spec)
    if not path.is_file():
        raise OptionError(f"--background {spec}: not auto, white, black, #rrggbb or an existing image file")
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: cannot read the background image")
    h, w = img.shape[:2]
    if w * height <= h * width:  # taller than the frame: full width, a band of rows about the centre
        cw, ch = w, max(1, round(w * height / width))
    else:
        cw, ch = max(1, round(h * width / height)), h
    img = img[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0


def source_framing(cfg: DriveConfig, fit) -> bool:
    """Whether to render the whole source frame (``--frame``): `source` needs an avatar fitted over a plate and
    the training camera (--camera 0,0); `auto` picks it when both hold."""
    frontal = parse_camera(cfg.camera) == (0.0, 0.0)
    if cfg.frame == "head":
        return False
    if cfg.frame == "source":
        if not fit.has_source_frame:
            raise OptionError(f"--frame source: {fit.fit_dir} was not fitted over a plate (it needs a monocular "
                              "video prepared and fitted by this version); use --frame head")
        if not frontal:
            raise OptionError(f"--frame source shows the source camera's view; --camera {cfg.camera} needs "
                              "--frame head")
        return True
    return fit.has_source_frame and frontal


def source_camera(source_frame, max_size: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The source frame's camera for an output whose longer side is at most ``max_size`` px (scaled down, never
    up, both sides even): (world-to-camera [4, 4], K [3, 3] px, width, height)."""
    from talksplat.data_prep.plate import frame_scale, scale_intrinsics

    _, w, h = frame_scale(source_frame.width, source_frame.height, max_size)
    K = scale_intrinsics(source_frame.K, w / source_frame.width, h / source_frame.height)
    return (torch.as_tensor(source_frame.viewmat, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32),
            w, h)


def parse_camera(spec: str) -> tuple[float, float]:
    """``yaw,pitch`` in degrees -> (yaw, pitch); yaw in [-360, 360], pitch in [-89, 89]."""
    try:
        yaw, pitch = (float(x) for x in spec.split(","))
    except ValueError:
        raise OptionError(f"--camera {spec}: expected yaw,pitch in degrees, e.g. 20,5") from None
    if not (math.isfinite(yaw) and -360 <= yaw <= 360 and math.isfinite(pitch) and -89 <= pitch <= 89):
        raise OptionError(f"--camera {spec}: yaw must be in -360..360 and pitch in -89..89 degrees")
    return yaw, pitch


def drive_camera(rig, seq: RigSequence, fit_camera: Frame | None, resolution: int, yaw: float,
                 pitch: float) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera [4, 4] (OpenCV) and K [3, 3] (pixels) looking at the head's median position.

    The camera orbits the head in the head's own frame (median pose): yaw about its up axis, pitch
    about its left-right axis; yaw = pitch = 0 is the training camera's direction and distance, with
    the training camera's field of view (a frontal 0.65 m / 24° view without a dataset).
    ``fit_camera``: a training :class:`talksplat.data_prep.dataset.Frame`, or None."""
    from talksplat.render.camera import intrinsics, look_at
    from talksplat.render.rotation import axis_angle_to_matrix
    from talksplat.rigs.sequence import RigSequence

    median = RigSequence(seq.shape, {k: np.median(v, 0, keepdims=True) for k, v in seq.frames.items()})
    p = median.with_frames(expression=np.zeros((1, seq.num_expression))).to_params()  # neutral face, median pose
    with torch.no_grad():
        v = rig.cpu()(p).vertices[0]
    face = v[rig.region("face").cpu()]
    center = face.mean(0).double()
    R = axis_angle_to_matrix(p.global_rot)[0].double()  # head frame -> world
    if fit_camera is not None:
        offset = torch.from_numpy(fit_camera.c2w[:3, 3]) - center
        distance = float(offset.norm())
        direction = (R.T @ (offset / distance))  # camera direction in the head frame
        fy = float(fit_camera.K[1, 1]) / fit_camera.height
    else:
        distance, direction, fy = 0.65, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 0.5 / math.tan(math.radians(12))
    yaw_r, pitch_r = math.radians(yaw), math.radians(pitch)
    Ry = torch.tensor([[math.cos(yaw_r), 0, math.sin(yaw_r)], [0, 1, 0], [-math.sin(yaw_r), 0, math.cos(yaw_r)]],
                      dtype=torch.float64)
    Rx = torch.tensor([[1, 0, 0], [0, math.cos(pitch_r), -math.sin(pitch_r)], [0, math.sin(pitch_r), math.cos(pitch_r)]],
                      dtype=torch.float64)
    eye = center + distance * (R @ (Ry @ Rx @ direction))
    w2c = look_at(eye, center, R @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    K = intrinsics(focal=fy * resolution, width=resolution, height=resolution)
    return w2c.float(), K


def _audio_for_mux(src: Path, tmp_dir: Path, seconds: float) -> Path:
    """The first audio stream of ``src`` as a WAV of exactly ``seconds`` (padded with silence or cut), so
    the MP4's audio and video end together and ffmpeg's stream choice can never pick a video; tagged as
    talksplat's own (see talksplat.core.ffmpeg)."""
    from talksplat.core.ffmpeg import OWN_TAG, ffmpeg_exe, last_error_line
    from talksplat.core.process import child_kwargs

    from .audio import AudioError

    out = tmp_dir / "audio.wav"
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                           "-map", "0:a:0", "-vn", "-af", "apad", "-t", f"{seconds:.6f}", "-c:a", "pcm_s16le",
                           "-map_metadata", "-1", "-metadata", f"comment={OWN_TAG}", str(out)],
                          capture_output=True, text=True, errors="replace", **child_kwargs())
    if proc.returncode != 0:
        raise AudioError(f"{src}: cannot read audio ({last_error_line(proc.stderr)})")
    return out


def is_own_npz(path: Path) -> bool:
    """Whether ``path`` is a parameters file talksplat drive wrote (the rig fields, ``fps`` and ``audio``)."""
    from talksplat.rigs.sequence import FIELDS

    try:
        with np.load(path, allow_pickle=False) as z:
            return {*FIELDS, "fps", "audio"} <= set(z.files)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def output_paths(out: Path) -> tuple[Path, Path, Path]:
    """OUT.mp4 and the files beside it: OUT.npz (rig parameters), OUT.wav (the audio as muxed)."""
    return out, out.with_suffix(".npz"), out.with_suffix(".wav")


def check_drive_outputs(cfg: DriveConfig, fit_files: list[Path]) -> None:
    """Refuse outputs that are inputs (the audio, the background image, the fit's files) and existing
    outputs without ``--overwrite``; with it, replace only files talksplat wrote."""
    from talksplat.core.ffmpeg import has_own_tag
    from talksplat.core.outputs import check_output_file

    inputs = [cfg.audio, background_image(cfg.background), *fit_files]
    video, npz, wav = output_paths(cfg.out)
    check_output_file(video, cfg.overwrite, inputs, has_own_tag)
    check_output_file(npz, cfg.overwrite, inputs, is_own_npz)
    check_output_file(wav, cfg.overwrite, inputs, has_own_tag)
    if cfg.arkit_csv:
        from .arkit_csv import csv_path, is_own_csv

        check_output_file(csv_path(cfg.out), cfg.overwrite, inputs, is_own_csv)


def describe_drive(r: dict) -> str:
    """One line from :func:`run_drive`'s summary: frames, audio length, time, speed, device."""
    return (f"{r['frames']} frames, {r['audio_seconds']:.2f} s of audio in {r['seconds']:.1f} s "
            f"({r['realtime_factor']:.2f} s per second of audio, {r['device']})")


def check_drive_options(cfg: DriveConfig) -> None:
    """The options and input files that can be checked before any work (one line each)."""
    if (cfg.audio is None) == (cfg.text is None):
        raise OptionError("give exactly one of --audio FILE or --text \"...\"")
    if cfg.resolution % 2:
        raise OptionError(f"--resolution {cfg.resolution}: must be even (H.264)")
    if cfg.out.suffix.lower() != ".mp4":
        raise OptionError(f"--out {cfg.out}: the output must be an .mp4 file")
    parse_camera(cfg.camera)
    parse_background(cfg.background, 16)
    if cfg.audio is not None and not cfg.audio.is_file():
        raise InputError(f"{cfg.audio}: no such audio file")


def run_drive(cfg: DriveConfig) -> dict:
    """Do the work of `talksplat drive` (holding the lock of OUT); returns a summary (paths, frames,
    seconds, speed)."""
    from talksplat.core.outputs import output_lock

    check_drive_options(cfg)
    with output_lock(cfg.out):
        return _run_drive(cfg)


def render_batches(avatar, rig, seq: RigSequence, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                   batch: int, background: torch.Tensor | None = None, fps: float = 25.0):
    """Render ``seq`` [T] in batches of ``batch`` frames on ``viewmat``'s device: yields [B, height, width, 3]
    uint8 RGB numpy (converted on the device, then downloaded by :func:`talksplat.render.device.download`) over
    ``background`` [height, width, 3] in [0, 1] (None: white).  An avatar with a torso poses it by the whole
    sequence's smoothed head motion (``seq`` at ``fps``)."""
    from talksplat.avatar.render import render_avatar
    from talksplat.render.device import download

    device = viewmat.device
    torso = None
    if avatar.has_torso:
        from talksplat.avatar.torso import sequence_torso_poses

        torso = sequence_torso_poses(rig, seq.to_params(device), fps)

    def on_device():
        for s in range(0, len(seq), batch):
            with torch.no_grad():
                colors, alphas, _ = render_avatar(avatar, rig, seq[s:s + batch].to_params(device), viewmat[None],
                                                  K[None], width, height,
                                                  torso=None if torso is None else torso[s:s + batch])
                out = colors[:, 0] + (1 - alphas[:, 0]) * (1.0 if background is None else background[None])
                yield (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8)

    yield from download(on_device())  # on a GPU: pinned, non-blocking, overlapped with the next batch


def spoken_visemes(text: str, out_wav: Path, voice: str = "en-us",
                   pad_s: float = 0.0) -> tuple[Path, np.ndarray, list]:
    """Speak ``text`` with espeak-ng into ``out_wav``, with ``pad_s`` seconds of silence before and after;
    returns (the WAV, its visemes [N // 160 + 1, 30] at 100 frames per second, from the phonemes espeak-ng
    spoke, and those phonemes: [:class:`~talksplat.driving.phonetic.PhoneSegment`], times in the WAV's)."""
    from dataclasses import replace

    from .audio import AudioError, write_wav
    from .phonetic import PhoneticError, speak_with_phonemes, text_track

    if not text.strip():
        raise AudioError("--text: the text is empty")
    try:
        raw, rate, segs = speak_with_phonemes(text, voice)
    except PhoneticError as e:
        raise AudioError(f"--text: {e}") from None
    pad = int(round(pad_s * rate))
    if pad > 0:
        raw = np.concatenate([np.zeros(pad, raw.dtype), raw, np.zeros(pad, raw.dtype)])
        segs = [replace(s, start=s.start + pad / rate, end=s.end + pad / rate) for s in segs]
    write_wav(out_wav, raw, rate)
    frames = int(len(raw) / rate * 100) + 1
    return out_wav, text_track(segs, frames), segs


def _run_drive(cfg: DriveConfig) -> dict:
    from talksplat.core.files import atomic_write, scratch_dir
    from talksplat.core.progress import Bars
    from talksplat.render.device import pick_device
    from talksplat.render.video import encode_jobs, frame_pipeline, pick_encoder

    from .audio import load_audio, synthesize_speech
    from .arkit_csv import check_arkit_rig, csv_path, write_arkit_csv
    from .fit_reader import avatar_rig, fit_files, fit_paths, open_fit
    from .animate import predict_sequence

    yaw, pitch = parse_camera(cfg.camera)
    t_start = time.perf_counter()
    fit_dir, avatar_file = fit_paths(cfg.avatar)
    check_drive_outputs(cfg, fit_files(fit_dir, avatar_file))
    rig = avatar_rig(avatar_file, cfg.rig)
    if cfg.arkit_csv:
        check_arkit_rig(rig)  # before any work: one line naming the rig's units
    fit = open_fit(cfg.avatar, need_predictor=True, rig=rig)  # the avatar checked whole before the predictor
    avatar = fit.avatar
    fit.tracked.validate(rig)  # the identity and expression sizes are the rig's (InputError naming the file)
    source = source_framing(cfg, fit)
    device = pick_device(cfg.device)
    codec = pick_encoder(cfg.encoder, device)  # before any work: `--encoder nvenc` fails here where it cannot run
    # read now, once: a damaged plate names its file before any work
    source_frame, plate = fit.source_frame() if source else (None, None)
    video_out, npz, wav = output_paths(cfg.out)
    with scratch_dir("drive") as tmp:
        tmp = Path(tmp)
        visemes = None
        if cfg.audio is not None:
            src = cfg.audio
        elif fit.predictor.encoder_spec == "phonetic":  # espeak-ng tells its own phonemes: no recognition
            src, visemes, _ = spoken_visemes(cfg.text, tmp / "tts.wav", voice=cfg.voice)
        else:
            src = synthesize_speech(cfg.text, tmp / "tts.wav", voice=cfg.voice)
        wave = load_audio(src)
        seq = predict_sequence(fit, wave, fps=cfg.fps, pose=cfg.pose, blinks=cfg.blinks, seed=cfg.seed,
                               mouth_amplitude=cfg.mouth_amplitude,
                               visemes=visemes)
        T = len(seq)
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        mux = _audio_for_mux(Path(src), tmp, T / cfg.fps)
        t_predict = time.perf_counter() - t_start

        if source:  # the whole source frame, over the plate unless --background says otherwise
            sf = source_frame
            viewmat, K, width, height = source_camera(sf, cfg.max_size)
            background = parse_background(cfg.background, width, height)
            if background is None:
                from talksplat.data_prep.plate import warp_view

                background = torch.from_numpy(warp_view(plate, sf.K, K.double().numpy(), width, height)).float() / 255
        else:
            viewmat, K = drive_camera(rig, seq, fit.camera, cfg.resolution, yaw, pitch)
            width = height = cfg.resolution
            background = parse_background(cfg.background, width, height)  # None: white
        rig, avatar = rig.to(device), avatar.to(device)
        viewmat, K = viewmat.to(device), K.to(device)
        background = None if background is None else background.to(device)

        with Bars(cfg.quiet, transient=True) as bars, \
                frame_pipeline(video_out, width, height, fps=cfg.fps, audio_path=mux,
                               shortest=False, queue_size=2 * cfg.batch, quality=cfg.quality,
                               jobs=cfg.encode_jobs or encode_jobs(device), codec=codec) as video:
            advance, _ = bars.task("drive", T)
            # rendered in batches on the device while a thread encodes
            for frames in render_batches(avatar, rig, seq, viewmat, K, width, height, cfg.batch, background,
                                         fps=cfg.fps):
                for frame in frames:
                    video.write(frame)
                advance(len(frames))
        with atomic_write(wav) as t:
            shutil.copyfile(mux, t)
        seq.extras["audio"] = np.asarray(wav.name)  # beside fps: what `talksplat view --params` plays
        seq.save(npz)
        arkit = write_arkit_csv(csv_path(cfg.out), seq, rig, cfg.fps) if cfg.arkit_csv else None
        t_total = time.perf_counter() - t_start
    duration = len(wave) / SAMPLE_RATE
    return {"video": video_out, "params": npz, "audio": wav, "arkit_csv": arkit, "frames": T,
            "frame": "source" if source else "head", "width": width, "height": height,
            "audio_seconds": round(duration, 3), "seconds": round(t_total, 2), "predict_seconds": round(t_predict, 2),
            "render_encode_seconds": round(t_total - t_predict, 2),
            "realtime_factor": round(t_total / max(duration, 1e-9), 3), "device": str(device), "encoder": codec}
