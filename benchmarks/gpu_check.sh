#!/usr/bin/env bash
# Every check that needs a GPU, in one run, each step bounded in time:
#  1. the population benchmark on CUDA (JSON and a table);
#  2. the book's notebooks executed headlessly on CUDA with papermill (no HTML), with the
#     wall time of each notebook (build-report.json) and the FCDNN capacities.
# Usage on a GPU machine, from the project root, with the wheels of
# ../shared/device/fetch-wheels.sh in .whl/ (or an environment that has them):
#   PROFILE=quick OUT=/tmp/out bash benchmarks/gpu_check.sh
set -uo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 CAPQ_RESULTS_DIR=${CAPQ_RESULTS_DIR:-/tmp/capq-results}
out=${OUT:-/tmp/capq-gpu}
book=${BOOK_OUT:-/tmp/capq-gpu-book}
mkdir -p "$out"
python3 -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))"
echo "== population benchmark (cuda)"
timeout "${BENCH_TIMEOUT:-120}" python3 benchmarks/population.py --device cuda --json \
  --budget-s "${BENCH_BUDGET:-0.5}" > "$out/population-cuda.json" 2> "$out/bench.log"
grep '^#' "$out/bench.log"
echo "== notebooks on cuda (profile ${PROFILE:-quick})"
timeout "${BOOK_TIMEOUT:-200}" python3 -m capq_lib.report.cli build --profile "${PROFILE:-quick}" \
  --device cuda --execute-only --output "$book" >"$out/notebooks.log" 2>&1
status=$?
grep '^\[capq\]' "$out/notebooks.log" || true
cp "$book/_build/build-report.json" "$out/build-report.json" 2>/dev/null
python3 -m capq_lib.report.cli results fcdnn-capacity --profile "${PROFILE:-quick}" --format csv \
  > "$out/fcdnn-capacity.csv" 2>/dev/null && python3 - "$out/fcdnn-capacity.csv" <<'PY'
import sys, pandas as pd
d = pd.read_csv(sys.argv[1])
if len(d):
    print(d[["model", "params", "capacity_bits", "bits_per_param", "n_at_max", "p_at_max"]]
          .to_string(index=False))
PY
exit $status
