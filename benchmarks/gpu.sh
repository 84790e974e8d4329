#!/usr/bin/env bash
# The GPU check in one command, sized for < 8 minutes on a fresh H200 machine: the parity tests on cuda, then
# benchmarks/gpu.py (network per batch and precision, eager and compiled, the peer port, whole photos, a 10 s
# video, training steps per stage) as one Markdown table on stdout and in $OUT/gpu_table.md.
#
#   benchmarks/gpu.sh              # on the GPU machine, from the repository root
#   benchmarks/gpu.sh --dry-run    # anywhere, on the CPU: a tiny network, every step of the script
#
# That machine reaches no package registry. The script therefore uses the machine's own python3 (CUDA torch,
# numpy, opencv, pytest, ... are there; set PYTHON to use another), our code from src/ on PYTHONPATH (nothing to
# build), and installs whatever wheels were carried in .whl/ (spandrel for the peer rows, PyAV for the video row,
# fastapi & co. for the serve tests; docs/benchmarks.md gives the download command) into a folder of its own.
# Without them the peer rows say "not run", the video row times the face work of the frames in memory (no
# decode/encode), and those tests are left out (the script says which).
# The parity kit and the sample data must be beside the checkout (../shared) or copied into it (./shared,
# git-ignored; docs/benchmarks.md says how).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-results/gpu}
mkdir -p "$OUT_DIR"
START=$(date +%s)
say() { echo "[gpu.sh $(( $(date +%s) - START )) s] $*" >&2; }

# 1. environment
SITE=$(mktemp -d /tmp/codeformer-gpu-site.XXXXXX)
if compgen -G ".whl/*.whl" >/dev/null; then
  say "installing carried wheels: $(ls .whl | tr '\n' ' ')"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || say "wheel install failed"
fi
export PYTHONPATH="$PWD/src:$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -d ../shared ] && [ -d shared ]; then ln -s "$PWD/shared" ../shared; fi
[ -f ../shared/parity/reference.npz ] || say "WARNING: no parity kit at ../shared/parity (tests will fail)"
"$PY" - <<'EOF' >&2
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))
EOF

# 2. tests on the device: parity, the GPU paths, the runtime; pipeline/video/serve when their packages are here
TESTS="tests/test_parity.py tests/test_gpu_paths.py tests/test_runtime.py"
"$PY" -c "import dlib, face_recognition_models" 2>/dev/null && TESTS="$TESTS tests/test_pipeline.py"
"$PY" -c "import av" 2>/dev/null && TESTS="$TESTS tests/test_video.py"
"$PY" -c "import fastapi, httpx, multipart" 2>/dev/null && TESTS="$TESTS tests/test_serve.py"
if [ $DRY = 1 ]; then
  DEVICE=cpu; TESTS="tests/test_runtime.py"; TEST_LIMIT=300; BENCH="--tiny --budget-s 300"; BENCH_LIMIT=600
else
  DEVICE=cuda; TEST_LIMIT=120; BENCH="--budget-s 290"; BENCH_LIMIT=360
fi
say "tests on $DEVICE: $TESTS"
CODEFORMER_TEST_DEVICE=$DEVICE timeout $TEST_LIMIT "$PY" -m pytest -q -p no:cacheprovider $TESTS \
  2>&1 | tee "$OUT_DIR/tests.log" | tail -n 25 >&2
TESTS_RC=${PIPESTATUS[0]}
say "tests exit code $TESTS_RC"

# 3. the table (gpu.py rewrites $OUT_DIR/gpu_table.md after each section, so a timeout still leaves one)
timeout $BENCH_LIMIT "$PY" benchmarks/gpu.py --device $DEVICE $BENCH --out "$OUT_DIR/gpu_table.md" \
  2> >(tee "$OUT_DIR/gpu_bench.log" >&2) >/dev/null
BENCH_RC=$?
say "benchmark exit code $BENCH_RC"
[ -f "$OUT_DIR/gpu_table.md" ] && cat "$OUT_DIR/gpu_table.md"
echo
echo "tests: exit $TESTS_RC ($TESTS on $DEVICE); benchmark: exit $BENCH_RC; $(( $(date +%s) - START )) s in all"
rm -rf "$SITE"
[ $TESTS_RC = 0 ] && [ $BENCH_RC = 0 ]
