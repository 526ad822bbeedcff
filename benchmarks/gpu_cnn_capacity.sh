#!/usr/bin/env bash
# GPU checks for the CNN capacity chapter, in one bounded run:
#  1. the population benchmark on CUDA (JSON, and a table in bench.log);
#  2. Table-1 CNNs memorizing under several training lengths and batch counts, one process
#     per model side by side (each population is launch-bound, so they share the GPU),
#     one JSON line per population in cnn-MODEL.jsonl and a summary line each in cnn.log.
#   OUT=/tmp/out bash benchmarks/gpu_cnn_capacity.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
out=${OUT:-/tmp/capq-gpu}
limit=${TRACK_TIMEOUT:-400}
mkdir -p "$out"
python3 -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))"
echo "== population benchmark (cuda)"
timeout "${BENCH_TIMEOUT:-60}" python3 benchmarks/population.py --device cuda --json \
  --family all --quick --budget-s "${BENCH_BUDGET:-0.2}" > "$out/population-cuda.json" \
  2> "$out/bench.log"
grep '^#' "$out/bench.log"
echo "== Table-1 CNNs (each track at most $limit s)"
track() {  # model, runs, N/P ratios, lrs
  timeout "$limit" python3 benchmarks/cnn_training_length.py --device cuda --model "$1" \
    --runs "$2" --n-per-param "$3" --lrs "$4" --seeds 2 > "$out/cnn-$1.jsonl" 2>> "$out/cnn.log"
}
track A 32:600,64:300,128:150,256:75,128:400 2.0,2.25,2.5,2.75 0.001,0.002,0.003,0.005 &
track D 64:150,128:150,128:400 1.8,2.05,2.3,2.6 0.001,0.002,0.003 &
track B 128:400 2.25,2.5,2.75,3.0,3.25 0.001,0.002 &
wait
grep '^#' "$out/cnn.log"
