"""What is said, not who says it: phones and visemes per frame, from speech or from text.

    segs = recognise_phones(wave)                     # pocketsphinx, offline: [PhoneSegment]
    segs = align_phones(wave, "bin blue at f two now")  # forced alignment of a known English text
    wave, segs = speak_with_phonemes("Hallo", "de")   # espeak-ng: its audio and its own phoneme timings
    track = viseme_track(segs, num_frames=300)        # [T, 15] one-hot at 100 frames per second

* Phones come from pocketsphinx 5's bundled US-English acoustic model (CMU ARPAbet phones), which
  runs offline from the files inside its wheel: phone recognition (``recognise_phones``: words decoded
  with the bundled language model, then force-aligned to get their phones; the words may be wrong, the
  phones are what matters) or forced alignment of a given text (``align_phones``).
* For text, espeak-ng synthesises the speech and reports each phoneme's start as it does
  (``speak_with_phonemes``), so no recognition is needed; this works for every espeak-ng voice (~100
  languages), while recognition is English only (other languages get the nearest English phones).
* Visemes: the 15 classes of the MPEG-4 / Oculus viseme set (:data:`VISEMES`), one per mouth shape
  (PP: lips pressed for p/b/m; FF: lower lip to upper teeth for f/v; O and U: rounded; sil: rest).

Times are seconds from the start of the waveform; waveforms are [N] float32 at 16 kHz.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass

import numpy as np

from talksplat.core.errors import InputError
from talksplat.core.ffmpeg import SAMPLE_RATE

#: The viseme classes, in channel order.
VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U")
VISEME_INDEX = {v: i for i, v in enumerate(VISEMES)}
NUM_VISEMES = len(VISEMES)


def silent_visemes(rows: int, channels: int) -> np.ndarray:
    """[rows, channels] float32: ``sil`` in every block of :data:`NUM_VISEMES` one-hot channels."""
    out = np.zeros((rows, channels), np.float32)
    out[:, ::NUM_VISEMES] = 1.0  # sil is channel 0 of each block
    return out

#: CMU ARPAbet (pocketsphinx's en-us phones, noise units included) -> viseme.
ARPABET_VISEME: dict[str, str] = {
    "SIL": "sil", "+NSN+": "sil", "+SPN+": "sil",
    "P": "PP", "B": "PP", "M": "PP",
    "F": "FF", "V": "FF",
    "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD",
    "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH",
    "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn",
    "R": "RR", "ER": "RR",
    "Y": "I", "W": "U",
    "AA": "aa", "AE": "aa", "AH": "aa", "AY": "aa", "AW": "aa",
    "EH": "E", "EY": "E",
    "IH": "I", "IY": "I",
    "AO": "O", "OW": "O", "OY": "O",
    "UH": "U", "UW": "U",
}

# espeak-ng phoneme mnemonics (its ASCII alphabet, shared by all its languages) by leading symbol.
_ESPEAK_CONSONANT = {
    "p": "PP", "b": "PP", "m": "PP", "f": "FF", "v": "FF", "T": "TH", "D": "TH", "t": "DD", "d": "DD",
    "k": "kk", "g": "kk", "N": "kk", "x": "kk", "G": "kk", "q": "kk", "h": "kk", "c": "kk", "Q": "kk",
    "S": "CH", "Z": "CH", "C": "CH", "s": "SS", "z": "SS", "n": "nn", "l": "nn", "L": "nn", "J": "nn",
    "r": "RR", "R": "RR", "j": "I", "w": "U", "W": "U", "B": "FF", "F": "FF",
}
_ESPEAK_VOWEL = {
    "a": "aa", "A": "aa", "V": "aa", "@": "aa", "&": "aa", "3": "RR", "E": "E", "e": "E", "I": "I",
    "i": "I", "y": "U", "Y": "U", "O": "O", "o": "O", "0": "O", "u": "U", "U": "U",
}


class PhoneticError(InputError):
    """Speech or text that the phonetic front end cannot process."""


@dataclass(frozen=True)
class PhoneSegment:
    """One phone: its name (ARPAbet or espeak-ng mnemonic), viseme, and [start, end) in seconds."""

    phone: str
    viseme: str
    start: float
    end: float


def espeak_viseme(phoneme: str) -> str:
    """An espeak-ng phoneme mnemonic (``b``, ``aU``, ``tS``, ``u:``, ``_:``) -> viseme name."""
    name = phoneme.strip().lstrip("',%=")
    if not name or name[0] in "_#":
        return "sil"
    if name.startswith(("tS", "dZ", "ts", "dz")):
        return "CH" if name[1] in "SZ" else "SS"
    c = name[0]
    return _ESPEAK_CONSONANT.get(c) or _ESPEAK_VOWEL.get(c) or "sil"


# ------------------------------------------------------------------ recognition (pocketsphinx)
@functools.lru_cache(maxsize=4)
def _decoder(kind: str):
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError:  # a dependency: only a broken install gets here
        raise PhoneticError("the phonetic front end needs pocketsphinx (pip install pocketsphinx==5.1.1)") from None
    model = get_model_path()
    hmm, dic = os.path.join(model, "en-us", "en-us"), os.path.join(model, "en-us", "cmudict-en-us.dict")
    if kind == "words":
        return Decoder(hmm=hmm, lm=os.path.join(model, "en-us", "en-us.lm.bin"), dict=dic, loglevel="FATAL")
    if kind == "phones":
        return Decoder(hmm=hmm, allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"), lw=2.0, pip=0.3,
                       beam=1e-20, pbeam=1e-20, loglevel="FATAL")
    return Decoder(hmm=hmm, dict=dic, loglevel="FATAL")


def _pcm(wave: np.ndarray) -> bytes:
    return (np.clip(np.asarray(wave, np.float32), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


_FRAME_S = 0.01  # pocketsphinx's frame step


def _align(pcm: bytes, text: str) -> list[PhoneSegment]:
    """Phones of ``text`` aligned to ``pcm``: pocketsphinx's phone-level alignment, or, where that pass
    fails (it does after some leading silences), each word's dictionary phones spread evenly over the
    word's aligned span.  Empty when the words cannot be aligned at all."""
    d = _decoder("align")
    try:
        d.set_align_text(text)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        words = [(s.word, s.start_frame, s.end_frame + 1) for s in d.seg()]
    except (RuntimeError, KeyError, ValueError):
        return []  # a word the dictionary does not know, or no path through the audio
    try:
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        return [PhoneSegment(p.name, ARPABET_VISEME.get(p.name, "sil"), p.start * _FRAME_S,
                             (p.start + p.duration) * _FRAME_S) for word in d.get_alignment() for p in word]
    except RuntimeError:
        pass
    segs = []
    for word, f0, f1 in words:
        pron = None if word.startswith(("<", "[")) else d.lookup_word(word)
        phones = pron.split() if pron else ["SIL"]
        edges = np.linspace(f0, f1, len(phones) + 1) * _FRAME_S
        segs += [PhoneSegment(ph, ARPABET_VISEME.get(ph, "sil"), float(edges[i]), float(edges[i + 1]))
                 for i, ph in enumerate(phones)]
    return segs


