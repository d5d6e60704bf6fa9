#!/usr/bin/env bash
# Runs on the GPU machine, from the repo root, over the bundle that scripts/gpu_bundle.sh made:
# everything the selective scan's issue asks of a build, in one call, so that a session whose
# device time is short spends it on one machine start:
#   1. cuda_selective_scan_test and the selective cases of cuda_backend_test, then memcheck and
#      racecheck over SelectiveScanTest.* and SelectiveScanDispatch.* (scripts/gpu_run.sh);
#   2. every operation and dtype over gRPC from the CUDA backend (scripts/gpu_service_check.sh);
#   3. cuda_selective_scan_bench with BENCH ARGS (default: --runs 50 --no-variants, the goal table).
# Logs land in $OUT/selective (/tmp/gpu_out/selective when OUT is unset); a short summary is
# printed last. Exit status: 1 when any step failed.
#
# Usage: bash scripts/gpu_selective_check.sh [BENCH ARGS...]
# Bundle: BUNDLE_ONLY='^(cuda_backend_test|cuda_selective_scan_test|cuda_selective_scan_bench|
#         scanserve_server|scanctl)$' bash scripts/gpu_bundle.sh build-cuda
# Example, through the device tool, timing shapes around (1, 5120) as well:
#   run(command="bash scripts/gpu_selective_check.sh --runs 50 --no-variants
#       --shape 1,4224,16,2048,bfloat16 --shape 1,5120,16,2048,bfloat16", carry=[".bundle"])
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp/gpu_out}/selective
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/.bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
(($#)) || set -- --runs 50 --no-variants
status=0

OUT="$out" bash scripts/gpu_run.sh --tests cuda_selective_scan_test,cuda_backend_test \
  --filter '*Selective*' --sanitize memcheck,racecheck --sanitize-tests cuda_selective_scan_test \
  --sanitize-filter 'SelectiveScanTest.*:SelectiveScanDispatch.*' --benches none \
  >"$out/tests.log" 2>&1 || status=1

if [[ -x .bundle/bin/scanserve_server && -x .bundle/bin/scanctl ]]; then
  timeout 300 bash scripts/gpu_service_check.sh --server .bundle/bin/scanserve_server \
    --scanctl .bundle/bin/scanctl --backend cuda >"$out/service.log" 2>&1 || status=1
else
  echo "scanserve_server or scanctl is not in .bundle/bin" >"$out/service.log"
  status=1
fi

if [[ -x .bundle/bin/cuda_selective_scan_bench ]]; then
  timeout 300 .bundle/bin/cuda_selective_scan_bench "$@" >"$out/bench.txt" 2>&1 || status=1
else
  echo "cuda_selective_scan_bench is not in .bundle/bin" >"$out/bench.txt"
  status=1
fi

gpu=$(nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader 2>/dev/null | head -1)
echo "== selective check on ${gpu:-no GPU (nvidia-smi failed)}"
echo "-- tests and sanitizers ($out/tests.log):"
tail -n 12 "$out/tests.log"
echo "-- gRPC ($out/service.log):"
tail -n 1 "$out/service.log"
echo "-- bench ($out/bench.txt):"
grep -E '^(\(|device|measured)' "$out/bench.txt" || tail -n 5 "$out/bench.txt"
exit "$status"
