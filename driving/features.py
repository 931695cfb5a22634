"""Audio features behind one encoder interface.

An encoder turns a 16 kHz waveform into a feature sequence at its own frame rate:

    enc = make_encoder("logmel")                 # built in; or "hf:/path/to/local/wav2vec2"
    feats = enc.encode(torch.from_numpy(wave))   # [T_f, enc.dim] at enc.rate frames per second

* :class:`LogMelEncoder` (default): 80 log-mel bands from ``torch.stft`` (25 ms windows, 10 ms hop),
  each band normalised by its mean over the active speech of the preceding 3 s and by the spread of
  that speech, so the features describe phonetic content (spectral shape) rather than one voice or
  microphone, plus one absolute loudness channel (the input is loudness-normalised, so silence stays
  recognisable).  The normalisation looks back only (``norm="trailing"``, the default: a frame's
  features depend on the audio up to 12.5 ms after it, as a live mode needs); predictor files from
  before it use ``norm="centred"`` (a ±1.5 s window and the utterance's spread).  ``warp`` rescales
  the frequency axis (vocal-tract-length perturbation) for training augmentation.
* :class:`PhoneticEncoder` (``"phonetic"``): the log-mel features plus 30 channels of visemes (what is
  said, not who says it: :mod:`talksplat.driving.phonetic`), recognised offline by pocketsphinx or,
  for text, taken from espeak-ng's own phoneme timings.
* :class:`HFEncoder`: a wav2vec2 / HuBERT model from a local Hugging Face directory (``transformers``,
  the optional ``[hf]`` extra; loaded with ``local_files_only``: nothing is downloaded), its last
  hidden state at 50 Hz plus the same loudness channel.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from talksplat.core.errors import InputError
from .audio import SAMPLE_RATE, TARGET_DBFS, frame_rms


class EncoderError(InputError):
    """An encoder spec or a local model directory that cannot be used."""


def _hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular HTK-mel filters (unit peak)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    lo, ce, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lo) / (ce - lo)
    down = (hi - freqs[None]) / (hi - ce)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def loudness_channel(wave: torch.Tensor, hop: int, frames: int) -> torch.Tensor:
    """[frames] energy of 2 * ``hop`` sample windows centred at ``i * hop``, in dB relative to the
    normalisation target, divided by 20 (about [-3, 1]; frames past the end count as silence)."""
    rms = frame_rms(wave.detach().float().cpu().numpy(), SAMPLE_RATE, hop_s=hop / SAMPLE_RATE,
                    win_s=2 * hop / SAMPLE_RATE)
    rms = np.pad(rms, (0, max(0, frames - len(rms))))[:frames]
    db = 10 * np.log10(rms.astype(np.float64) ** 2 + 1e-10)
    return torch.from_numpy(np.maximum((db - TARGET_DBFS) / 20.0, -3.0).astype(np.float32))


def sliding_mean(x: torch.Tensor, weight: torch.Tensor, before: int, after: int | None = None) -> torch.Tensor:
    """Weighted mean of ``x`` [T, D] over the frames [t - ``before``, t + ``after``] (``after`` defaults to
    ``before``: a centred window); ``weight`` [T] >= 0."""
    T = x.shape[0]
    after = before if after is None else after
    cs = torch.cat([x.new_zeros(1, x.shape[1]), torch.cumsum(x * weight[:, None], 0)])
    cw = torch.cat([x.new_zeros(1), torch.cumsum(weight, 0)])
    i = torch.arange(T, device=x.device)
    lo, hi = (i - before).clamp(min=0), (i + after + 1).clamp(max=T)
    return (cs[hi] - cs[lo]) / (cw[hi] - cw[lo]).clamp(min=1e-6)[:, None]


#: Smallest spread (natural-log units) the trailing normalisation divides by: the first frames of speech
#: have few frames of statistics behind them.
MIN_SPREAD = 0.5


class LogMelEncoder:
    """Normalised log-mel features at 100 frames per second: [T_f, 81] (80 bands + loudness)."""

    spec = "logmel"
    rate = 100.0

    def __init__(self, n_mels: int = 80, n_fft: int = 512, win: int = 400, hop: int = 160,
                 fmin: float = 60.0, fmax: float = 7600.0, norm_window_s: float = 3.0,
                 norm: Literal["trailing", "centred"] = "trailing"):
        if norm not in ("trailing", "centred"):
            raise EncoderError(f"unknown feature normalisation '{norm}': use 'trailing' or 'centred'")
        self.n_mels, self.n_fft, self.win, self.hop, self.norm = n_mels, n_fft, win, hop, norm
        self.fb = mel_filterbank(n_fft, n_mels, SAMPLE_RATE, fmin, fmax)
        self.window = torch.hann_window(win)
        self.half = int(norm_window_s * self.rate / 2)
        self.dim = n_mels + 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    def encode(self, wave: torch.Tensor, warp: float = 1.0) -> torch.Tensor:
        """[N] float waveform at 16 kHz -> [N // 160 + 1, 81].  ``warp`` > 1 moves formants up."""
        wave = wave.float().cpu()
        if wave.numel() < self.win:
            wave = torch.nn.functional.pad(wave, (0, self.win - wave.numel()))
        spec = torch.stft(wave, self.n_fft, self.hop, self.win, self.window, center=True,
                          return_complex=True).abs().pow(2)  # [F, T]
        if warp != 1.0:  # power at f moves to warp * f
            F = spec.shape[0]
            src = torch.arange(F, dtype=torch.float32) / warp
            i0 = src.floor().long().clamp(max=F - 1)
            i1 = (i0 + 1).clamp(max=F - 1)
            a = (src - i0.float()).clamp(0, 1)[:, None]
            spec = spec[i0] * (1 - a) + spec[i1] * a
        mel = torch.log(self.fb @ spec + 1e-8).T  # [T, n_mels]
        T = mel.shape[0]
        loud = loudness_channel(wave, self.hop, T)
        if self.norm == "trailing":
            mel = self._normalise_trailing(mel, loud)
        else:
            active = (loud > loud.max() - 1.5).float()  # within 30 dB of the loudest frame
            if active.sum() < 1:
                active = torch.ones_like(active)
            mel = mel - sliding_mean(mel, active, self.half)
            spread = (mel[active > 0].std() if active.sum() > 1 else mel.std()).clamp(min=1e-3)
            mel = mel / spread
        return torch.cat([mel.clamp(-6, 6), loud[:, None]], 1)

    def _normalise_trailing(self, mel: torch.Tensor, loud: torch.Tensor) -> torch.Tensor:
        """[T, n_mels] log-mel -> normalised by the statistics of the active speech (within 30 dB of the
        normalisation target: the input is loudness-normalised) in the preceding 2 * ``half`` frames and
        the frame itself; quiet frames weigh 1/1000 of a speech frame, so before the first speech the
        statistics are the quiet input's own.  A frame never sees the audio after its own STFT window."""
        weight = (loud > -1.5).float() + 1e-3
        before = 2 * self.half
        mean = sliding_mean(mel, weight, before, 0)
        # the mean square deviation from that mean, over bands and the same frames
        sq = sliding_mean((mel - mean).pow(2).mean(1, keepdim=True), weight, before, 0)[:, 0]
        spread = sq.sqrt().clamp(min=MIN_SPREAD)
        return (mel - mean) / spread[:, None]


class PhoneticEncoder(LogMelEncoder):
    """Log-mel + loudness + viseme one-hots at 100 frames per second: [T_f, 81 + 30].

    ``encode(wave, visemes=track)`` takes a precomputed viseme track ([T_f', 30], from
    :meth:`visemes` on a longer waveform, or from text); without it the speech is recognised."""

    spec = "phonetic"

    def __init__(self, norm: Literal["trailing", "centred"] = "trailing"):
        from .phonetic import VISEMES

        super().__init__(norm=norm)
        self.num_visemes = 2 * len(VISEMES)
        self.dim = self.n_mels + 1 + self.num_visemes

    def visemes(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[N] 16 kHz waveform -> [N // 160 + 1, 30] recognised visemes (frame ``i`` at ``i`` * 10 ms)."""
        from .phonetic import phonetic_track

        wave = np.asarray(wave.detach().cpu().numpy() if torch.is_tensor(wave) else wave, np.float32)
        return torch.from_numpy(phonetic_track(wave, self.num_frames(len(wave)), self.rate))

    def encode(self, wave: torch.Tensor, warp: float = 1.0, visemes: torch.Tensor | None = None) -> torch.Tensor:
        """[N] 16 kHz waveform -> [N // 160 + 1, 111]; ``visemes`` [T', 30] (cropped or padded with
        silence to the frame count) or None to recognise them from ``wave``."""
        feats = super().encode(wave, warp)
        v = self.visemes(wave) if visemes is None else torch.as_tensor(visemes, dtype=torch.float32)
        v = fit_rows(v, feats.shape[0])
        return torch.cat([feats, v], 1)


def fit_rows(v: torch.Tensor, rows: int) -> torch.Tensor:
    """Viseme rows ``v`` [T, D] cropped, or padded with silence
    (:func:`~talksplat.driving.phonetic.silent_visemes`), to [rows, D]."""
    from .phonetic import silent_visemes

    if v.shape[0] >= rows:
        return v[:rows]
    return torch.cat([v, torch.from_numpy(silent_visemes(rows - v.shape[0], v.shape[1])).to(v)], 0)


class HFEncoder:
    """A local wav2vec2 / HuBERT model (``transformers``): [T_f, hidden + 1] at 50 frames per second."""

    rate = 50.0

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", chunk_s: float = 30.0):
        self.path = Path(path)
        self.spec = f"hf:{self.path}"
        if not self.path.is_dir() or not (self.path / "config.json").is_file():
            raise EncoderError(f"{self.path}: not a local Hugging Face model directory (no config.json)")
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network
        try:
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:
            raise EncoderError(f"{self.spec}: needs the transformers package "
                               "(pip install 'talksplat[hf]')") from None
        try:
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True).eval().to(device)
        except Exception as e:  # transformers raises many types for bad directories
            raise EncoderError(f"{self.path}: cannot load the model ({type(e).__name__}: {e})".splitlines()[0]) from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.hop = int(SAMPLE_RATE / self.rate)
        self.chunk = int(chunk_s * SAMPLE_RATE)
        self.dim = int(self.model.config.hidden_size) + 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    @torch.no_grad()
    def encode(self, wave: torch.Tensor, warp: float = 1.0) -> torch.Tensor:
        """[N] float waveform at 16 kHz -> [N // 320 + 1, hidden + 1].  ``warp`` is ignored."""
        wave = wave.float().cpu()
        T = self.num_frames(wave.numel())
        x = (wave - wave.mean()) / (wave.std() + 1e-7)
        outs = []
        for s in range(0, max(x.numel(), 1), self.chunk):
            piece = x[s:s + self.chunk]
            if piece.numel() < 400:
                piece = torch.nn.functional.pad(piece, (0, 400 - piece.numel()))
            h = self.model(piece[None].to(self.device)).last_hidden_state[0].float().cpu()  # [t, H]
            outs.append(h)
        h = torch.cat(outs, 0)
        # The model's frames are 20 ms apart starting at ~12.5 ms: resample onto i * 20 ms, T frames.
        if h.shape[0] < T:
            h = torch.cat([h, h[-1:].expand(T - h.shape[0], -1)], 0)
        h = h[:T]
        loud = loudness_channel(wave, self.hop, T)
        return torch.cat([h, loud[:, None]], 1)


def make_encoder(spec: str = "logmel", device: str | torch.device = "cpu",
                 norm: Literal["trailing", "centred"] = "trailing"):
    """``"logmel"``, ``"phonetic"`` or ``"hf:/path/to/dir"`` -> an encoder with ``dim``, ``rate``, ``spec``,
    ``encode()``.  ``norm``: the log-mel normalisation (:class:`LogMelEncoder`)."""
    if spec == "logmel":
        return LogMelEncoder(norm=norm)
    if spec == "phonetic":
        return PhoneticEncoder(norm=norm)
    if spec.startswith("hf:"):
        return HFEncoder(spec[3:], device=device)
    raise EncoderError(f"unknown audio encoder '{spec}': use 'logmel', 'phonetic' or 'hf:/path/to/local/model'")
