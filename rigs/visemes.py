"""A hand-set viseme prior for rigs with ARKit-named expression units (the open head).

:data:`ARKIT_VISEME_PRIOR` maps each of the 15 visemes of the MPEG-4 / Oculus set (by name, in
:data:`VISEME_NAMES` order: the rig layer does not import :mod:`talksplat.driving.phonetic`, which owns
the set) to the ARKit mouth units that shape it.  Values are ARKit coefficients, 0 (rest) to 1 (the full
unit); a unit a viseme does not name is left where the subject has it (see :meth:`HeadRig.viseme_prior`
and ``talksplat.driving.train``).  ``jawOpen`` is the whole opening of the mouth, as an ARKit capture
reports it: a rig that opens with both the unit and a jaw rotation (the open head) splits it between
them as the subject's own data does.

The shapes (Preston Blair / Oculus viseme references, conservative values: the subject's data corrects
them):

* ``sil``: rest, every unit 0 (the jaw at rest, lips together but not pressed).
* ``PP`` (p, b, m): lips closed and pressed (``mouthClose``, ``mouthPress*``), jaw nearly shut.
* ``FF`` (f, v): the lower lip rolled in under the upper teeth (``mouthRollLower``), upper lip a
  little up (``mouthUpperUp*``), jaw nearly shut.
* ``TH``: tongue tip between the teeth (``tongueOut``), jaw a little open.
* ``DD`` (t, d), ``nn`` (n, l), ``kk`` (k, g): tongue sounds: jaw a little open, lips relaxed.
* ``CH`` (ch, sh, j): lips flared forward (``mouthFunnel``, a little ``mouthPucker``), teeth almost together.
* ``SS`` (s, z): teeth almost together, lips spread (``mouthStretch*``).
* ``RR`` (r): lips slightly rounded.
* ``aa``: the jaw wide open.
* ``E``, ``I``: lips spread (``mouthStretch*``, ``mouthSmile*``), jaw moderately / slightly open.
* ``O``: rounded and open (``mouthFunnel``, jaw moderate); ``U``: rounded and protruded
  (``mouthPucker``, ``mouthFunnel``), jaw slightly open.
"""

from __future__ import annotations

#: The viseme names the prior is keyed by (the MPEG-4 / Oculus set, in the order of
#: ``talksplat.driving.phonetic.VISEMES``).
VISEME_NAMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U")


def _pair(unit: str, value: float) -> dict[str, float]:
    return {f"{unit}Left": value, f"{unit}Right": value}


#: viseme -> {ARKit unit: coefficient 0..1}.  Every non-silent viseme names ``jawOpen`` (its opening).
ARKIT_VISEME_PRIOR: dict[str, dict[str, float]] = {
    "sil": {"jawOpen": 0.0, "mouthClose": 0.0, "mouthFunnel": 0.0, "mouthPucker": 0.0},
    "PP": {"jawOpen": 0.04, "mouthClose": 0.3, **_pair("mouthPress", 0.4)},
    "FF": {"jawOpen": 0.08, "mouthRollLower": 0.5, **_pair("mouthUpperUp", 0.2)},
    "TH": {"jawOpen": 0.15, "tongueOut": 0.3},
    "DD": {"jawOpen": 0.15, **_pair("mouthLowerDown", 0.1)},
    "kk": {"jawOpen": 0.2, **_pair("mouthStretch", 0.1)},
    "CH": {"jawOpen": 0.1, "mouthFunnel": 0.4, "mouthPucker": 0.1},
    "SS": {"jawOpen": 0.05, **_pair("mouthStretch", 0.2)},
    "nn": {"jawOpen": 0.15, **_pair("mouthLowerDown", 0.05)},
    "RR": {"jawOpen": 0.12, "mouthFunnel": 0.2, "mouthPucker": 0.2},
    "aa": {"jawOpen": 0.6, **_pair("mouthLowerDown", 0.2)},
    "E": {"jawOpen": 0.3, **_pair("mouthStretch", 0.3), **_pair("mouthSmile", 0.1)},
    "I": {"jawOpen": 0.15, **_pair("mouthStretch", 0.3), **_pair("mouthSmile", 0.3)},
    "O": {"jawOpen": 0.35, "mouthFunnel": 0.5, "mouthPucker": 0.2},
    "U": {"jawOpen": 0.15, "mouthPucker": 0.6, "mouthFunnel": 0.3},
}


def arkit_viseme_prior(expression_names) -> dict[str, dict[str, float]] | None:
    """A copy of :data:`ARKIT_VISEME_PRIOR` when every unit it names is among ``expression_names`` (a rig
    with ARKit units), else None (e.g. FLAME's numbered components)."""
    names = set(expression_names)
    if not all(u in names for shape in ARKIT_VISEME_PRIOR.values() for u in shape):
        return None
    return {v: dict(shape) for v, shape in ARKIT_VISEME_PRIOR.items()}
