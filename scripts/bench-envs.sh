#!/usr/bin/env bash
# Create the two reference-engine environments of benchmarks/epoch_speed.py, each only once:
#   .venv-keras  tensorflow-cpu (Keras 3 as tf.keras) + numpy   -> benchmarks/engines/keras_notebook.py
#   .venv-torch  torch==2.13.0 (the CPU wheel) + numpy           -> benchmarks/engines/torch_eager.py
# A stamp file inside each venv marks it complete; delete the venv to rebuild it.
# PYTHON picks the interpreter (3.11 is what the tensorflow-cpu wheels are chosen for).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TF_SPEC=${TF_SPEC:-tensorflow-cpu==2.21.0}
TORCH_SPEC=torch==2.13.0  # the CPU wheel; any other version pulls gigabytes of CUDA libraries

make_env() {  # make_env DIR PACKAGE...
  local dir=$1; shift
  local stamp="$dir/.bench-env"
  if [ -f "$stamp" ]; then
    echo "bench-envs: $dir ready ($(cat "$stamp"))" >&2
    return
  fi
  echo "bench-envs: creating $dir with $*" >&2
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$dir/bin/python" -m pip install -q "$@"
  echo "$*" >"$stamp"
}

make_env .venv-keras "$TF_SPEC" numpy
make_env .venv-torch "$TORCH_SPEC" numpy
