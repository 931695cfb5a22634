"""The manifest of `talksplat batch`: subjects to fit and renders to drive, read from YAML or JSON lines and
checked whole before any work (docs/batch.md).

YAML::

    subjects:
      - name: alice                 # [A-Za-z0-9._-], unique
        videos: [alice.mp4]         # or `video: alice.mp4`; several with a calibration (multi-view)
        calibration: cams.json      # optional
        rig: open                   # optional (as `talksplat run --rig`)
        preset: fast                # optional: fast | default | quality
        steps: 2000                 # optional, as `talksplat run`: fps, resolution, max_frames, heldout,
        driver: {steps: 500}        #   steps, budget, lpips_weights, driver (the --driver.* options)
    renders:
      - name: alice-hello           # the output: OUT/renders/alice-hello/alice-hello.mp4 (+ .npz, .wav)
        subject: alice
        audio: hello.wav            # or `text: "Hello there."` (+ optional `voice`)
        camera: "20,5"              # optional, as `talksplat run`: camera, frame, background, pose,
        background: white           #   resolution, voice, and the drive options quality, blinks, seed,
                                    #   mouth_amplitude, arkit_csv

JSON lines: one object a line, ``{"subject": {...}}`` or ``{"render": {...}}``.  Relative paths are relative
to the manifest's folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talksplat.core.errors import InputError

SUBJECT_KEYS = {"name", "video", "videos", "calibration", "rig", "preset", "fps", "resolution", "max_frames",
                "heldout", "steps", "budget", "lpips_weights", "driver"}
RENDER_KEYS = {"name", "subject", "audio", "text", "voice", "camera", "frame", "background", "pose", "resolution",
               "quality", "blinks", "seed", "mouth_amplitude", "arkit_csv"}
#: subject key -> `talksplat run` option (RunConfig field)
_SUBJECT_RUN = {"calibration": "calibration", "rig": "rig", "preset": "preset", "fps": "fps",
                "resolution": "resolution", "max_frames": "max_frames", "heldout": "heldout", "steps": "steps",
                "budget": "budget", "lpips_weights": "lpips_weights"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TYPES = {"preset": str, "rig": str, "fps": (int, float), "resolution": int, "max_frames": int, "heldout": (int, float),
          "steps": int, "budget": int, "voice": str, "camera": str, "frame": str, "background": str, "pose": str,
          "quality": str,
          "blinks": bool, "seed": int, "mouth_amplitude": str, "arkit_csv": bool, "text": str}


class ManifestError(InputError):
    """Everything wrong with a manifest, one line each (:attr:`lines`); the CLI prints each line."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass
class Subject:
    name: str
    videos: tuple[Path, ...]
    options: dict[str, Any] = field(default_factory=dict)  # RunConfig fields (driver: PredictorConfig fields)


@dataclass
class Render:
    name: str
    subject: str
    options: dict[str, Any] = field(default_factory=dict)  # audio | text and the drive options


@dataclass
class Manifest:
    path: Path
    subjects: dict[str, Subject]
    renders: dict[str, Render]


