"""The viewer's GUI: the viser widgets of its panel (view, sequence, pose and expression controls) and
the scene overlays (rig wireframe, Gaussian centres).

:class:`ViewerGui` only builds widgets and forwards their events to the :class:`~talksplat.viewer.server.Viewer`
that owns the state; it holds no state of its own beyond the widgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .playback import BrowserAudio, clock_text


@dataclass
class ExpressionControl:
    index: int
    name: str
    lo: float
    hi: float


#: Slider range of expression components without a range in the rig's metadata.
UNBOUNDED_SLIDER_RANGE = (-3.0, 3.0)

#: The pose sliders: (label, field, component, sign, range in degrees).
POSE_SLIDERS = [("jaw open (°)", "jaw", 0, 1.0, (-5.0, 35.0)),
                ("jaw sideways (°)", "jaw", 1, 1.0, (-10.0, 10.0)),
                ("head nod (°)", "neck", 0, 1.0, (-40.0, 40.0)),
                ("head turn (°)", "neck", 1, 1.0, (-60.0, 60.0)),
                ("head tilt (°)", "neck", 2, 1.0, (-40.0, 40.0)),
                ("eyes up (°)", "eyes", 0, -1.0, (-30.0, 30.0)),
                ("eyes left (°)", "eyes", 1, 1.0, (-40.0, 40.0))]


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


class ViewerGui:
    """The widgets of ``viewer`` (a :class:`~talksplat.viewer.server.Viewer` whose ``server`` is running)."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.server = viewer.server
        self._build_view_panel()
        if viewer.sequences:
            self._build_sequence_panel()
        self._build_rig_panel()

    # ------------------------------------------------------------------ panels
    def _build_view_panel(self) -> None:
        v, gui = self.viewer, self.server.gui
        gui.configure_theme(control_width="large", show_share_button=False)
        gui.main_panel.dock_right()  # beside the image, not over it
        with gui.add_folder("View"):
            self.stats = gui.add_markdown("waiting for the first frame ...")
            reset_cam = gui.add_button("Reset camera", hint="Back to the training camera (or a frontal view).")
            res = gui.add_slider("Resolution", min=64, max=1024, step=16, initial_value=min(v.resolution, 1024),
                                 hint="Longer image side (px) when the camera is still.")
            mres = gui.add_slider("Moving res.", min=64, max=1024, step=16,
                                  initial_value=min(v.moving_resolution, 1024),
                                  hint="Longer image side (px) while the camera or the parameters move.")
            wire = gui.add_checkbox("Rig wireframe", initial_value=False)
            centres = gui.add_checkbox("Gaussian centres", initial_value=False)
            shot = gui.add_button("Screenshot", hint=f"Write a PNG at full resolution to {v.cfg.screenshot_dir}.")
            self.shot_note = gui.add_markdown("")

        @reset_cam.on_click
        def _(event) -> None:
            v.reset_camera(event.client)

        @res.on_update
        def _(_) -> None:
            v.set_resolution(int(res.value), v.moving_resolution)

        @mres.on_update
        def _(_) -> None:
            v.set_resolution(v.resolution, int(mres.value))

        faces = v.rig.faces.cpu().numpy().astype(np.uint32)
        verts, means = v.renderer.posed(v.state)
        self.wire = self.server.scene.add_mesh_simple("/overlay/rig", verts.astype(np.float32), faces,
                                                      wireframe=True, color=(30, 30, 30), visible=False)
        self.centres = self.server.scene.add_point_cloud("/overlay/centres", means.astype(np.float32),
                                                         colors=(230, 40, 40), point_size=0.0012,
                                                         point_shape="circle", visible=False)

        @wire.on_update
        def _(_) -> None:
            self.wire.visible = bool(wire.value)
            v.update_overlays()

        @centres.on_update
        def _(_) -> None:
            self.centres.visible = bool(centres.value)
            v.update_overlays()

        @shot.on_click
        def _(event) -> None:
            v.screenshot(event.client)

    def _build_sequence_panel(self) -> None:
        v, gui = self.viewer, self.server.gui
        with gui.add_folder("Sequence"):
            if len(v.sequences) > 1:
                pick = gui.add_dropdown("Sequence", tuple(s.name for s in v.sequences),
                                        initial_value=v.sequences[0].name)

                @pick.on_update
                def _(_) -> None:
                    v.select_sequence(pick.value)

            seq = v.sequence
            self.time = gui.add_slider("Frame", min=0, max=max(seq.length - 1, 1), step=1, initial_value=0,
                                       hint="Time step of the sequence (scrub).")
            self.clock = gui.add_markdown("")
            self.play = gui.add_button("Play", icon=None)
            self.loop = gui.add_checkbox("Loop", initial_value=True)
            self.audio = BrowserAudio(gui.add_html(""), gui.add_html(""))
        self.audio.show(seq.audio)
        self.show_clock(seq, 0)

        @self.time.on_update
        def _(event) -> None:
            if event.client is None:  # set by playback itself
                return
            v._seek(int(self.time.value))

        @self.play.on_click
        def _(_) -> None:
            if v.playing:
                v._pause()
            else:
                v._play()

    def _build_rig_panel(self) -> None:
        v, gui = self.viewer, self.server.gui
        self.pose_sliders = []
        with gui.add_folder("Pose"):
            reset = gui.add_button("Reset pose and expression", hint="Neutral expression, jaw, neck and eyes.")
            for label, field, c, sign, (lo, hi) in POSE_SLIDERS:
                s = gui.add_slider(label, min=lo, max=hi, step=0.5, initial_value=0.0)
                self.pose_sliders.append((s, field, c, sign))

                def update(event, s=s, field=field, c=c, sign=sign) -> None:
                    if event.client is None:
                        return
                    with v.lock:
                        x = v.state[field].copy()
                        if field == "eyes":
                            x[:, c] = sign * math.radians(s.value)
                        else:
                            x[c] = sign * math.radians(s.value)
                    v._set_state({field: x})

                s.on_update(update)

        self.expr_controls = expression_controls(v.rig, v.cfg.expressions)
        self.expr_sliders = []
        with gui.add_folder("Expression"):
            for ec in self.expr_controls:
                s = gui.add_slider(ec.name, min=ec.lo, max=ec.hi, step=0.01, initial_value=0.0)
                self.expr_sliders.append((s, ec))

                def update(event, s=s, i=ec.index) -> None:
                    if event.client is None:
                        return
                    with v.lock:
                        e = v.state["expression"].copy()
                        e[i] = s.value
                    v._set_state({"expression": e})

                s.on_update(update)

        @reset.on_click
        def _(_) -> None:
            v.reset_pose()

        self.sync_sliders()

    # ------------------------------------------------------------------ showing the state
    def sync_sliders(self) -> None:
        """Show the current parameters on the sliders (values outside a slider's range are clipped there)."""
        v = self.viewer
        with v.lock:
            st = {k: x.copy() for k, x in v.state.items()}
        with self.server.atomic():
            for s, field, c, sign in self.pose_sliders:
                x = st[field][0, c] if field == "eyes" else st[field][c]
                s.value = float(np.clip(round(sign * math.degrees(x) * 2) / 2, s.min, s.max))
            for s, ec in self.expr_sliders:
                s.value = float(np.clip(round(float(st["expression"][ec.index]), 2), ec.lo, ec.hi))

    def show_clock(self, seq, t: int) -> None:
        self.clock.content = clock_text(t, seq.length, seq.fps)
