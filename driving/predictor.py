"""The audio-to-rig predictor: audio features -> expression and jaw parameters at the video frame rate.

    drv = load_predictor("avatar/driver.safetensors", rig_checksum=rig.checksum)
    out = drv.predict(wave, fps=25.0, num_frames=T)   # {"expression": [T, E], "jaw": [T, 3]}

Network (:class:`AudioToRig`): a stride-2 input projection (100 -> 50 Hz for log-mel), residual
dilated 1-D convolutions (0.42 s behind, 0.14 s ahead; each time step normalised on its own), the
hidden sequence sampled at the video frame times (linear interpolation), and a small convolutional
head at the video rate that looks back only.

Lookahead (streaming-ready): an output at time t depends on the audio up to t + 0.18 s (features
12.5 ms, network 165 ms; the phonetic viseme head 110 ms), and the silence gate on t + 0.2 s.  Not
streaming: the input's loudness normalisation (per utterance, in :func:`~talksplat.driving.audio.load_audio`),
the phonetic encoder's recognition (pocketsphinx decodes the utterance) and ``match_amplitude`` (the
utterance's spread).  Predictor files from before (``streaming`` absent) keep their centred ±0.3 s
network and ±1.5 s feature normalisation.

Targets are the rig's speech-related expression coefficients plus the jaw rotation, standardised with
the training statistics; eye-related expression coefficients are not predicted (blinks come from
:mod:`talksplat.driving.motion`) and keep their training median.

Silence: frames in a run of at least 0.2 s whose loudness is 30 dB under the speech level blend
to the subject's rest (its mean parameters over the silent training frames), so the mouth closes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talksplat.core.errors import InputError
from talksplat.core.ffmpeg import SAMPLE_RATE
from talksplat.core.files import atomic_write, file_digest, json_text

from .features import loudness_channel, make_encoder
from .phonetic import NUM_VISEMES

FORMAT = "talksplat-driver"
VERSION = 1
#: Loudness-channel value under which a frame counts as silent (30 dB under the speech target).
SILENCE_LEVEL = -1.5
#: The most :meth:`AudioPredictor.match_amplitude` amplifies a prediction's motion.
MAX_AMPLITUDE_GAIN = 2.5
#: Shortest silence (seconds) that closes the mouth.
MIN_SILENCE_S = 0.2


class PredictorFileError(InputError):
    """A driver file that is missing, not a talksplat driver, or made for another rig."""


class FrameNorm(nn.Module):
    """LayerNorm over the channels of each time step of [B, C, T] (no statistics across time)."""

    def __init__(self, ch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))

    def forward(self, x):
        y = torch.nn.functional.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias)
        return y.transpose(1, 2).contiguous()  # the convolutions after it run faster on contiguous input


class ResBlock(nn.Module):
    """A residual dilated convolution.  ``streaming``: its ``kernel`` taps reach one tap ahead and the rest
    behind, and it normalises each time step on its own (:class:`FrameNorm`), so the block's output at t
    depends on its input up to ``dilation`` steps after t; otherwise (predictor files from before) the
    taps are centred and GroupNorm normalises over the whole sequence."""

    def __init__(self, ch: int, kernel: int, dilation: int, dropout: float, streaming: bool = True):
        super().__init__()
        future = 1 if streaming else kernel // 2
        self.pad = (dilation * (kernel - 1 - future), dilation * future)
        self.conv1 = nn.Conv1d(ch, ch, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(ch, ch, 1)
        self.norm = FrameNorm(ch) if streaming else nn.GroupNorm(1, ch)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = self.conv1(torch.nn.functional.pad(x, self.pad))
        return x + self.conv2(self.drop(torch.nn.functional.gelu(self.norm(h))))


class AudioToRig(nn.Module):
    """[B, T_f, D] features + [B, T] query positions (in feature frames) -> [B, T, out_dim].

    With ``visemes`` (the phonetic encoder's viseme channels: a slice of the feature dimension holding
    blocks of 15 one-hots), a linear viseme head adds, at each query, the viseme weights around it
    (the blocks averaged over +-``viseme_width`` feature frames centred ``viseme_lead`` frames later:
    lips anticipate the next sound) times a per-viseme table [15, out_dim]: the subject's mouth shape
    per viseme, which the temporal network corrects."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, kernel: int = 5,
                 dilations: tuple[int, ...] = (1, 2, 4), dropout: float = 0.1, stride: int = 2,
                 visemes: tuple[int, int] | None = None, viseme_lead: int = 6, viseme_width: int = 4,
                 streaming: bool = True):
        super().__init__()
        self.stride, self.streaming = stride, streaming
        self.inp = nn.Conv1d(in_dim, hidden, stride, stride=stride)
        self.blocks = nn.Sequential(*[ResBlock(hidden, kernel, d, dropout, streaming) for d in dilations])
        # the head's 3-tap convolution runs over the video frames: centred before, looking back when streaming
        self.head_pad = (2, 0) if streaming else (1, 1)
        self.head = nn.Sequential(nn.Conv1d(hidden, hidden, 3), nn.GELU(), nn.Conv1d(hidden, out_dim, 1))
        self.visemes, self.viseme_lead, self.viseme_width = visemes, viseme_lead, viseme_width
        if visemes is not None:
            self.viseme_head = nn.Linear(NUM_VISEMES, out_dim, bias=False)
            nn.init.zeros_(self.viseme_head.weight)

    def lookahead_frames(self) -> float:
        """How far (in input feature frames) an output at query q reads the features past q: the input
        projection and the linear sampling of its output (1.5 stride - 0.5), each block's one tap ahead
        (its dilation, in strides), the head (1 video frame unless streaming: not counted here, it is
        at the video rate) and the viseme head (``viseme_lead`` + ``viseme_width`` + 1)."""
        per_block = sum(b.pad[1] for b in self.blocks)
        net = 1.5 * self.stride - 0.5 + per_block * self.stride
        vis = self.viseme_lead + self.viseme_width + 1 if self.visemes is not None else 0
        return float(max(net, vis))

    def viseme_weights(self, feats: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """[B, T_f, D], [B, T] -> [B, T, 15]: the viseme weights the viseme head sees at each query."""
        a, b = self.visemes
        v = feats[..., a:b]
        v = v.reshape(*v.shape[:2], -1, NUM_VISEMES).mean(2).transpose(1, 2)  # [B, 15, T_f]
        w = self.viseme_width
        v = torch.nn.functional.avg_pool1d(v, 2 * w + 1, stride=1, padding=w, count_include_pad=False)
        Tf = v.shape[-1]
        q = (query + self.viseme_lead).clamp(0, Tf - 1)
        i0 = q.floor().long().clamp(max=Tf - 1)
        i1 = (i0 + 1).clamp(max=Tf - 1)
        f = (q - i0.float())[:, None]
        out = torch.gather(v, 2, i0[:, None].expand(-1, NUM_VISEMES, -1)) * (1 - f) + \
            torch.gather(v, 2, i1[:, None].expand(-1, NUM_VISEMES, -1)) * f
        return out.transpose(1, 2)

    def forward(self, feats: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)
        pad = (-x.shape[-1]) % self.stride
        h = self.blocks(self.inp(torch.nn.functional.pad(x, (0, pad), mode="replicate")))  # [B, H, T_f / stride]
        Tf = h.shape[-1]
        # frame i of h averages input frames [i*s, i*s + s): its centre is at (s - 1) / 2
        q = ((query - 0.5 * (self.stride - 1)) / self.stride).clamp(0, Tf - 1)
        i0 = q.floor().long().clamp(max=Tf - 1)
        i1 = (i0 + 1).clamp(max=Tf - 1)
        a = (q - i0.float())[:, None]
        idx0 = i0[:, None].expand(-1, h.shape[1], -1)
        idx1 = i1[:, None].expand(-1, h.shape[1], -1)
        hv = torch.gather(h, 2, idx0) * (1 - a) + torch.gather(h, 2, idx1) * a  # [B, H, T]
        out = self.head(torch.nn.functional.pad(hv, self.head_pad)).transpose(1, 2)
        if self.visemes is not None:
            out = out + self.viseme_head(self.viseme_weights(feats, query))
        return out


@dataclass
class TargetLayout:
    """Which rig parameters the predictor outputs, and how to fill the rest.

    Attributes:
        expr_ids: [K_e] expression indices predicted.
        num_expression: E, the rig's expression count.
        fill_expression: [E] values for expression coefficients that are not predicted (training median).
        blink_ids: expression indices of the eyelid blinks (empty when the rig has none).
    """

    expr_ids: list[int]
    num_expression: int
    fill_expression: np.ndarray
    blink_ids: list[int]

    @property
    def dim(self) -> int:
        return len(self.expr_ids) + 3

    def pack(self, expression: np.ndarray, jaw: np.ndarray) -> np.ndarray:
        """[T, E], [T, 3] -> [T, dim]."""
        return np.concatenate([expression[:, self.expr_ids], jaw], 1).astype(np.float32)

    def unpack(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """[T, dim] -> {"expression": [T, E], "jaw": [T, 3]}."""
        expr = np.repeat(self.fill_expression[None].astype(np.float32), len(y), 0)
        expr[:, self.expr_ids] = y[:, :len(self.expr_ids)]
        return {"expression": expr, "jaw": y[:, len(self.expr_ids):].astype(np.float32)}


def choose_layout(rig, expression: np.ndarray) -> TargetLayout:
    """Predict every expression coefficient that moves in training except the rig's eye units (its
    ``eyes``, ``blink`` and ``gaze`` groups); fill with the median.  Blinks: the rig's ``blink`` group.

    rig: the :class:`~talksplat.rigs.HeadRig` (its expression groups); expression: [T, E] training values."""
    std = expression.std(0)
    eye = set(rig.expression_group("eyes")) | set(rig.expression_group("blink")) | set(rig.expression_group("gaze"))
    ids = [i for i in range(expression.shape[1]) if i not in eye and std[i] > 1e-4]
    blinks = rig.expression_group("blink")
    return TargetLayout(ids, expression.shape[1], np.median(expression, 0).astype(np.float32), blinks)


def frame_loudness(wave: np.ndarray, fps: float, num_frames: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[num_frames] loudness channel (:func:`~talksplat.driving.features.loudness_channel`) of ``wave`` [N] at
    each video frame ``fps``."""
    hop = int(round(sample_rate / fps))
    return loudness_channel(torch.from_numpy(np.asarray(wave, np.float32)), hop, num_frames).numpy()


def silence_gate(wave: np.ndarray, fps: float, num_frames: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[num_frames] in [0, 1]: 1 inside silences of at least MIN_SILENCE_S, ramping over 3 frames."""
    silent = frame_loudness(wave, fps, num_frames, sample_rate) < SILENCE_LEVEL
    gate = np.zeros(num_frames, np.float32)
    min_run = max(1, int(round(MIN_SILENCE_S * fps)))
    t = 0
    while t < num_frames:
        if silent[t]:
            e = t
            while e < num_frames and silent[e]:
                e += 1
            if e - t >= min_run:
                gate[t:e] = 1.0
            t = e
        else:
            t += 1
    kernel = np.ones(3, np.float32) / 3
    return np.clip(np.convolve(np.pad(gate, 1, mode="edge"), kernel, "valid"), 0, 1)


class AudioPredictor:
    """A trained predictor with its normalisation, layout, rest pose and encoder spec."""

    def __init__(self, model: AudioToRig, layout: TargetLayout, mean: np.ndarray, std: np.ndarray,
                 rest: np.ndarray, encoder_spec: str, fps: float, rig_checksum: str, meta: dict | None = None,
                 avatar_sha256: str | None = None):
        self.model = model.eval()
        self.layout, self.mean, self.std, self.rest = layout, mean, std, rest
        self.encoder_spec, self.fps, self.rig_checksum = encoder_spec, fps, rig_checksum
        self.meta = meta or {}
        #: sha256 of the avatar.safetensors this predictor was trained beside (None: trained alone)
        self.avatar_sha256 = avatar_sha256
        #: The subject's dominant mouth motion in speech: a unit axis [D] of the standardised outputs and its
        #: std over the training speech (None: no amplitude matching, as in files from before it existed).
        self.amp_axis: np.ndarray | None = None
        self.amp_std: float = 0.0
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = make_encoder(self.encoder_spec, norm="trailing" if self.model.streaming else "centred")
        return self._encoder

    @torch.no_grad()
    def predict_normalised(self, wave: np.ndarray, fps: float, num_frames: int, chunk_s: float = 60.0,
                           context_s: float = 2.0, visemes: np.ndarray | None = None) -> np.ndarray:
        """[N] loudness-normalised 16 kHz samples -> [num_frames, dim] standardised outputs.

        Long audio is processed in chunks of ``chunk_s`` seconds with ``context_s`` of context on each
        side, so memory stays bounded and chunk borders are seamless.  A phonetic encoder takes
        ``visemes`` ([N // 160 + 1, 30], e.g. from the text that was spoken) or recognises the speech."""
        enc = self.encoder
        sr = SAMPLE_RATE
        track = None
        if hasattr(enc, "visemes"):  # recognise once over the whole recording; chunks slice it
            track = torch.as_tensor(visemes, dtype=torch.float32) if visemes is not None else enc.visemes(wave)
        out = np.zeros((num_frames, self.layout.dim), np.float32)
        step = max(1, int(chunk_s * fps))
        for f0 in range(0, num_frames, step):
            f1 = min(num_frames, f0 + step)
            s0 = max(0, int((f0 / fps - context_s) * sr))
            s1 = min(len(wave), int((f1 / fps + context_s) * sr))
            piece = torch.from_numpy(np.asarray(wave[s0:s1], np.float32))
            if track is None:
                feats = enc.encode(piece)
            else:
                r0 = int(round(s0 / enc.hop))
                feats = enc.encode(piece, visemes=track[r0:r0 + enc.num_frames(len(piece))])
            q = (torch.arange(f0, f1, dtype=torch.float32) / fps - s0 / sr) * enc.rate
            out[f0:f1] = self.model(feats[None], q[None])[0].numpy()
        return out

    def predict(self, wave: np.ndarray, fps: float | None = None, num_frames: int | None = None,
                close_in_silence: bool = True, visemes: np.ndarray | None = None,
                match_amplitude: bool = False) -> dict[str, np.ndarray]:
        """[N] loudness-normalised 16 kHz samples -> {"expression": [T, E], "jaw": [T, 3]} (rig units).

        ``num_frames`` defaults to round(duration * fps): the video lasts as long as the audio.
        ``visemes``: known visemes for a phonetic predictor (see :meth:`predict_normalised`).
        ``match_amplitude``: give the mouth the subject's own amplitude (:meth:`match_amplitude`)."""
        fps = fps or self.fps
        if num_frames is None:
            num_frames = max(1, int(round(len(wave) / SAMPLE_RATE * fps)))
        gate = silence_gate(wave, fps, num_frames) if close_in_silence or match_amplitude else None
        yn = self.predict_normalised(wave, fps, num_frames, visemes=visemes)
        if match_amplitude:
            yn = self.match_amplitude(yn, gate < 0.5)
        y = yn * self.std + self.mean
        if close_in_silence:
            y = gate[:, None] * self.rest[None] + (1 - gate[:, None]) * y
        return self.layout.unpack(y)

    def match_amplitude(self, yn: np.ndarray, speech: np.ndarray) -> np.ndarray:
        """Standardised outputs [T, D] -> the same, scaled about the subject's mean training pose (0) so that
        the dominant mouth motion (:attr:`amp_axis`) over the ``speech`` frames [T] bool has the subject's own
        std in training speech.  Only amplifies, by at most :data:`MAX_AMPLITUDE_GAIN`: a predictor is
        most uncertain (and its output flattest) on voices it never heard, and this gives the avatar the
        subject's own mouth movement back.  No-op without an axis or with under 10 speech frames."""
        if self.amp_axis is None or self.amp_std <= 0 or int(speech.sum()) < 10:
            return yn
        p = (yn[speech] - yn[speech].mean(0)) @ self.amp_axis
        gain = float(np.clip(self.amp_std / max(float(p.std()), 1e-6), 1.0, MAX_AMPLITUDE_GAIN))
        return (gain * yn).astype(np.float32)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tensors.update({"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std),
                        "rest": torch.from_numpy(self.rest),
                        **({"amp_axis": torch.from_numpy(self.amp_axis.astype(np.float32))}
                           if self.amp_axis is not None else {}),
                        "fill_expression": torch.from_numpy(self.layout.fill_expression)})
        header = {"format": FORMAT, "version": VERSION, "encoder": self.encoder_spec, "fps": self.fps,
                  "rig_checksum": self.rig_checksum, "expr_ids": self.layout.expr_ids,
                  "num_expression": self.layout.num_expression, "blink_ids": self.layout.blink_ids,
                  "in_dim": self.model.inp.in_channels, "hidden": self.model.inp.out_channels,
                  "dilations": [b.conv1.dilation[0] for b in self.model.blocks],
                  "kernel": self.model.blocks[0].conv1.kernel_size[0], "stride": self.model.stride,
                  "visemes": self.model.visemes, "viseme_lead": self.model.viseme_lead,
                  "viseme_width": self.model.viseme_width, "streaming": self.model.streaming,
                  "avatar_sha256": self.avatar_sha256, "amp_std": self.amp_std, "meta": self.meta}
        path = Path(path)
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=_metadata(header))
        return path


def _header_text(header: dict) -> str:
    return json_text(header, indent=None)


def _metadata(header: dict) -> dict[str, str]:
    return {"talksplat": _header_text(header)}


def set_avatar_digest(path: str | os.PathLike, avatar: str | os.PathLike | None) -> Path:
    """Bind the driver file ``path`` to the avatar file ``avatar`` (its sha256, None: to none), as training
    beside it does (e.g. after a fit folder was copied and its avatar rewritten): the file becomes what
    :meth:`AudioPredictor.save` writes with that binding.  Replaced atomically by a new file (a hard link's
    other names keep the old one); left alone when already so bound."""
    from talksplat.core.files import set_safetensors_header

    sha = file_digest(avatar) if avatar is not None else None
    return set_safetensors_header(path, {"avatar_sha256": sha}, _header_text)


def load_predictor(path: str | os.PathLike, rig_checksum: str | None = None, avatar: str | os.PathLike | None = None) -> AudioPredictor:
    """Read a driver file; :class:`PredictorFileError` naming the file on any problem: damaged, made for
    another rig (``rig_checksum``), or trained beside another avatar than the file ``avatar`` (the fit
    was redone since: a fit folder never mixes two runs)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise PredictorFileError(f"{path}: no audio predictor here (train one with `talksplat fit DATASET "
                              f"--out {path.parent} --driver-only`)")
    try:
        with safe_open(str(path), "pt") as f:
            header = json.loads((f.metadata() or {})["talksplat"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any damage is one message
        raise PredictorFileError(f"{path}: not a talksplat driver file ({type(e).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PredictorFileError(f"{path}: not a talksplat driver file (format "
                              f"{header.get('format') if isinstance(header, dict) else None!r})")
    if not isinstance(header.get("version", 0), int) or header.get("version", 0) > VERSION:
        raise PredictorFileError(f"{path}: driver format version {header.get('version')} is newer than this "
                              f"talksplat reads ({VERSION}); upgrade talksplat")
    if rig_checksum is not None and header.get("rig_checksum") != rig_checksum:
        raise PredictorFileError(f"{path}: made for another rig (checksum {str(header.get('rig_checksum'))[:12]}, "
                              f"loaded rig {rig_checksum[:12]})")
    if avatar is not None and header.get("avatar_sha256") and header["avatar_sha256"] != file_digest(avatar):
        raise PredictorFileError(f"{path}: trained for another avatar than {avatar} (the avatar was fitted again "
                              f"since); retrain it with `talksplat fit DATASET --out {path.parent} --driver-only`")
    bad = [k for k, v in tensors.items() if v.dtype.is_floating_point and not bool(torch.isfinite(v).all())]
    if bad:
        raise PredictorFileError(f"{path}: '{bad[0]}' holds non-finite values (NaN or Inf)")
    try:
        layout = TargetLayout(list(header["expr_ids"]), int(header["num_expression"]),
                              tensors["fill_expression"].numpy(), list(header["blink_ids"]))
        model = AudioToRig(int(header["in_dim"]), layout.dim, hidden=int(header["hidden"]),
                           kernel=int(header["kernel"]), dilations=tuple(header["dilations"]),
                           stride=int(header.get("stride", 1)),
                           visemes=tuple(header["visemes"]) if header.get("visemes") else None,
                           viseme_lead=int(header.get("viseme_lead", 6)), viseme_width=int(header.get("viseme_width", 4)),
                           streaming=bool(header.get("streaming", False)))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        drv = AudioPredictor(model, layout, tensors["mean"].numpy(), tensors["std"].numpy(), tensors["rest"].numpy(),
                     str(header["encoder"]), float(header["fps"]), str(header["rig_checksum"]), header.get("meta", {}),
                     avatar_sha256=header.get("avatar_sha256"))
        if "amp_axis" in tensors:
            drv.amp_axis, drv.amp_std = tensors["amp_axis"].numpy(), float(header["amp_std"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise PredictorFileError(f"{path}: damaged driver file ({type(e).__name__}: {' '.join(str(e).split())[:200]})") \
            from None
    E = layout.num_expression
    if not (0 < drv.fps < 1e4) or drv.mean.shape != (layout.dim,) or drv.std.shape != (layout.dim,) \
            or drv.rest.shape != (layout.dim,) or layout.fill_expression.shape != (E,) \
            or not all(0 <= i < E for i in layout.expr_ids + layout.blink_ids) \
            or (drv.amp_axis is not None and (drv.amp_axis.shape != (layout.dim,) or not 0 <= drv.amp_std < 1e3)):
        raise PredictorFileError(f"{path}: damaged driver file (statistics do not match the model's {layout.dim} outputs)")
    return drv
