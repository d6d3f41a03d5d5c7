#!/usr/bin/env bash
# The GPU benchmark in one call on a lent H100/H200 box (no internet; its image has jax, flax,
# optax, orbax, torch, torchvision but not the data stack). Why one script: device time is
# scarce, so everything that must be measured side by side runs in one prepared command.
#
# Here, beforehand (PyPI reachable):   bash bench/gpu/fetch_wheels.sh     # -> .whl/, ~13 MiB
# On the box (device tool `run`, carry [".whl"], timeout_s 600):
#   bash bench/gpu/run.sh
# Writes to $OUT (else /tmp/ichflax-bench): env.txt, loader.json, train.json, profile.json,
# log.txt. Order = priority, each step bounded, so a slow step cannot eat the later ones:
#   1. install carried wheels, record the machine (~15 s)
#   2. build the phantom TFDS dataset (4096 slices, 256 px; ~30 s) and time the loader (~60 s)
#   3. train throughput: 224 px batch 256 bf16, paper then full, ichflax (compute, end to end: new loop and old loop)
#      and torchvision (eager, torch.compile) side by side; then batch 128, then 128 px, while
#      BENCH_TRAIN_BUDGET_S (default 240 s) lasts
#   4. cost analysis + HLO census of the bf16 steps (paper first), in whatever time is left
# Each benchmark rewrites its JSON after every row, so one cut short keeps what it measured.
# Total stays under ~9 minutes (BENCH_TOTAL_S, default 540). BENCH_SMOKE=1 runs the same steps at
# CI size (a check of this script on a CPU machine; no wheels installed there).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ichflax-bench}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
TOTAL=${BENCH_TOTAL_S:-540}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 GRADIO_ANALYTICS_ENABLED=False
export ICHFLAX_DATA_DIR=${ICHFLAX_DATA_DIR:-/tmp/ichflax-data}
# jax and torch share the card in one process: jax grows on demand, up to 45% of the memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
exec > >(tee -a "$OUT/log.txt") 2>&1

left() { echo $((TOTAL - SECONDS)); }

SMOKE=${BENCH_SMOKE:-}
if [ -n "$SMOKE" ]; then
  echo "BENCH_SMOKE: CI sizes, carried wheels not installed"
elif compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no .whl/ carried: run bench/gpu/fetch_wheels.sh here and carry .whl"
fi

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>&1
  echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
  "$PY" - <<'EOF'
import importlib.metadata as m
import jax, torch
for n in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
          "numpy", "torch", "torchvision"):
  try:
    print(n, m.version(n))
  except m.PackageNotFoundError:
    print(n, "MISSING")
print("jax devices:", jax.devices())
print("torch cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} 2>&1 | tee "$OUT/env.txt"

echo "== loader ($(left) s left)"
timeout 120 "$PY" bench/loader_throughput.py --stored-size 256 --phantom-num 4096 \
  --batch-size 256 --workers 0 8 --threads 2 16 --batches 8 --repeats 3 --records 512 \
  ${SMOKE:+--smoke --phantom-num 64} --json "$OUT/loader.json" || echo "loader benchmark failed or timed out (rc $?)"

echo "== train ($(left) s left)"
BUDGET=${BENCH_TRAIN_BUDGET_S:-240}
timeout $(( $(left) - 60 )) "$PY" bench/train_throughput.py --stored-size 256 \
  --phantom-num 4096 --recipe paper full --image-size 224 128 --batch-sizes 256 128 \
  --dtype bf16 --steps 10 --repeats 5 --warmup 3 --e2e-steps 30 --loader-threads 16 \
  --time-budget "$BUDGET" ${SMOKE:+--smoke --phantom-num 64} --json "$OUT/train.json" \
  || echo "train benchmark failed or timed out (rc $?)"

echo "== profile ($(left) s left)"
if [ "$(left)" -gt 60 ]; then
  timeout $(( $(left) - 10 )) "$PY" bench/step_profile.py --image-size 224 --batch-size 256 \
    --dtypes bf16 --recipes paper full --no-donation --no-breakdown ${SMOKE:+--smoke} \
    --json "$OUT/profile.json" \
    || echo "profile failed or timed out (rc $?)"
fi
echo "== done in ${SECONDS} s"