def read_entries(path: Path) -> list[tuple[str, str, Any]]:
    """(where, kind "subject" | "render", the entry) of each entry in the manifest file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (a YAML or JSON lines manifest)") from None
    if Path(path).suffix.lower() == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ManifestError([f"{path}:{i}: not JSON ({e})"]) from None
            if not (isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("subject", "render")):
                raise ManifestError([f"{path}:{i}: expected {{\"subject\": {{...}}}} or {{\"render\": {{...}}}}"])
            kind, entry = next(iter(obj.items()))
            out.append((f"{path}:{i}", kind, entry))
        return out
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError([f"{path}: not YAML ({' '.join(str(e).split())})"]) from None
    if not isinstance(doc, dict):
        raise ManifestError([f"{path}: expected a mapping with `subjects:` and `renders:`"])
    errors = [f"{path}: unknown key {k!r} (expected subjects, renders)" for k in doc if k not in ("subjects", "renders")]
    out = []
    for kind in ("subjects", "renders"):
        items = doc.get(kind) or []
        if not isinstance(items, list):
            errors.append(f"{path}: {kind}: expected a list")
            continue
        out += [(f"{path}: {kind}[{i}]", kind[:-1], e) for i, e in enumerate(items)]
    if errors:
        raise ManifestError(errors)
    return out


def load_manifest(path: str | Path) -> Manifest:
    """Read and check the whole manifest; raises :class:`ManifestError` with every problem, one line each."""
    path = Path(path)
    base = path.parent
    errors: list[str] = []
    subjects: dict[str, Subject] = {}
    renders: dict[str, Render] = {}
    entries = read_entries(path)
    seen: set[tuple[str, str]] = set()
    for where, kind, entry in entries:
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping")
            continue
        name = entry.get("name")
        label = f"{where} ({name})" if isinstance(name, str) else where
        if not isinstance(name, str) or not _NAME.match(name):
            errors.append(f"{label}: `name` must be letters, digits, '.', '_' or '-' (a file name)")
            continue
        if (kind, name) in seen:
            errors.append(f"{label}: duplicate {kind} name {name!r}")
            continue
        seen.add((kind, name))
        if kind == "subject":
            subj = _subject(entry, label, base, errors)
            if subj is not None:
                subjects[name] = subj
        else:
            r = _render(entry, label, base, errors)
            if r is not None:
                renders[name] = r
    known = {n for _, k, e in entries if k == "subject" and isinstance(e, dict) for n in [e.get("name")]}
    for where, kind, entry in entries:
        if kind == "render" and isinstance(entry, dict) and isinstance(entry.get("subject"), str) \
                and entry["subject"] not in known:
            errors.append(f"{where} ({entry.get('name')}): unknown subject {entry['subject']!r}")
    if not subjects and not renders and not errors:
        errors.append(f"{path}: no subjects and no renders")
    if errors:
        raise ManifestError(errors)
    m = Manifest(path, subjects, renders)
    from talksplat.core.errors import TalksplatError

    for r in m.renders.values():  # the options as `talksplat drive` checks them (ranges, camera, background)
        try:
            check_render_config(m, r)
        except TalksplatError as e:
            errors.append(f"{path}: render {r.name}: {' '.join(str(e).split())}")
    if errors:
        raise ManifestError(errors)
    return m


def _unknown(entry: dict, allowed: set[str], label: str, errors: list[str]) -> bool:
    bad = sorted(k for k in entry if k not in allowed)
    for k in bad:
        errors.append(f"{label}: unknown key {k!r} (expected one of {', '.join(sorted(allowed))})")
    return bool(bad)


def _typed(entry: dict, keys, label: str, errors: list[str]) -> bool:
    ok = True
    for k in keys:
        if k in entry and k in _TYPES and entry[k] is not None:
            t = _TYPES[k]
            v = entry[k]
            if isinstance(v, bool) and t is not bool or not isinstance(v, t):
                errors.append(f"{label}: `{k}`: {v!r} is not {_type_name(t)}")
                ok = False
    return ok


def _type_name(t) -> str:
    return {str: "a string", int: "an integer", bool: "true or false"}.get(t, "a number")


def _file(value: Any, key: str, base: Path, label: str, errors: list[str]) -> Path | None:
    if not isinstance(value, str) or not value:
        errors.append(f"{label}: `{key}` must be a file path")
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        errors.append(f"{label}: {key} {p}: no such file")
        return None
    return p


def _subject(entry: dict, label: str, base: Path, errors: list[str]) -> Subject | None:
    n = len(errors)
    _unknown(entry, SUBJECT_KEYS, label, errors)
    _typed(entry, SUBJECT_KEYS, label, errors)
    if ("video" in entry) == ("videos" in entry):
        errors.append(f"{label}: give `video: FILE` or `videos: [FILE, ...]` (one of them)")
        vids = []
    else:
        vids = entry.get("videos", [entry.get("video")])
        vids = vids if isinstance(vids, list) and vids else [None]
    videos = [_file(v, "video", base, label, errors) for v in vids]
    opts: dict[str, Any] = {}
    for k, field_name in _SUBJECT_RUN.items():
        if entry.get(k) is not None:
            opts[field_name] = entry[k]
    for k in ("calibration", "lpips_weights"):
        if k in opts:
            opts[k] = _file(opts[k], k, base, label, errors)
    if "driver" in entry:
        from talksplat.driving.config import PredictorConfig

        d = entry["driver"]
        names = {f.name for f in dataclasses.fields(PredictorConfig)} - {"enabled", "extra_data"}
        if not isinstance(d, dict):
            errors.append(f"{label}: `driver` must be a mapping of --driver.* options")
        else:
            for k in sorted(set(d) - names):
                errors.append(f"{label}: driver: unknown key {k!r} (expected one of {', '.join(sorted(names))})")
            opts["driver"] = {k: v for k, v in d.items() if k in names}
    if len(errors) > n:
        return None
    subj = Subject(entry["name"], tuple(videos), opts)
    try:
        check_options_of(run_config(subj, Path(".")))
    except Exception as e:  # noqa: BLE001
        from talksplat.core.errors import TalksplatError

        if not isinstance(e, (TalksplatError, TypeError)):
            raise
        errors.append(f"{label}: {' '.join(str(e).split())}")
        return None
    return subj


def _render(entry: dict, label: str, base: Path, errors: list[str]) -> Render | None:
    n = len(errors)
    _unknown(entry, RENDER_KEYS, label, errors)
    _typed(entry, RENDER_KEYS, label, errors)
    if not isinstance(entry.get("subject"), str):
        errors.append(f"{label}: `subject` (a subject's name) is missing")
    if ("audio" in entry) == ("text" in entry):
        errors.append(f"{label}: give `audio: FILE` or `text: \"...\"` (one of them)")
    opts = {k: v for k, v in entry.items() if k not in ("name", "subject") and v is not None}
    if "audio" in entry:
        opts["audio"] = _file(entry["audio"], "audio", base, label, errors)
    bg = entry.get("background")
    if isinstance(bg, str):
        from talksplat.driving.drive import background_image

        img = background_image(bg)
        if img is not None:
            opts["background"] = str(_file(bg, "background", base, label, errors))
    if "text" in entry:
        from talksplat.driving.audio import espeak_exe

        if espeak_exe() is None:
            errors.append(f"{label}: `text` needs espeak-ng (apt-get install espeak-ng); or give `audio: FILE`")
    if len(errors) > n:
        return None
    return Render(entry["name"], entry["subject"], opts)


# ------------------------------------------------------------------ the jobs' `talksplat run` configs
def run_config(subject: Subject, out: Path, render: Render | None = None, **more):
    """The :class:`~talksplat.run_command.RunConfig` of ``subject`` working in ``out`` (its `talksplat run` work
    folder), with ``render``'s audio / text and drive options."""
    from talksplat.driving.config import PredictorConfig
    from talksplat.run_command import RunConfig

    opts = dict(subject.options)
    if "driver" in opts:
        opts["driver"] = PredictorConfig(**opts["driver"])
    if render is not None:
        r = render.options
        opts.update({k: r[k] for k in ("audio", "text", "voice", "camera", "frame", "background", "pose") if k in r})
        if "resolution" in r:
            opts["drive_resolution"] = r["resolution"]
    return RunConfig(videos=tuple(subject.videos), out=out, quiet=True, **opts, **more)


