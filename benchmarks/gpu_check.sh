#!/usr/bin/env bash
# Every GPU measurement of the speed issue in one call (at most 7.5 minutes: each stage has a
# time limit, and rows print as they finish):
# the GPU-only tests, training steps/s and peak memory per variant, sampling images/s per
# solver and variant, and the likelihood per precision. Tables go to stdout and to $OUT (or
# ./gpu_results). QUICK=1 runs the same steps as a CPU smoke test.
#
# The device machine lacks torchsde and ml_collections: carry them as wheels in .whl/ (see the
# device tool's README); this script installs them when .whl/ exists.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_results}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
quick=(); [ "${QUICK:-0}" = 1 ] && quick=(--quick)
run() {  # name, timeout in seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
run gpu_tests 60 python3 -m pytest -q -p no:cacheprovider tests/test_graphed.py tests/test_no_host_sync.py
run train 150 python3 benchmarks/train_throughput.py "${quick[@]}" --configs vp_cifar --steps 30 \
  --variants fp32 bf16+cl bf16+cl+compile
run sampling 240 python3 benchmarks/sampling_throughput.py "${quick[@]}" --long-steps 50 \
  --solvers 'pc 1000 (rd+langevin)' 'pc 1000 (em, no corrector)' 'dpm++ 3M 20' 'unipc bh2-3 20' \
  --variants tf32 bf16+graphs bf16+compile+graphs --likelihood-variants fp32 fp16 bf16
