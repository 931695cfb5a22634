"""`talksplat view`: an interactive web viewer (viser) for avatars and driven sequences.

The avatar is rendered on this machine (CUDA with gsplat, else our CPU rasterizer) and streamed
to any browser as images (nerfview's pattern; see :mod:`talksplat.viewer.render_fn`).  The GUI
holds live rig controls (expressions, jaw, neck, eyes), a time slider with play / pause / loop
over a sequence (the training sequence of a fit, a `talksplat drive` parameters file, or audio
through the avatar's predictor), render statistics, a resolution control, overlays (rig
wireframe, Gaussian centres) and a screenshot button.

Heavy imports (torch, viser) happen inside functions so `talksplat --help` stays fast.
"""

from __future__ import annotations

import base64
import collections
import html
import ipaddress
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Literal

import numpy as np
import tyro

from talksplat.core.checks import Range, check_options
from talksplat.core.config import ProcessOptions
from talksplat.core.errors import InputError, OptionError
from talksplat.rigs.spec import RecordedRigSpec

if TYPE_CHECKING:
    from talksplat.rigs.sequence import RigSequence

#: Longest audio embedded in the page (a data: URI), bytes.
MAX_AUDIO_BYTES = 24 * 1024 * 1024


@dataclass
class ViewConfig(ProcessOptions):
    """Interactive web viewer: orbit the avatar, pull its expressions, play driven sequences.

    Renders on this machine (GPU if present) and streams to a browser at http://HOST:PORT.
    """

    avatar: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="AVATAR")]]
    """A fit folder (`talksplat fit --out`) or an avatar `.safetensors` file."""
    audio: Path | None = None
    """Speech (WAV) to drive the avatar with its audio predictor; played in the browser in sync."""
    params: Path | None = None
    """Rig parameters from `talksplat drive` (`.npz`: shape, expression, jaw, neck, eyes, global_rot,
    translation, fps, optional audio) to play back."""
    allow_external_paths: bool = False
    """Let a --params file's `audio` name a file outside the parameters file's folder."""
    rig: RecordedRigSpec = None
    host: str = "127.0.0.1"
    """Address to listen on.  Anything but loopback lets anyone on the network view the avatar."""
    port: Annotated[int, Range(1, 65535)] = 8080
    """Port to listen on (the next free one if taken) (1 to 65535)."""
    resolution: Annotated[int, Range(16, 1024)] = 1024
    """Longer image side in pixels when the camera is still (16 to 1024)."""
    moving_resolution: Annotated[int | None, Range(16, 1024)] = None
    """Longer image side while the camera or parameters move (default: `--resolution` on CUDA, 256 on CPU) (16 to 1024)."""
    fps: Annotated[float, Range(1, 240)] = 25.0
    """Frame rate of the sequence predicted from `--audio` (1 to 240)."""
    expressions: Annotated[int, Range(0, 1000)] = 10
    """Expression sliders shown for rigs whose expression components have no range (the first N; FLAME) (0 to 1000)."""
    background: Annotated[tuple[float, float, float], Range(0.0, 1.0)] = (1.0, 1.0, 1.0)
    """Background colour, RGB in [0, 1] (0 to 1)."""
    screenshot_dir: Path = Path(".")
    """Where the screenshot button writes PNGs."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to render: `auto` picks CUDA (gsplat) when available, else our CPU rasterizer."""


# ---------------------------------------------------------------------------------------- inputs
@dataclass
class Sequence:
    """A sequence of rig parameters to scrub and play.

    params: the frames (a :class:`RigSequence`, T frames, checked against the rig); fps: frames per
    second; audio: WAV aligned with frame 0, or None.
    """

    name: str
    params: RigSequence
    fps: float
    audio: Path | None = None

    @property
    def frames(self) -> dict[str, np.ndarray]:
        """Frame field -> [T, ...] (expression [T, E], eyes [T, 2, 3], others [T, 3]; radians, metres)."""
        return self.params.frames

    @property
    def shape(self) -> np.ndarray:
        """[S] identity."""
        return self.params.shape

    @property
    def length(self) -> int:
        return len(self.params)

    def frame(self, t: int) -> dict[str, np.ndarray]:
        """One frame (no time axis) including "shape"; ``t`` is clamped to the sequence."""
        return self.params.frame(min(max(int(t), 0), self.length - 1))