#: render keys that are DriveConfig options of their own (not `talksplat run`'s)
DRIVE_ONLY = ("quality", "blinks", "seed", "mouth_amplitude", "arkit_csv")


def drive_config(subject: Subject, render: Render, subject_dir: Path, out: Path, **more):
    """The DriveConfig of ``render``: ``subject``'s avatar in ``subject_dir`` -> ``out`` (the MP4)."""
    from talksplat.run_command import _resolved

    cfg = run_config(subject, subject_dir, render, **more)
    _, _, drive = _resolved(cfg)
    return dataclasses.replace(drive, out=out, **{k: render.options[k] for k in DRIVE_ONLY if k in render.options})


def check_options_of(cfg) -> None:
    from talksplat.core.checks import check_options

    check_options(cfg, prefix="")
    if getattr(cfg, "preset", "fast") not in ("fast", "default", "quality"):
        from talksplat.core.errors import OptionError

        raise OptionError(f"preset {cfg.preset!r}: expected fast, default or quality")


def check_render_config(m: Manifest, render: Render) -> None:
    """A render's options as `talksplat drive` checks them (ranges, pose, camera, background)."""
    from talksplat.core.errors import OptionError
    from talksplat.driving.config import DriveConfig
    from talksplat.driving.drive import parse_background, parse_camera

    d = drive_config(m.subjects[render.subject], render, Path("."), Path("x.mp4"))
    check_options_of(d)
    hints = {f.name: f.type for f in dataclasses.fields(DriveConfig)}
    for k in ("pose", "frame", "quality", "mouth_amplitude"):
        allowed = _literal(hints[k])
        if allowed and getattr(d, k) not in allowed:
            raise OptionError(f"{k} {getattr(d, k)!r}: expected one of {', '.join(allowed)}")
    parse_camera(d.camera)
    parse_background(d.background, 16)


def _literal(hint) -> tuple:
    import typing

    if isinstance(hint, str):  # postponed annotations: read the Literal from the text
        found = re.search(r"Literal\[(.*)\]", hint)
        return tuple(x.strip().strip("\"'") for x in found.group(1).split(",")) if found else ()
    return typing.get_args(hint)
