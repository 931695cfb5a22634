"""The ffmpeg binary (shipped inside the ``imageio-ffmpeg`` wheel: nothing to install or download)."""

from __future__ import annotations

import re
import subprocess

#: Hz: every audio stream talksplat decodes, writes (dataset/audio.wav, talk.wav) or feeds a model is mono at
#: this rate.
SAMPLE_RATE = 16_000


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


#: The ``comment`` tag talksplat writes into every MP4 and WAV it makes, so ``--overwrite`` can tell
#: its own outputs from the user's files.
OWN_TAG = "written by talksplat"


def has_own_tag(path) -> bool:
    """Whether the media file at ``path`` carries :data:`OWN_TAG` in its metadata (read by ffmpeg)."""
    from .process import child_kwargs

    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                          text=True, errors="replace", **child_kwargs())
    return re.search(r"^\s*comment\s*:\s*" + re.escape(OWN_TAG) + r"\s*$", proc.stderr, re.M) is not None


#: ffmpeg's context prefixes, e.g. ``[in#0/mov,mp4,m4a,3gp,3g2,mj2 @ 0x55e0...] ``, and with
#: ``-loglevel level+...`` the level, e.g. ``[error] ``.
LOG_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)*?(?:\[(?P<level>trace|debug|verbose|info|warning|error|fatal|panic)\]\s*)?"
                       r"(?P<msg>(?!\[).*)$")


def log_lines(text: str) -> list[tuple[str | None, str]]:
    """ffmpeg's stderr as (level or None, message without the ``[context @ 0x..]`` prefixes) pairs."""
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line.strip())
        msg = (m.group("msg") if m else line).strip().rstrip(".").strip()
        if msg:
            out.append((m.group("level") if m else None, msg))
    return out


def last_error_line(text: str) -> str:
    """The last error (or, failing that, any) message on ffmpeg's stderr, without its prefixes."""
    lines = log_lines(text)
    errors = [msg for level, msg in lines if level in ("error", "fatal", "panic")]
    return errors[-1] if errors else lines[-1][1] if lines else "unknown error"
