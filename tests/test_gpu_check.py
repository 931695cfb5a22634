"""`scripts/gpu_check.sh` and `talksplat bench gpu`: the parts that run without a GPU (argument handling, the
steps the script takes, the table fed with CPU figures and the CUDA code path through gsplat's torch reference)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

TINY = ["--gaussians", "1500", "--resolution", "48", "--batch", "1", "3", "--iters", "1", "--warmup", "0",
        "--fit-resolution", "48", "--fit-steps", "1", "--drive-resolution", "48", "--drive-seconds", "0.6",
        "--drive-per-face", "1", "--drive-batch", "4", "--encoder-frames", "5", "--viewer-resolution", "48",
        "--parity-gaussians", "400", "--parity-resolution", "40"]


def _script(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, **kw)


def test_gpu_check_script_steps_and_arguments(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "gsplat-1.5.3-py3-none-any.whl").write_bytes(b"")
    out = tmp_path / "out"
    r = _script("--dry-run", "--wheels", str(wheels), "--out", str(out), "--quick")
    assert r.returncode == 0, r.stderr
    steps = [line for line in r.stdout.splitlines() if line.startswith("== gpu_check:")]
    assert [s.split()[2] for s in steps] == ["1/4", "2/4", "3/4", "4/4"]
    lines = r.stdout.splitlines()
    # offline from the wheel folder only, the project itself editable without resolving pins
    assert any("pip install" in x and "--no-index" in x and str(wheels) in x and "gsplat-1.5.3" in x for x in lines)
    assert any("pip install" in x and "--no-build-isolation -e ." in x for x in lines)
    assert any("pytest -m cuda" in x and "tests/test_cuda.py" in x for x in lines)
    assert any("talksplat bench gpu --json" in x and "--gaussians 100000" in x for x in lines)
    assert not out.exists()  # a dry run writes nothing
    for bad, what in ((["--bogus"], "unknown argument '--bogus'"), (["--wheels", str(tmp_path / "no")], "no such folder"),
                      (["--out"], "--out needs a folder")):
        r = _script(*bad)
        assert r.returncode != 0 and what in r.stderr and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    r = _script("--help")
    assert r.returncode == 0 and "--wheels DIR" in r.stdout and "Exit status" in r.stdout
    assert "set -uo" not in r.stdout and r.stdout.rstrip().endswith("4 table).")  # the header, all of it
    ext = tmp_path / "ext"
    r = _script("--dry-run", "--extensions", str(ext))
    assert r.returncode == 0 and f"kept in {ext}" in r.stdout and not ext.exists()


def test_bench_gpu_table_on_the_cpu_with_the_cuda_code_path(tmp_path, monkeypatch, capsys):
    """Every row of the table from CPU figures; the parity row compares the CUDA code path (gsplat's own
    rasterization with torch kernels) with our CPU rasterizer."""
    from talksplat.cli import main
    from talksplat.render.gsplat_reference import REFERENCE_ENV

    monkeypatch.setenv(REFERENCE_ENV, "1")
    monkeypatch.setattr("talksplat.render.video.encode_jobs", lambda device: 2)  # as on a GPU machine's cores
    js = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--device", "cpu", "--json", str(js), *TINY]) == 0
    text = capsys.readouterr().out
    rows = json.loads(js.read_text())
    by = {r["what"].split(" ")[0].rstrip(":"): r for r in rows}
    assert not [r for r in rows if "error" in r or "skipped" in r], rows
    assert set(by) == {"device", "parity", "render", "fit", "drive", "encoder", "viewer"}
    assert by["parity"]["reference"] is True and 0 <= by["parity"]["value"] < 1e-3
    renders = [r for r in rows if r["what"].startswith("render")]
    assert [r["batch"] for r in renders] == [1]  # the CPU rasterizer: batch 1 only
    assert all(r["value"] > 0 for r in rows if "value" in r)
    assert by["fit"]["unit"] == "steps/s" and by["drive"]["frames"] == 15 and by["viewer"]["unit"] == "ms"
    encoders = [r for r in rows if r["what"].startswith("encoder")]
    assert [(r["preset"], r["crf"], r["jobs"]) for r in encoders] == [("veryfast", 16, 1), ("medium", 10, 1),
                                                                     ("veryfast", 16, 2)]
    assert encoders[2]["frames"] >= 200 and "2 encoders on segments" in encoders[2]["what"]
    assert all(r["psnr"] > 30 for r in encoders)  # decoded against the frames that went in (48 px: 34-37 dB)
    assert [r["what"] for r in renders] == ["render 1,500 Gaussians 48 px batch 1"]
    for word in ("parity", "render", "steps/s", "frames/s", "encoder", "viewer", "reference"):
        assert word in text, word


def test_bench_gpu_reports_a_failed_part_and_goes_on(tmp_path, monkeypatch):
    from talksplat.benchmarks import gpu_check
    from talksplat.benchmarks.config import BenchGpuConfig

    def broken(cfg, device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    monkeypatch.setattr(gpu_check, "viewer_row", broken)
    rows = gpu_check.bench_gpu(BenchGpuConfig(device="cpu", parts=("encoder", "viewer"), drive_resolution=32,
                                              encoder_frames=2))
    assert gpu_check.failed(rows) == ["viewer"]
    assert rows[-1]["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert rows[1]["what"].startswith("encoder") and rows[1]["value"] > 0
    assert "failed: RuntimeError" in gpu_check.rows_text(rows)