def align_phones(wave: np.ndarray, text: str) -> list[PhoneSegment]:
    """Forced alignment of English ``text`` to ``wave`` [N] (16 kHz): the phones in time order.

    Words outside pocketsphinx's dictionary make the alignment fail: :class:`PhoneticError`."""
    words = " ".join("".join(ch for ch in w.lower() if ch.isalnum() or ch == "'") for w in text.split())
    segs = _align(_pcm(wave), words)
    if not segs:
        raise PhoneticError(f"cannot align the text '{text[:60]}' to the speech (unknown word or no speech)")
    return segs


def recognise_phones(wave: np.ndarray, method: str = "words") -> list[PhoneSegment]:
    """The phones of English-like speech ``wave`` [N] (16 kHz), offline.

    ``method="words"``: words decoded with pocketsphinx's bundled language model, then force-aligned
    for their phone boundaries (on the GRID clips: 80% of 10 ms frames get the viseme of the true
    transcript's alignment, but only 45% of the bilabial closures are found).  ``method="phones"``: free
    phone recognition with the bundled phone language model (75% of frames, 70% of bilabials).  Silence
    and noise give ``sil``; audio with no recognisable speech gives one ``sil`` segment."""
    wave = np.asarray(wave, np.float32)
    if _db(wave) < _SILENT_DBFS:  # the recognisers hallucinate words in digital silence
        return [PhoneSegment("SIL", "sil", 0.0, len(wave) / SAMPLE_RATE)]
    return _gate(wave, _recognise(wave, method))


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12)) if len(x) else -120.0


#: Below this level (dBFS RMS), or this far below the loudest 100 ms, a phone counts as silence.
_SILENT_DBFS, _BELOW_PEAK_DB = -55.0, 40.0


