"""Speech input: any file ffmpeg reads -> 16 kHz mono float32, loudness-normalised.

    wave = load_audio("speech.m4a")          # [N] float32 in [-1, 1], 16 kHz, normalised
    wave = synthesize_speech("Hello there")  # espeak-ng, same format

Decoding goes through the ffmpeg binary bundled with imageio-ffmpeg (wav, mp3, m4a, flac, ogg, or
the audio track of a video).  Silence is valid input; an unreadable file, a file without an audio
track or one with no samples is an :class:`AudioError` naming the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave as wavmod
from pathlib import Path

import numpy as np

from talksplat.core.errors import InputError
from talksplat.core.ffmpeg import SAMPLE_RATE, ffmpeg_exe
from talksplat.core.process import child_kwargs

#: Target loudness of speech after normalisation (RMS of the active frames, dBFS).
TARGET_DBFS = -23.0
#: Never amplify by more than this (keeps near-silent input near silent).
MAX_GAIN_DB = 30.0


class AudioError(InputError):
    """An audio file that is missing, unreadable, without an audio track, or empty."""


def decode_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of ``path`` to [N] float32 mono at ``sample_rate`` (no normalisation)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    # ffmpeg writes raw float32 to a temporary file that numpy maps in one piece: an hour of audio
    # costs its 230 MB once (a pipe would hold it two or three times while being joined).
    fd, raw = tempfile.mkstemp(prefix=f"talksplat-audio-{os.getpid()}-", suffix=".f32")
    os.close(fd)
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(path),
                               "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", raw],
                              capture_output=True, **child_kwargs())
        if proc.returncode != 0:
            text = proc.stderr.decode(errors="replace")
            err = text.strip().splitlines()
            reason = err[-1] if err else f"ffmpeg exit status {proc.returncode}"
            if "matches no streams" in text:
                reason = "no audio track"
            raise AudioError(f"{path}: cannot read audio ({reason})")
        samples = np.fromfile(raw, dtype="<f4")
    finally:
        os.unlink(raw)
    if samples.size == 0:
        raise AudioError(f"{path}: the audio track is empty (no samples)")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: the audio holds non-finite samples (NaN or Inf)")
    return samples


def frame_rms(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, hop_s: float = 0.01,
              win_s: float = 0.03, block_samples: int = 1 << 20) -> np.ndarray:
    """[N] samples -> [ceil(N / hop)] RMS per frame (frame i centred at ``i * hop_s`` seconds).

    Computed in blocks of about ``block_samples`` samples, so memory stays small for hours of audio."""
    hop, win = int(round(hop_s * sample_rate)), int(round(win_s * sample_rate))
    n = int(np.ceil(len(wave) / hop))
    block = max(1, block_samples // hop)
    out = np.empty(n, np.float32)
    for f0 in range(0, n, block):
        f1 = min(n, f0 + block)
        s0 = f0 * hop - win // 2
        lo, hi = max(s0, 0), min(len(wave), (f1 - 1) * hop - win // 2 + win)
        seg = np.zeros(max(0, (f1 - 1) * hop + win - (f0 * hop)), np.float64)
        seg[lo - s0:hi - s0] = wave[lo:hi]
        csum = np.concatenate([[0.0], np.cumsum(seg ** 2)])
        starts = np.arange(f1 - f0) * hop
        out[f0:f1] = np.sqrt(np.maximum(csum[starts + win] - csum[starts], 0.0) / win)
    return out


def speech_level_db(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Loudness of the active speech in dBFS: RMS over the frames within 30 dB of the loudest 5 %."""
    rms = frame_rms(wave, sample_rate)
    db = 20 * np.log10(np.maximum(rms, 1e-7))
    ref = np.percentile(db, 95)
    active = db > ref - 30.0
    return float(10 * np.log10(np.mean(10 ** (db[active] / 10)) + 1e-20))


def normalize_loudness(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale so active speech sits at ``target_dbfs``; gain capped at ``MAX_GAIN_DB``; peaks kept below 1."""
    level = speech_level_db(wave, sample_rate)
    gain_db = min(target_dbfs - level, MAX_GAIN_DB)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    gain = 10 ** (gain_db / 20)
    if peak * gain > 0.999:
        gain = 0.999 / peak
    return np.multiply(wave, np.float32(gain), dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode and loudness-normalise: [N] float32 mono at ``sample_rate``."""
    return normalize_loudness(decode_audio(path, sample_rate), sample_rate)


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write [N] float samples in [-1, 1] as 16-bit PCM mono WAV."""
    path = Path(path)
    pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wavmod.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def espeak_exe() -> str | None:
    """Path of espeak-ng (or espeak), or None."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def synthesize_speech(text: str, out_wav: str | os.PathLike | None = None, voice: str = "en-us",
                      rate_wpm: int = 160, pitch: int = 50) -> Path:
    """Speak ``text`` with the local espeak-ng into a WAV file; returns its path.

    Raises :class:`AudioError` when no TTS is installed (naming the package) or the text is empty.
    """
    if not text.strip():
        raise AudioError("--text: the text is empty")
    exe = espeak_exe()
    if exe is None:
        raise AudioError("--text needs a local text-to-speech engine: install espeak-ng "
                         "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)")
    if out_wav is None:
        fd, out_wav = tempfile.mkstemp(prefix=f"talksplat-tts-{os.getpid()}-", suffix=".wav")
        os.close(fd)
    proc = subprocess.run([exe, "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-w", str(out_wav), "--", text],
                          capture_output=True, **child_kwargs())
    if proc.returncode != 0 or not Path(out_wav).is_file() or Path(out_wav).stat().st_size <= 44:
        raise AudioError(f"espeak-ng failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return Path(out_wav)
