#!/usr/bin/env bash
# A GPU sitting (benchmarks/results/2026-11-26-0000-h200-gpu.md is the last one) in one go, on
# a machine whose JAX sees an NVIDIA GPU (`pip install -e ".[gpu]"`) and whose PyTorch has CUDA:
#
#   1. facts: the GPU, the driver, the packages;
#   2. the tests that exercise the numerics (BatchNorm against the reference conventions, the
#      N-seed program against N single runs, the real-data end-to-end run), on the GPU;
#   3. `bnlab seed --seeds 5` twice, with an empty then a warm compilation cache (time -v);
#   4. benchmarks/epoch_speed.py --device gpu: bnlab and PyTorch eager on CUDA, side by side;
#   5. benchmarks/seed_batching.py: per-model-epoch cost of N seeds in one program.
#
#   bash benchmarks/gpu_sitting.sh OUT_DIR        (PYTHON=python3 by default)
#
# Each step has its own time limit and log in OUT_DIR; a failed step does not stop the next.
set -u
out=${1:?usage: bash benchmarks/gpu_sitting.sh OUT_DIR}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cache=$(mktemp -d)   # bnlab's cache (compiled programs) starts empty
runs=$(mktemp -d)

step() {  # step NAME SECONDS COMMAND...: run it, log to OUT_DIR/NAME.log, print its tail
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name ($(date +%T)): $*"
    start=$(date +%s%N)
    timeout "$limit" "$@" >>"$out/$name.log" 2>&1
    rc=$?
    echo "   exit $rc after $(( ($(date +%s%N) - start) / 1000000 )) ms"
    tail -n "${TAIL:-25}" "$out/$name.log"
}

step facts 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  $py -c 'import jax, jaxlib, torch; print(\"jax\", jax.__version__, \"jaxlib\", jaxlib.__version__,
  jax.devices(), \"torch\", torch.__version__, torch.cuda.get_device_name(0))'"
TAIL=8 step tests 150 "$py" -m pytest -q -p no:cacheprovider --maxfail=10 tests/nn tests/train \
  tests/experiments/test_seed_realdata.py
for run in cold warm; do
  TAIL=12 step seed 90 /usr/bin/time -v "$py" -m bnlab.cli seed --seeds 5 \
    --cache-dir "$cache" --runs-dir "$runs"
  grep -E "Elapsed|Maximum resident" "$out/seed.log" | tail -n 2
done
TAIL=30 step epoch_speed 240 "$py" benchmarks/epoch_speed.py --device gpu --engines bnlab,torch \
  --python "bnlab=$(command -v "$py")" --python "torch=$(command -v "$py")" \
  --epochs 3 --repeats 2 --out "$out"
TAIL=20 step seed_batching 150 "$py" benchmarks/seed_batching.py --models baseline,bn_after \
  --seeds 5,10,50 --repeats 2 --layouts bnlab,vmap,"vmap by 5"
rm -rf "$cache" "$runs"