def _gate(wave: np.ndarray, segs: list[PhoneSegment]) -> list[PhoneSegment]:
    """Phones recognised in near-silence (breath, room noise) become ``sil``."""
    win = SAMPLE_RATE // 10
    peak = max((_db(wave[i:i + win]) for i in range(0, max(1, len(wave) - win + 1), win // 2)), default=-120.0)
    floor = max(_SILENT_DBFS, peak - _BELOW_PEAK_DB)
    out = []
    for s in segs:
        quiet = _db(wave[int(s.start * SAMPLE_RATE):int(s.end * SAMPLE_RATE)]) < floor
        out.append(PhoneSegment("SIL", "sil", s.start, s.end) if quiet and s.viseme != "sil" else s)
    return out


def _recognise(wave: np.ndarray, method: str) -> list[PhoneSegment]:
    pcm = _pcm(wave)
    if method == "phones":
        d = _decoder("phones")
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        segs = [PhoneSegment(s.word, ARPABET_VISEME.get(s.word, "sil"), s.start_frame * _FRAME_S,
                             (s.end_frame + 1) * _FRAME_S) for s in d.seg()]
        return segs or [PhoneSegment("SIL", "sil", 0.0, len(wave) / SAMPLE_RATE)]
    if method != "words":
        raise ValueError(f"unknown recognition method '{method}': words or phones")
    d = _decoder("words")
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    words = [w for w in (hyp.hypstr.split() if hyp is not None else []) if not w.startswith(("<", "["))]
    segs = _align(pcm, " ".join(words)) if words else []
    if not segs:
        return [PhoneSegment("SIL", "sil", 0.0, len(wave) / SAMPLE_RATE)]
    return segs


# ------------------------------------------------------------------ text (espeak-ng)
class _EspeakID(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EspeakID)]


_EVENT_END, _EVENT_PHONEME = 0, 7
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent))


@functools.lru_cache(maxsize=1)
def _espeak():
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise PhoneticError("--text needs espeak-ng's library (Debian/Ubuntu: apt-get install espeak-ng; "
                            "macOS: brew install espeak-ng)") from None
    rate = lib.espeak_Initialize(2, 0, None, 1)  # synchronous, phoneme events on
    if rate <= 0:
        raise PhoneticError("espeak-ng could not start (its data directory is missing?)")
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    return lib, rate


def speak_with_phonemes(text: str, voice: str = "en-us", rate_wpm: int = 160,
                        pitch: int = 50) -> tuple[np.ndarray, int, list[PhoneSegment]]:
    """Synthesise ``text`` with espeak-ng's ``voice`` (``rate_wpm`` words per minute, ``pitch`` 0-99, as
    :func:`talksplat.driving.audio.synthesize_speech`): ([N] float32 waveform, its sample rate, the
    phonemes it spoke with their times).  Raises :class:`PhoneticError` for an unknown voice."""
    lib, rate = _espeak()
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise PhoneticError(f"espeak-ng has no voice '{voice}' (espeak-ng --voices lists them)")
    lib.espeak_SetParameter(1, int(rate_wpm), 0)  # espeakRATE, absolute
    lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
    chunks: list[np.ndarray] = []
    events: list[tuple[str, float]] = []

    def on_audio(wav, n, ev):
        if wav and n > 0:
            chunks.append(np.ctypeslib.as_array(wav, (n,)).astype(np.float32) / 32768.0)
        i = 0
        while ev[i].type != _EVENT_END:
            if ev[i].type == _EVENT_PHONEME:
                events.append((ev[i].id.string.decode(errors="replace"), ev[i].audio_position / 1000.0))
            i += 1
        return 0

    cb = _CALLBACK(on_audio)  # kept alive until synthesis returns
    lib.espeak_SetSynthCallback(cb)
    data = text.encode()
    if lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None) != 0:
        raise PhoneticError(f"espeak-ng failed to speak '{text[:60]}'")
    lib.espeak_Synchronize()
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    total = len(wave) / rate
    segs = []
    for k, (ph, t0) in enumerate(events):
        t1 = events[k + 1][1] if k + 1 < len(events) else total
        if t1 > t0:
            segs.append(PhoneSegment(ph, espeak_viseme(ph), t0, min(t1, total)))
    return wave, rate, segs


# ------------------------------------------------------------------ per-frame tracks
def phonetic_track(wave: np.ndarray, num_frames: int, rate: float = 100.0) -> np.ndarray:
    """[num_frames, 2 * len(VISEMES)] float32: the one-hot visemes of both recognisers (words, then
    phones) at ``i / rate`` seconds; each catches what the other misses (bilabials especially)."""
    return np.concatenate([viseme_track(recognise_phones(wave, m), num_frames, rate) for m in ("words", "phones")], 1)


def text_track(segments: list[PhoneSegment], num_frames: int, rate: float = 100.0) -> np.ndarray:
    """[num_frames, 2 * len(VISEMES)]: known phones (espeak-ng's own, or a forced alignment) in the layout
    of :func:`phonetic_track` (both halves the same)."""
    v = viseme_track(segments, num_frames, rate)
    return np.concatenate([v, v], 1)


def viseme_track(segments: list[PhoneSegment], num_frames: int, rate: float = 100.0) -> np.ndarray:
    """[num_frames, len(VISEMES)] float32 one-hot: the viseme at each frame's time ``i / rate`` seconds;
    ``sil`` outside every segment."""
    out = np.zeros((num_frames, len(VISEMES)), np.float32)
    ids = np.zeros(num_frames, np.int64)  # sil
    t = np.arange(num_frames) / rate
    for s in segments:
        ids[(t >= s.start) & (t < s.end)] = VISEME_INDEX[s.viseme]
    out[np.arange(num_frames), ids] = 1.0
    return out
