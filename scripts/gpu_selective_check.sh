#!/usr/bin/env bash
# Runs on the GPU machine, from the repo root, over the bundle that scripts/gpu_bundle.sh made:
# everything the selective scan's issue asks of a build, in one call, so that a session whose
# device time is short spends it on one machine start:
#   1. cuda_selective_scan_test and the selective cases of cuda_backend_test, then memcheck and
#      racecheck over SelectiveScanTest.* and SelectiveScanDispatch.*, then cuda_selective_scan_bench
#      with BENCH ARGS (default: --runs 50 --no-variants, the goal table), all through
#      scripts/gpu_run.sh;
#   2. every operation and dtype over gRPC from the CUDA backend (scripts/gpu_service_check.sh).
# Logs land in $OUT/selective (/tmp/gpu_out/selective when OUT is unset); gpu_run's bench table and
# step summary, then the gRPC count, are printed last. Exit status: 1 unless every step of
# gpu_run's summary is ok or clean (a sanitizer that is absent counts as a failure) and every
# gRPC request passed.
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
  --sanitize-filter 'SelectiveScanTest.*:SelectiveScanDispatch.*' \
  --benches cuda_selective_scan_bench --bench-args "$*" >"$out/run.log" 2>&1
# gpu_run always exits 0: its summary holds each step's status, the third field of test and bench
# lines and the fourth of sanitize lines.
if [[ ! -s $out/run/summary.txt ]] ||
  awk '$1 == "test" || $1 == "bench" { st = $3 } $1 == "sanitize" { st = $4 }
       st !~ /^(ok|clean)$/ { bad = 1 } END { exit !bad }' "$out/run/summary.txt"; then
  status=1
fi

if [[ -x .bundle/bin/scanserve_server && -x .bundle/bin/scanctl ]]; then
  timeout 300 bash scripts/gpu_service_check.sh --server .bundle/bin/scanserve_server \
    --scanctl .bundle/bin/scanctl --backend cuda >"$out/service.log" 2>&1 || status=1
else
  echo "scanserve_server or scanctl is not in .bundle/bin" >"$out/service.log"
  status=1
fi

gpu=$(nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader 2>/dev/null | head -1)
echo "== selective check on ${gpu:-no GPU (nvidia-smi failed)}"
if grep -q '^== cuda_selective_scan_bench (table)' "$out/run.log"; then
  sed -n '/^== cuda_selective_scan_bench (table)/,$p' "$out/run.log"
else
  tail -n 12 "$out/run.log"
fi
echo "== gRPC ($out/service.log)"
tail -n 1 "$out/service.log"
exit "$status"