def check_sequence(params: RigSequence, rig, fps: float, name: str) -> Sequence:
    """Validate a sequence against ``rig`` (:class:`InputError` naming its source) and its frame rate."""
    params.validate(rig)
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"{params.source}: fps must be a positive number, not {fps}")
    return Sequence(name, params, float(fps), None)


def load_params_file(path: Path, rig, allow_external_paths: bool = False) -> Sequence:
    """A `talksplat drive` parameters file -> :class:`Sequence` (:class:`InputError` naming the file)."""
    from talksplat.rigs.sequence import RigSequence

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: parameters file not found")
    params = RigSequence.load(path, finite=False, what="parameters file")  # finiteness: check_sequence
    arrays = params.extras
    if "fps" not in arrays:
        raise InputError(f"{path}: missing 'fps' (the frame rate of the sequence)")
    try:
        fps = float(np.asarray(arrays["fps"]).reshape(()))
    except (TypeError, ValueError):
        raise InputError(f"{path}: 'fps' must be one number") from None
    seq = check_sequence(params, rig, fps, f"driven: {path.name}")
    if "audio" in arrays:
        try:
            audio = Path(str(np.asarray(arrays["audio"]).reshape(())))
        except ValueError:
            raise InputError(f"{path}: 'audio' must be one file name") from None
        audio = audio if audio.is_absolute() else path.parent / audio
        folder = path.parent.resolve()
        if not allow_external_paths and folder not in audio.resolve().parents:
            raise InputError(f"{path}: 'audio' names {audio}, outside the parameters file's folder {path.parent} "
                             "(pass --allow-external-paths to play it)")
        if audio.is_file():
            seq.audio = audio
        else:
            print(f"talksplat view: warning: {path}: audio {audio} not found; playing without sound", file=sys.stderr)
    return seq


def predict_sequence(avatar_file: Path, audio: Path, fps: float, rig) -> Sequence:
    """Run the avatar's audio predictor (`talksplat.driving.predict`) on ``audio`` (any format ffmpeg
    reads; a non-WAV file is played in the browser from a temporary WAV copy)."""
    import atexit
    import os
    import tempfile

    from talksplat.driving.audio import load_audio, write_wav
    from talksplat.driving.predict import open_fit, predict_sequence as predict

    if not audio.is_file():
        raise InputError(f"{audio}: audio file not found")
    wave = load_audio(audio)
    params = predict(open_fit(avatar_file), wave, fps=fps)
    params.source = f"{audio} (predicted)"
    seq = check_sequence(params, rig, fps, f"driven: {audio.name}")
    seq.audio = audio
    if audio.suffix.lower() != ".wav":
        fd, tmp = tempfile.mkstemp(prefix="talksplat-view-", suffix=".wav")
        os.close(fd)
        atexit.register(lambda: Path(tmp).unlink(missing_ok=True))
        seq.audio = write_wav(tmp, wave)
    return seq


def resolve_avatar(path: Path) -> tuple[Path, Path | None]:
    """AVATAR argument -> (avatar .safetensors file, fit folder or None)."""
    path = Path(path)
    if path.is_dir():
        f = path / "avatar.safetensors"
        if not f.is_file():
            raise InputError(f"{path}: not a fit folder (no avatar.safetensors); give a fit folder or an avatar file")
        return f, path
    if not path.exists():
        raise InputError(f"{path}: avatar not found")
    fit = path.parent if (path.parent / "tuned_params.npz").is_file() else None
    return path, fit


@dataclass
class TrainingCamera:
    """A dataset camera: c2w [4, 4] OpenCV camera-to-world, K [3, 3] pixels, image size."""

    c2w: np.ndarray
    K: np.ndarray
    width: int
    height: int


