"""`talksplat view`: an interactive web viewer (viser) for avatars and driven sequences.

The avatar is rendered on this machine (CUDA with gsplat, else our CPU rasterizer) and streamed
to any browser as images (nerfview's pattern).  This module wires the parts together:

- :mod:`~talksplat.viewer.config`: the options (torch-free, read by the CLI);
- :mod:`~talksplat.viewer.inputs`: the avatar (through ``open_fit``) and the sequences to play;
- :mod:`~talksplat.viewer.renderer`: browser camera -> our camera -> a rendered frame, one render thread
  per browser;
- :mod:`~talksplat.viewer.playback`: the sequence clock and the sound in the browser;
- :mod:`~talksplat.viewer.gui`: the viser widgets (view, sequence, pose and expression controls, overlays).

:class:`Viewer` owns the state (the rig parameters shown, the resolutions, one render loop per browser)
and what the widgets do to it.  Heavy imports (torch, viser) happen inside functions.
"""

from __future__ import annotations

import collections
import ipaddress
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from talksplat.core.checks import check_options
from talksplat.core.errors import OptionError

from .config import ViewConfig
from .inputs import Sequence, TrainingCamera


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Viewer:
    """The viser server, the state it shows and playback; one :class:`RenderLoop` per connected browser."""

    def __init__(self, cfg: ViewConfig, renderer, rig, sequences: list[Sequence], train_cam: TrainingCamera | None,
                 identity: np.ndarray, title: str, on_stage: Callable[[str], None] | None = None):
        import viser

        from .gui import ViewerGui
        from .playback import Clock
        from .renderer import RenderLoop, RenderRequest, viser_camera

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
        self.clock = Clock(self.lock, lambda: self.sequence, lambda: self.gui.loop.value, self._show_frame,
                           lambda: self.gui.audio.restart(), self._pause)

        self.server = viser.ViserServer(host=cfg.host, port=cfg.port, label=title, verbose=False)
        self.server.scene.set_up_direction("+y")
        self.home = self._home_camera()
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.up, ic.fov = self.home
        self.gui = ViewerGui(self)
        self.server.on_client_connect(self._client_connect)
        self.server.on_client_disconnect(self._client_disconnect)
        self.clock.start()

    # ------------------------------------------------------------------ what the GUI shows
    @property
    def playing(self) -> bool:
        return self.clock.playing

    @property
    def time_index(self) -> int:
        return self.clock.time_index

    @property
    def gui_time(self):
        return self.gui.time

    @property
    def wire(self):
        return self.gui.wire

    @property
    def centres(self):
        return self.gui.centres

    @property
    def expr_controls(self):
        return self.gui.expr_controls

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
        self.update_overlays()
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
        self.gui.stats.content = (
            f"**render** {1e3 * frame.seconds:.0f} ms &nbsp; **fps** {fps:.1f}  \n"
            f"**Gaussians** {frame.num_gaussians:,} &nbsp; **backend** {self.renderer.backend}  \n"
            f"**image** {w}x{h} ({'full' if final else 'moving'}) &nbsp; **frames** {n}")


    # ------------------------------------------------------------------ what the widgets do
    def reset_camera(self, client) -> None:
        """Back to the home camera (the training camera, else a frontal one): ``client``'s, or every browser's."""
        clients = [client] if client is not None else list(self.server.get_clients().values())
        for c in clients:
            self._apply_camera(c.camera, *self.home)

    def _apply_camera(self, cam, position, look_at, up, fov) -> None:
        with self.server.atomic():
            cam.fov = float(fov)
            cam.position = position
            cam.look_at = look_at
            cam.up_direction = up

    def set_resolution(self, resolution: int, moving_resolution: int) -> None:
        self.resolution, self.moving_resolution = int(resolution), int(moving_resolution)
        self._request_all()

    def reset_pose(self) -> None:
        """Neutral expression, jaw, neck and eyes (identity, head rotation and translation kept)."""
        self._pause()
        neutral = self._neutral()
        with self.lock:
            neutral["shape"] = self.state["shape"]
            neutral["translation"] = self.state["translation"]
            neutral["global_rot"] = self.state["global_rot"]
        self._set_state(frame=neutral)
        self.gui.sync_sliders()

    def select_sequence(self, name: str) -> None:
        self._pause()
        self.sequence = next(s for s in self.sequences if s.name == name)
        self.gui.time.max = self.sequence.length - 1
        self.gui.audio.show(self.sequence.audio)
        self._seek(0)

    # ------------------------------------------------------------------ overlays and screenshots
    def update_overlays(self) -> None:
        if not (self.wire.visible or self.centres.visible):
            return
        with self.lock:
            frame = {k: v.copy() for k, v in self.state.items()}
        verts, means = self.renderer.posed(frame)
        if self.wire.visible:
            self.wire.vertices = verts.astype(np.float32)
        if self.centres.visible:
            self.centres.points = means.astype(np.float32)

    def screenshot(self, client) -> Path | None:
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
        self.gui.shot_note.content = f"wrote `{path}`"
        self.say(f"talksplat view: wrote {path}")
        return path


    # ------------------------------------------------------------------ playback
    def _show_frame(self, t: int) -> None:
        """The clock moved to frame ``t``: pose it, move the slider, show the time."""
        self._set_state(frame=self.sequence.frame(t))
        self.gui.time.value = t
        self.gui.show_clock(self.sequence, t)

    def _play(self) -> None:
        self.clock.play()
        self.gui.play.label = "Pause"
        self.gui.audio.play(self.clock.seconds)

    def _pause(self) -> None:
        if self.sequence is None:
            return
        was = self.clock.pause()
        self.gui.play.label = "Play"
        if was:
            self.gui.audio.pause(self.clock.seconds)
            self.gui.sync_sliders()

    def _seek(self, t: int) -> None:
        playing = self.clock.seek(t)
        t = self.clock.time_index
        self._set_state(frame=self.sequence.frame(t))
        self.gui.show_clock(self.sequence, t)
        self.gui.audio.seek(self.clock.seconds, playing)
        if not playing:
            self.gui.sync_sliders()

    # ------------------------------------------------------------------ lifetime
    def url(self) -> str:
        host = self.server.get_host()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server.get_port()}"

    def close(self) -> None:
        self.clock.stop()
        for loop in list(self.loops.values()):
            loop.stop()
        self.server.stop()


