#!/usr/bin/env bash
# The long CPU benchmarks, one after another (two torch jobs side by side slow each other ~10x).
# Each is resumable: finished arms are kept under bench/work and skipped, an interrupted arm
# resumes from its last checkpoint. Start it in the background and rerun it after an
# interruption; results land in bench/results/ when each benchmark completes.
#
#   nohup bash bench/queue.sh > bench/work/queue.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/work
exec 9> bench/work/queue.lock
flock -n 9 || { echo "bench/queue.sh is already running (bench/work/queue.lock)"; exit 1; }
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 PYTHONPATH=$PWD
step() { echo "[queue] $(date -u +%FT%TZ) $*"; "$@"; }
# shortest first, so each stop closes what it can; finished runs are kept in git and skipped
# issue 17: HyperCloning, MixtureGrowth and TokenFormer rows, 2 seeds; their reference rows
# (scratch, direct-width, direct-depth, tokenformer-scratch) run too, 14 runs in all
step "$PY" bench/operator_table.py --rows clone-width,mixture-growth,param-tokens --seeds 0 1 \
    --threads 2
step "$PY" bench/upcycle.py --seeds 0 1      # issue 16: upcycling at equal active FLOPs
step "$PY" bench/demo_seeds.py               # the demo's figures, 3 seeds + control
step "$PY" bench/compute_optimal.py          # issue 19: IsoFLOP + growth at N_opt, 3 seeds
# issue 19 item 0: tokens/s by width and precision, re-measured with nothing else running
step "$PY" bench/small_model_speed.py --results bench/results/small_model_speed_queue.json
echo "[queue] $(date -u +%FT%TZ) done"
