"""`talksplat eval sync`: bad input gives one line naming the file and writes nothing (small synthetic inputs).

The measurement itself on real recordings: tests/test_readme.py (test_eval_sync_on_the_readme_avatar); its
figures: tests/test_sync_metrics.py.
"""

from __future__ import annotations

import subprocess

import pytest

from talksplat.cli import main
from talksplat.core.ffmpeg import ffmpeg_exe


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input_names_the_file_and_writes_nothing(small_inputs, tmp_path, capsys):
    fit, out = small_inputs.fit, tmp_path / "eval"
    missing = tmp_path / "missing.mp4"
    assert main(["eval", "sync", str(fit), str(missing), "--out", str(out), "--quiet"]) == 1
    assert str(missing) in _error(capsys)

    silent = tmp_path / "silent.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(small_inputs.clip), "-an", "-c:v", "copy", str(silent)],
                   check=True)
    assert main(["eval", "sync", str(fit), str(silent), "--out", str(out), "--quiet"]) == 1
    line = _error(capsys)
    assert str(silent) in line and "no audio track" in line

    # a test pattern with a tone: readable, with audio, but no face
    assert main(["eval", "sync", str(fit), str(small_inputs.clip), "--out", str(out), "--quiet"]) == 1
    line = _error(capsys)
    assert str(small_inputs.clip) in line and "no face found" in line

    assert main(["eval", "sync", str(tmp_path / "nofit"), str(small_inputs.clip), "--out", str(out), "--quiet"]) == 1
    assert "nofit" in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent.mp4"]  # no output, no partial folder, no lock


def test_the_output_is_never_an_input(small_inputs, tmp_path, capsys):
    assert main(["eval", "sync", str(small_inputs.fit), str(small_inputs.clip), "--out", str(small_inputs.root),
                 "--quiet"]) == 1
    assert "input" in _error(capsys)


@pytest.mark.parametrize("argv", [["eval"], ["eval", "sync"]])
def test_eval_needs_its_arguments(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code != 0