def run_view(cfg: ViewConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """Do the work of `talksplat view`: load everything, serve until Ctrl-C / SIGTERM.  ``on_stage`` gets the
    address once serving (and a line per screenshot); returns ``{"url": ...}`` when stopped."""
    check_options(cfg)
    if cfg.audio is not None and cfg.params is not None:
        raise OptionError("--audio and --params: give one of them")

    from talksplat.render.device import pick_device

    from .inputs import load_params_file, load_training, open_avatar, predict_sequence, view_rig
    from .renderer import AvatarRenderer

    fit = open_avatar(cfg.avatar)
    rig = view_rig(cfg, fit.avatar_file)
    avatar = fit.load_avatar(rig)
    sequences: list[Sequence] = []
    if cfg.params is not None:
        sequences.append(load_params_file(cfg.params, rig, cfg.allow_external_paths))
    elif cfg.audio is not None:
        sequences.append(predict_sequence(fit, cfg.audio, cfg.fps, rig))
    training, train_cam = load_training(fit, rig)
    if training is not None:
        sequences.append(training)
    identity = training.shape if training is not None else (
        sequences[0].shape if sequences else np.zeros(rig.num_shape, np.float32))

    plate = None
    if cfg.plate and fit.has_source_frame:  # the subject's own frame: home at the source camera, the plate behind
        from .inputs import TrainingCamera

        sf, image = fit.source_frame()
        train_cam = TrainingCamera(sf.c2w, sf.K, sf.width, sf.height)
        plate = (image, sf.K, sf.viewmat)
    device = pick_device(cfg.device)
    renderer = AvatarRenderer(avatar, rig, device, cfg.background, plate=plate)
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
