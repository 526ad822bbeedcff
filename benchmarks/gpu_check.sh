#!/usr/bin/env bash
# Every check that needs a GPU, in one run: executes the book's notebooks headlessly on CUDA
# with papermill (no HTML) and prints each notebook's wall time.
# Usage on a GPU machine, from the project root, with the wheels of
# ../shared/device/fetch-wheels.sh in .whl/ (or an environment that has them):
#   PROFILE=quick bash benchmarks/gpu_check.sh
set -uo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 CAPQ_RESULTS_DIR=${CAPQ_RESULTS_DIR:-/tmp/capq-results}
out=${OUT:-/tmp/capq-gpu}
mkdir -p "$out"
python3 - <<'PY'
import torch
print("torch", torch.__version__, "| device", torch.cuda.get_device_name(0))
PY
python3 -m capq_lib.cli build --profile "${PROFILE:-quick}" --device cuda --execute-only \
  --output "${BOOK_OUT:-/tmp/capq-gpu-book}" 2>"$out/stderr.log"
status=$?
cp "${BOOK_OUT:-/tmp/capq-gpu-book}/_build/build-report.json" "$out/build-report.json" 2>/dev/null
python3 -m capq_lib.cli results fcdnn-capacity --profile "${PROFILE:-quick}" --format csv \
  > "$out/fcdnn-capacity.csv"
python3 - "$out/fcdnn-capacity.csv" <<'PY'
import sys, pandas as pd
d = pd.read_csv(sys.argv[1])
print(d[["model", "params", "capacity_bits", "bits_per_param", "n_at_max", "p_at_max"]]
      .to_string(index=False))
PY
exit $status
