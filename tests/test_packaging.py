"""The distribution installs everything under the one `talksplat` namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_has_only_the_talksplat_namespace(tmp_path):
    # setuptools reuses ./build/lib between builds: start clean so stale modules cannot hide.
    shutil.rmtree(REPO / "build", ignore_errors=True)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    shutil.rmtree(REPO / "build", ignore_errors=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("talksplat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"talksplat", wheel.name.split("-py3")[0] + ".dist-info"}, top
    for pkg in ("render", "rigs", "avatar", "fitting", "driving", "data_prep", "benchmarks", "viewer"):
        assert f"talksplat/{pkg}/__init__.py" in names
    for module in ("driving/drive.py", "driving/predictor.py", "fitting/lpips.py", "viewer/server.py",
                   "fit_command.py", "fitting/strategy/binding.py", "driving/config.py"):
        assert f"talksplat/{module}" in names, module
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert "talksplat = talksplat.cli:entry" in zipfile.ZipFile(wheel).read(entry[0]).decode()


def test_subpackages_import_from_the_namespace():
    import talksplat.avatar
    import talksplat.render
    import talksplat.rigs

    assert Path(talksplat.render.__file__).parent == REPO / "render"
    assert Path(talksplat.rigs.__file__).parent == REPO / "rigs"
    assert Path(talksplat.avatar.__file__).parent == REPO / "avatar"
