"""Playback of a sequence in `talksplat view`: the clock (play / pause / seek / loop, a thread that
advances the frame in real time) and the sound, played by the browser.

The clock runs from an anchor (frame, time): the frame shown is the anchor's plus the time since
then times the frame rate, so a slow renderer skips frames instead of slowing the sequence down.
The browser plays the audio on its own clock; it is re-synced on every play, pause, seek and loop.
"""

from __future__ import annotations

import base64
import html
import threading
import time
from pathlib import Path
from typing import Callable

#: Longest audio embedded in the page (a data: URI), bytes.
MAX_AUDIO_BYTES = 24 * 1024 * 1024


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


def clock_text(t: int, length: int, fps: float) -> str:
    """The time line under the frame slider: seconds, frame and frame rate."""
    return (f"{t / fps:6.2f} s / {length / fps:.2f} s &nbsp; "
            f"frame {t} / {length - 1} &nbsp; {fps:g} fps")


class BrowserAudio:
    """The sequence's sound in the browser: an <audio> element (``player``, a viser HTML handle) and the
    JavaScript commands that keep it in step (``commands``, another HTML handle: an <img onerror>)."""

    def __init__(self, player, commands):
        self.player = player
        self.commands = commands
        self.audio: Path | None = None

    def show(self, audio: Path | None) -> None:
        """Put ``audio`` (a WAV file, or None) in the page, or a note saying why there is no sound."""
        self.audio = audio
        uri, why = wav_data_uri(audio) if audio is not None else (None, "no audio for this sequence")
        if uri is None:
            note = why if audio is None else f"{why}: playing without sound"
            self.player.content = f'<div style="font-size:0.8em;opacity:0.7">{html.escape(note)}</div>'
            return
        self.player.content = (
            f'<audio id="talksplat-audio" preload="auto" controls style="width:100%;height:2em" src="{uri}"></audio>'
            '<div style="font-size:0.8em;opacity:0.7">Audio plays in this browser. It is re-synced on play, pause, '
            "scrub and loop and otherwise runs on the browser's clock (frames are dropped to keep up; expect "
            "tens of ms of drift). Click the page once if the browser blocks sound.</div>")

    def command(self, js: str) -> None:
        """Run a line of JavaScript on the page's <audio> element (via an <img onerror> in viser's HTML)."""
        if self.audio is None:
            return
        nonce = time.perf_counter_ns()
        code = ("var a=document.getElementById('talksplat-audio');if(a){" + js + "}")
        self.commands.content = (f'<img alt="" data-n="{nonce}" src="data:," style="display:none" '
                                 f'onerror="{html.escape(code)}">')

    def play(self, seconds: float) -> None:
        self.command(f"a.currentTime={seconds:.3f};a.play().catch(function(){{}});")

    def pause(self, seconds: float) -> None:
        self.command(f"a.pause();a.currentTime={seconds:.3f};")

    def seek(self, seconds: float, playing: bool) -> None:
        self.command(f"a.currentTime={seconds:.3f};" + ("a.play().catch(function(){});" if playing else ""))

    def restart(self) -> None:
        self.command("a.currentTime=0;a.play().catch(function(){});")


class Clock:
    """Which frame of the sequence shows, and a thread that advances it in real time while playing.

    ``sequence()`` gives the sequence playing (anything with ``length`` and ``fps``); ``looping()`` whether
    to wrap at the end.  The thread calls ``on_frame(t)`` when the frame changes, ``on_wrap()`` when the
    sequence starts again and ``on_end()`` when it stops at the last frame.  ``lock`` (shared with the
    caller's state) guards ``playing``, ``anchor`` and ``time_index``."""

    def __init__(self, lock, sequence: Callable, looping: Callable[[], bool], on_frame: Callable[[int], None],
                 on_wrap: Callable[[], None], on_end: Callable[[], None]):
        self.lock = lock
        self.sequence, self.looping = sequence, looping
        self.on_frame, self.on_wrap, self.on_end = on_frame, on_wrap, on_end
        self.playing = False
        self.anchor = (0.0, 0.0)  # (frame, perf_counter) the clock runs from
        self.time_index = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="talksplat-playback")

    @property
    def seconds(self) -> float:
        """Time of the frame shown, seconds from the start of the sequence."""
        return self.time_index / self.sequence().fps

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def play(self) -> None:
        """Run from the frame shown (from the start when at the end)."""
        with self.lock:
            if self.time_index >= self.sequence().length - 1:
                self.time_index = 0
            self.anchor = (float(self.time_index), time.perf_counter())
            self.playing = True
        self._wake.set()

    def pause(self) -> bool:
        """Stop at the frame shown; whether it was playing."""
        with self.lock:
            was = self.playing
            self.playing = False
        return was

    def seek(self, t: int) -> bool:
        """Show frame ``t`` (clamped to the sequence) and run on from there if playing; whether playing."""
        with self.lock:
            self.time_index = min(max(int(t), 0), self.sequence().length - 1)
            self.anchor = (float(self.time_index), time.perf_counter())
            return self.playing

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.playing:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            seq = self.sequence()
            with self.lock:
                f0, t0 = self.anchor
                t = int(f0 + (time.perf_counter() - t0) * seq.fps)
                wrapped = ended = False
                if t >= seq.length:
                    if self.looping():
                        t, wrapped = 0, True
                        self.anchor = (0.0, time.perf_counter())
                    else:
                        t, ended = seq.length - 1, True
                changed = t != self.time_index
                self.time_index = t
            if changed or wrapped:
                self.on_frame(t)
            if wrapped:
                self.on_wrap()
            if ended:
                self.on_end()
            time.sleep(max(0.002, 0.5 / seq.fps))