def load_training(fit_dir: Path | None, header: dict, rig) -> tuple[Sequence | None, TrainingCamera | None]:
    """The training sequence (tuned parameters of a fit) and the first training camera of its dataset.

    Anything missing (a bare avatar file, a moved dataset) gives None; a warning says what.
    """
    from talksplat.data_prep.dataset import DatasetError, first_training_frame, is_dataset, load_metadata
    from talksplat.rigs.sequence import RigSequence

    seq, cam = None, None
    dataset = header.get("extra", {}).get("dataset")
    dataset = Path(dataset) if dataset else None
    fps, audio = 25.0, None
    if dataset is not None and is_dataset(dataset):
        try:
            meta, frames = load_metadata(dataset)
            fps = float(meta.get("fps") or 25.0)
            if meta.get("audio") and (dataset / meta["audio"]).is_file():
                audio = dataset / meta["audio"]
            f = first_training_frame(meta, frames)
            cam = TrainingCamera(f.c2w, f.K, f.width, f.height)
        except (OSError, ValueError, KeyError, IndexError, TypeError, DatasetError) as e:
            print(f"talksplat view: warning: {dataset}: cannot read the training cameras ({e}); "
                  "using a default camera", file=sys.stderr)
            cam = None
    elif dataset is not None:
        print(f"talksplat view: warning: dataset {dataset} not found; using a default camera", file=sys.stderr)
    if fit_dir is not None and (fit_dir / "tuned_params.npz").is_file():
        path = fit_dir / "tuned_params.npz"
        try:
            seq = check_sequence(RigSequence.load(path, finite=False), rig, fps, "training (tuned)")
            seq.audio = audio
        except (OSError, ValueError) as e:
            print(f"talksplat view: warning: {path}: {e}; no training sequence", file=sys.stderr)
    return seq, cam


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wav_data_uri(path: Path) -> tuple[str | None, str]:
    """(the WAV file as a data: URI for an <audio> element, "") or (None, why it cannot be embedded)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, f"audio {path} is unreadable ({e.strerror})"
    if data[:4] != b"RIFF":
        return None, f"audio {Path(path).name} is not a WAV file"
    if len(data) > MAX_AUDIO_BYTES:
        return None, f"audio {Path(path).name} is too long to embed in the page ({len(data) >> 20} MB)"
    return "data:audio/wav;base64," + base64.b64encode(data).decode("ascii"), ""


# ---------------------------------------------------------------------------------------- viewer
@dataclass
class ExpressionControl:
    index: int
    name: str
    lo: float
    hi: float


#: Slider range of expression components without a range in the rig's metadata.
UNBOUNDED_SLIDER_RANGE = (-3.0, 3.0)


def expression_controls(rig, unbounded: int) -> list[ExpressionControl]:
    """The expression sliders: every unit over the rig's ``expression_range`` when its units are bounded
    (open head: 52 named units in [0, 1]); else the first ``unbounded`` components over
    :data:`UNBOUNDED_SLIDER_RANGE` (FLAME's 100 PCA components)."""
    names = rig.expression_names
    if rig.expression_range is not None:
        lo, hi = rig.expression_range
        return [ExpressionControl(i, n, lo, hi) for i, n in enumerate(names)]
    lo, hi = UNBOUNDED_SLIDER_RANGE
    return [ExpressionControl(i, n, lo, hi) for i, n in enumerate(names[:unbounded])]


class Viewer:
    """The viser server, its GUI and playback; one :class:`RenderLoop` per connected browser."""

    def __init__(self, cfg: ViewConfig, renderer, rig, sequences: list[Sequence], train_cam: TrainingCamera | None,
                 identity: np.ndarray, title: str, on_stage: Callable[[str], None] | None = None):
        import viser

        from .render_fn import RenderLoop, RenderRequest, viser_camera

        self._RenderLoop, self._RenderRequest, self._viser_camera = RenderLoop, RenderRequest, viser_camera
        self.cfg = cfg
        self.say = on_stage or (lambda text: None)  # a line for the user (a screenshot written)
        self.renderer = renderer
        self.rig = rig
        self.sequences = sequences
        self.sequence: Sequence | None = sequences[0] if sequences else None
        self.identity = np.asarray(identity, np.float32)
        self.train_cam = train_cam
        self.lock = threading.RLock()
        self.state = self.sequence.frame(0) if self.sequence else self._neutral()
        self.loops: dict[int, object] = {}
        self.shown = collections.deque(maxlen=30)
        self.frames_shown = 0
        self.last_stats_update = 0.0
        self.resolution = int(cfg.resolution)
        cpu = renderer.device.type != "cuda"
        self.moving_resolution = int(cfg.moving_resolution or (min(256, cfg.resolution) if cpu else cfg.resolution))
        # playback
        self.playing = False
        self.anchor = (0.0, 0.0)  # (frame, perf_counter) the clock runs from
        self.time_index = 0
        self._stop = threading.Event()
        self._wake = threading.Event()

        self.server = viser.ViserServer(host=cfg.host, port=cfg.port, label=title, verbose=False)
        self.server.scene.set_up_direction("+y")
        self.home = self._home_camera()
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.up, ic.fov = self.home
        self._build_gui(title)
        self.server.on_client_connect(self._client_connect)
        self.server.on_client_disconnect(self._client_disconnect)
        self.player = threading.Thread(target=self._play_loop, daemon=True, name="talksplat-playback")
        self.player.start()

    # ------------------------------------------------------------------ state
    def _neutral(self) -> dict[str, np.ndarray]:
        from talksplat.rigs.sequence import RigSequence

        return RigSequence.zeros(1, self.rig.num_expression, self.identity).frame(0)

    def _home_camera(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(position, look_at, up, vertical fov in radians) of the training camera, else a frontal one."""
        verts, _ = self.renderer.posed(self.state)
        lo, hi = verts.min(0), verts.max(0)
        center = (lo + hi) / 2
        if self.train_cam is not None:
            c2w, K = self.train_cam.c2w, self.train_cam.K
            pos, fwd, up = c2w[:3, 3], c2w[:3, 2], -c2w[:3, 1]
            dist = float((center - pos) @ fwd)
            fov = 2 * math.atan(0.5 * self.train_cam.height / K[1, 1])
            return pos, pos + fwd * (dist if dist > 1e-3 else 1.0), up, fov
        fov = math.radians(20.0)
        radius = float(np.linalg.norm(hi - lo) / 2)
        dist = 1.1 * radius / math.tan(fov / 2)
        pitch = math.radians(5.0)
        pos = center + dist * np.array([0.0, math.sin(pitch), math.cos(pitch)])
        return pos, center, np.array([0.0, 1.0, 0.0]), fov

    def _set_state(self, updates: dict[str, np.ndarray] | None = None, frame: dict | None = None) -> None:
        """Change the parameters (a whole frame, or some fields) and re-render every browser."""
        with self.lock:
            if frame is not None:
                self.state = {k: np.array(v, np.float32) for k, v in frame.items()}
            for k, v in (updates or {}).items():
                self.state[k] = np.array(v, np.float32)
        self._update_overlays()
        self._request_all()

    def _request(self, client) -> None:
        loop = self.loops.get(client.client_id)
        if loop is None:
            return
        cam = client.camera
        try:
            wxyz, pos, fov, aspect = np.array(cam.wxyz), np.array(cam.position), float(cam.fov), float(cam.aspect)
        except (AssertionError, ZeroDivisionError):  # no camera message from this browser yet
            return
        with self.lock:
            frame = {k: v.copy() for k, v in self.state.items()}
        loop.submit(self._RenderRequest(lambda res: self._viser_camera(wxyz, pos, fov, aspect, res), frame,
                                        self.resolution, self.moving_resolution))

    def _request_all(self) -> None:
        for client in self.server.get_clients().values():
            self._request(client)

    # ------------------------------------------------------------------ clients
    def _client_connect(self, client) -> None:
        def show(frame, final: bool) -> None:
            client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=95 if final else 80)
            self._stats(frame, final)

        loop = self._RenderLoop(self.renderer, show)
        self.loops[client.client_id] = loop
        loop.start()
        client.camera.on_update(lambda cam: self._request(cam.client))
        self._request(client)

    def _client_disconnect(self, client) -> None:
        loop = self.loops.pop(client.client_id, None)
        if loop is not None:
            loop.stop()

    def _stats(self, frame, final: bool) -> None:
        now = time.perf_counter()
        with self.lock:
            self.shown.append(now)
            self.frames_shown += 1
            n = self.frames_shown
            times = [t for t in self.shown if now - t < 2.0]
            if not final and now - self.last_stats_update < 0.25:
                return
            self.last_stats_update = now
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        h, w = frame.image.shape[:2]
        self.gui_stats.content = (
            f"**render** {1e3 * frame.seconds:.0f} ms &nbsp; **fps** {fps:.1f}  \n"
            f"**Gaussians** {frame.num_gaussians:,} &nbsp; **backend** {self.renderer.backend}  \n"
            f"**image** {w}x{h} ({'full' if final else 'moving'}) &nbsp; **frames** {n}")

    # ------------------------------------------------------------------ GUI
    def _build_gui(self, title: str) -> None:
        gui = self.server.gui
        gui.configure_theme(control_width="large", show_share_button=False)
        gui.main_panel.dock_right()  # beside the image, not over it
        with gui.add_folder("View"):
            self.gui_stats = gui.add_markdown("waiting for the first frame ...")
            reset_cam = gui.add_button("Reset camera", hint="Back to the training camera (or a frontal view).")
            res = gui.add_slider("Resolution", min=64, max=1024, step=16, initial_value=min(self.resolution, 1024),
                                 hint="Longer image side (px) when the camera is still.")
            mres = gui.add_slider("Moving res.", min=64, max=1024, step=16,
                                  initial_value=min(self.moving_resolution, 1024),
                                  hint="Longer image side (px) while the camera or the parameters move.")
            wire = gui.add_checkbox("Rig wireframe", initial_value=False)
            centres = gui.add_checkbox("Gaussian centres", initial_value=False)
            shot = gui.add_button("Screenshot", hint=f"Write a PNG at full resolution to {self.cfg.screenshot_dir}.")
            self.gui_shot = gui.add_markdown("")

        @reset_cam.on_click
        def _(event) -> None:
            clients = [event.client] if event.client is not None else list(self.server.get_clients().values())
            for c in clients:
                self._apply_camera(c.camera, *self.home)

        @res.on_update
        def _(_) -> None:
            self.resolution = int(res.value)
            self._request_all()

        @mres.on_update
        def _(_) -> None:
            self.moving_resolution = int(mres.value)
            self._request_all()

        faces = self.rig.faces.cpu().numpy().astype(np.uint32)
        verts, means = self.renderer.posed(self.state)
        self.wire = self.server.scene.add_mesh_simple("/overlay/rig", verts.astype(np.float32), faces,
                                                      wireframe=True, color=(30, 30, 30), visible=False)
        self.centres = self.server.scene.add_point_cloud("/overlay/centres", means.astype(np.float32),
                                                         colors=(230, 40, 40), point_size=0.0012,
                                                         point_shape="circle", visible=False)

        @wire.on_update
        def _(_) -> None:
            self.wire.visible = bool(wire.value)
            self._update_overlays()

        @centres.on_update
        def _(_) -> None:
            self.centres.visible = bool(centres.value)
            self._update_overlays()

        @shot.on_click
        def _(event) -> None:
            self._screenshot(event.client)

        if self.sequences:
            self._build_sequence_gui()
        self._build_rig_gui()

    def _apply_camera(self, cam, position, look_at, up, fov) -> None:
        with self.server.atomic():
            cam.fov = float(fov)
            cam.position = position
            cam.look_at = look_at
            cam.up_direction = up

    def _build_sequence_gui(self) -> None:
        gui = self.server.gui
        with gui.add_folder("Sequence"):
            if len(self.sequences) > 1:
                pick = gui.add_dropdown("Sequence", tuple(s.name for s in self.sequences),
                                        initial_value=self.sequences[0].name)

                @pick.on_update
                def _(_) -> None:
                    self._pause()
                    self.sequence = next(s for s in self.sequences if s.name == pick.value)
                    self.gui_time.max = self.sequence.length - 1
                    self._set_audio()
                    self._seek(0)

            seq = self.sequence
            self.gui_time = gui.add_slider("Frame", min=0, max=max(seq.length - 1, 1), step=1, initial_value=0,
                                           hint="Time step of the sequence (scrub).")
            self.gui_clock = gui.add_markdown("")
            self.gui_play = gui.add_button("Play", icon=None)
            self.gui_loop = gui.add_checkbox("Loop", initial_value=True)
            self.gui_audio = gui.add_html("")
            self.gui_audio_cmd = gui.add_html("")
        self._set_audio()
        self._show_clock()

        @self.gui_time.on_update
        def _(event) -> None:
            if event.client is None:  # set by playback itself
                return
            self._seek(int(self.gui_time.value))

        @self.gui_play.on_click
        def _(_) -> None:
            if self.playing:
                self._pause()
            else:
                self._play()

    def _build_rig_gui(self) -> None:
        gui = self.server.gui
        rad = math.radians
        # (label, field, component(s), sign, range in degrees)
        poses = [("jaw open (°)", "jaw", (0,), 1.0, (-5.0, 35.0)),
                 ("jaw sideways (°)", "jaw", (1,), 1.0, (-10.0, 10.0)),
                 ("head nod (°)", "neck", (0,), 1.0, (-40.0, 40.0)),
                 ("head turn (°)", "neck", (1,), 1.0, (-60.0, 60.0)),
                 ("head tilt (°)", "neck", (2,), 1.0, (-40.0, 40.0)),
                 ("eyes up (°)", "eyes", (0,), -1.0, (-30.0, 30.0)),
                 ("eyes left (°)", "eyes", (1,), 1.0, (-40.0, 40.0))]
        self.pose_sliders = []
        with gui.add_folder("Pose"):
            reset = gui.add_button("Reset pose and expression", hint="Neutral expression, jaw, neck and eyes.")
            for label, field, comp, sign, (lo, hi) in poses:
                s = gui.add_slider(label, min=lo, max=hi, step=0.5, initial_value=0.0)
                self.pose_sliders.append((s, field, comp[0], sign))

                def update(event, s=s, field=field, c=comp[0], sign=sign) -> None:
                    if event.client is None:
                        return
                    with self.lock:
                        v = self.state[field].copy()
                        if field == "eyes":
                            v[:, c] = sign * rad(s.value)
                        else:
                            v[c] = sign * rad(s.value)
                    self._set_state({field: v})

                s.on_update(update)

        self.expr_controls = expression_controls(self.rig, self.cfg.expressions)
        self.expr_sliders = []
        with gui.add_folder("Expression"):
            for ec in self.expr_controls:
                s = gui.add_slider(ec.name, min=ec.lo, max=ec.hi, step=0.01, initial_value=0.0)
                self.expr_sliders.append((s, ec))

                def update(event, s=s, i=ec.index) -> None:
                    if event.client is None:
                        return
                    with self.lock:
                        e = self.state["expression"].copy()
                        e[i] = s.value
                    self._set_state({"expression": e})

                s.on_update(update)

        @reset.on_click
        def _(_) -> None:
            self._pause()
            neutral = self._neutral()
            with self.lock:
                neutral["shape"] = self.state["shape"]
                neutral["translation"] = self.state["translation"]
                neutral["global_rot"] = self.state["global_rot"]
            self._set_state(frame=neutral)
            self._sync_sliders()

        self._sync_sliders()

    def _sync_sliders(self) -> None:
        """Show the current parameters on the sliders (values outside a slider's range are clipped there)."""
        with self.lock:
            st = {k: v.copy() for k, v in self.state.items()}
        with self.server.atomic():
            for s, field, c, sign in self.pose_sliders:
                v = st[field][0, c] if field == "eyes" else st[field][c]
                s.value = float(np.clip(round(sign * math.degrees(v) * 2) / 2, s.min, s.max))
            for s, ec in self.expr_sliders:
                s.value = float(np.clip(round(float(st["expression"][ec.index]), 2), ec.lo, ec.hi))

    # ------------------------------------------------------------------ overlays and screenshots
    def _update_overlays(self) -> None:
        if not (self.wire.visible or self.centres.visible):
            return
        with self.lock:
            frame = {k: v.copy() for k, v in self.state.items()}
        verts, means = self.renderer.posed(frame)
        if self.wire.visible:
            self.wire.vertices = verts.astype(np.float32)
        if self.centres.visible:
            self.centres.points = means.astype(np.float32)

    def _screenshot(self, client) -> Path | None:
        import imageio.v3 as iio

        from talksplat.core.files import atomic_write

        clients = [client] if client is not None else list(self.server.get_clients().values())[:1]
        if not clients:
            return None
        cam = clients[0].camera
        with self.lock:
            frame = {k: v.copy() for k, v in self.state.items()}
        image = self.renderer.render(frame, self._viser_camera(cam.wxyz, cam.position, cam.fov, cam.aspect,
                                                               self.resolution)).image
        out = Path(self.cfg.screenshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"talksplat_view_{time.strftime('%Y%m%d_%H%M%S')}_{int(time.time() * 1e3) % 1000:03d}.png"
        with atomic_write(path) as tmp:
            iio.imwrite(tmp, image, extension=".png")
        self.gui_shot.content = f"wrote `{path}`"
        self.say(f"talksplat view: wrote {path}")
        return path

    # ------------------------------------------------------------------ playback
    def _show_clock(self) -> None:
        seq = self.sequence
        t = self.time_index
        self.gui_clock.content = (f"{t / seq.fps:6.2f} s / {seq.length / seq.fps:.2f} s &nbsp; "
                                  f"frame {t} / {seq.length - 1} &nbsp; {seq.fps:g} fps")

    def _set_audio(self) -> None:
        seq = self.sequence
        uri, why = wav_data_uri(seq.audio) if seq.audio is not None else (None, "no audio for this sequence")
        if uri is None:
            note = why if seq.audio is None else f"{why}: playing without sound"
            self.gui_audio.content = f'<div style="font-size:0.8em;opacity:0.7">{html.escape(note)}</div>'
            return
        self.gui_audio.content = (
            f'<audio id="talksplat-audio" preload="auto" controls style="width:100%;height:2em" src="{uri}"></audio>'
            '<div style="font-size:0.8em;opacity:0.7">Audio plays in this browser. It is re-synced on play, pause, '
            "scrub and loop and otherwise runs on the browser's clock (frames are dropped to keep up; expect "
            "tens of ms of drift). Click the page once if the browser blocks sound.</div>")

    def _audio_command(self, js: str) -> None:
        """Run a line of JavaScript on the page's <audio> element (via an <img onerror> in viser's HTML)."""
        if self.sequence is None or self.sequence.audio is None:
            return
        nonce = time.perf_counter_ns()
        code = ("var a=document.getElementById('talksplat-audio');if(a){" + js + "}")
        self.gui_audio_cmd.content = (f'<img alt="" data-n="{nonce}" src="data:," style="display:none" '
                                      f'onerror="{html.escape(code)}">')

    def _play(self) -> None:
        with self.lock:
            if self.time_index >= self.sequence.length - 1:
                self.time_index = 0
            self.anchor = (float(self.time_index), time.perf_counter())
            self.playing = True
        self.gui_play.label = "Pause"
        self._audio_command(f"a.currentTime={self.time_index / self.sequence.fps:.3f};a.play().catch(function(){{}});")
        self._wake.set()

    def _pause(self) -> None:
        if self.sequence is None:
            return
        with self.lock:
            was = self.playing
            self.playing = False
        self.gui_play.label = "Play"
        if was:
            self._audio_command(f"a.pause();a.currentTime={self.time_index / self.sequence.fps:.3f};")
            self._sync_sliders()

    def _seek(self, t: int) -> None:
        with self.lock:
            self.time_index = min(max(int(t), 0), self.sequence.length - 1)
            self.anchor = (float(self.time_index), time.perf_counter())
            playing = self.playing
        self._set_state(frame=self.sequence.frame(self.time_index))
        self._show_clock()
        sec = self.time_index / self.sequence.fps
        self._audio_command(f"a.currentTime={sec:.3f};" + ("a.play().catch(function(){});" if playing else ""))
        if not playing:
            self._sync_sliders()

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            if not self.playing:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            seq = self.sequence
            with self.lock:
                f0, t0 = self.anchor
                t = int(f0 + (time.perf_counter() - t0) * seq.fps)
                wrapped = ended = False
                if t >= seq.length:
                    if self.gui_loop.value:
                        t, wrapped = 0, True
                        self.anchor = (0.0, time.perf_counter())
                    else:
                        t, ended = seq.length - 1, True
                changed = t != self.time_index
                self.time_index = t
            if changed or wrapped:
                self._set_state(frame=seq.frame(t))
                self.gui_time.value = t
                self._show_clock()
            if wrapped:
                self._audio_command("a.currentTime=0;a.play().catch(function(){});")
            if ended:
                self._pause()
            time.sleep(max(0.002, 0.5 / seq.fps))

    # ------------------------------------------------------------------ lifetime
    def url(self) -> str:
        host = self.server.get_host()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server.get_port()}"

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for loop in list(self.loops.values()):
            loop.stop()
        self.server.stop()


def view_rig(cfg: ViewConfig, avatar_file: Path):
    """The rig to view ``avatar_file`` with: ``--rig``, else the one recorded for the avatar (its dataset's,
    as `talksplat drive` reads it); checked against the avatar's rig checksum."""
    from talksplat.driving.predict import avatar_rig

    return avatar_rig(avatar_file, cfg.rig)


def run_view(cfg: ViewConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """Do the work of `talksplat view`: load everything, serve until Ctrl-C / SIGTERM.  ``on_stage`` gets the
    address once serving (and a line per screenshot); returns ``{"url": ...}`` when stopped."""
    check_options(cfg)
    if cfg.audio is not None and cfg.params is not None:
        raise OptionError("--audio and --params: give one of them")
    avatar_file, fit_dir = resolve_avatar(cfg.avatar)

    from talksplat.avatar.io import load_avatar, read_header
    from talksplat.render.device import pick_device

    from .render_fn import AvatarRenderer

    header = read_header(avatar_file)
    rig = view_rig(cfg, avatar_file)
    avatar = load_avatar(avatar_file, rig=rig)
    sequences: list[Sequence] = []
    if cfg.params is not None:
        sequences.append(load_params_file(cfg.params, rig, cfg.allow_external_paths))
    elif cfg.audio is not None:
        sequences.append(predict_sequence(avatar_file, cfg.audio, cfg.fps, rig))
    training, train_cam = load_training(fit_dir, header, rig)
    if training is not None:
        sequences.append(training)
    identity = training.shape if training is not None else (
        sequences[0].shape if sequences else np.zeros(rig.num_shape, np.float32))

    device = pick_device(cfg.device)
    renderer = AvatarRenderer(avatar, rig, device, cfg.background)
    say = on_stage or (lambda text: None)
    viewer = Viewer(cfg, renderer, rig, sequences, train_cam, identity, title=f"talksplat: {cfg.avatar}",
                    on_stage=say)
    if not is_loopback(cfg.host):  # the port viser bound (the next free one when --port was taken)
        print(f"talksplat view: warning: listening on {cfg.host}: anyone on the network who can reach port "
              f"{viewer.server.get_port()} can view the avatar", file=sys.stderr)
    stop = threading.Event()
    # Ctrl-C and SIGTERM both stop cleanly (SIGINT explicitly: a background job may have it ignored).
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    url = viewer.url()
    say(f"talksplat view: {url} ({avatar.num_gaussians:,} Gaussians, {renderer.backend}); Ctrl-C to stop")
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        viewer.close()
    return {"url": url}
