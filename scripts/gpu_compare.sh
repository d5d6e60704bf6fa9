#!/usr/bin/env bash
# Runs on the GPU machine after scripts/gpu_run.sh has unpacked the bundle: times two or more
# builds of one benchmark against each other, in interleaved rounds (A B C, A B C, ...) so that
# clock and neighbour drift fall on every build alike, and keeps only the table lines, each
# prefixed with its binary and round.
#
# Usage: bash scripts/gpu_compare.sh "BIN_A BIN_B ..." ROUNDS [BENCH ARGS...]
#   BIN_*   binaries of .bundle/bin, e.g. a copy of cuda_selective_scan_bench built from the
#           commit before a change (bench_base) and the current one
#   ROUNDS  how many times each binary runs
# Example: bash scripts/gpu_compare.sh "bench_base cuda_selective_scan_bench" 2 --runs 50 --no-variants
# Writes $OUT/compare.txt (or /tmp/gpu_out/compare.txt) and prints the same rows.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
(($# >= 2)) || { sed -n 2,12p "$0"; exit 2; }
bins=$1
rounds=$2
shift 2
export LD_LIBRARY_PATH="$PWD/.bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader
for ((i = 1; i <= rounds; i++)); do
  for b in $bins; do
    # Table lines (the header and the result rows) start with a parenthesis; progress and floor
    # lines do not.
    ".bundle/bin/$b" "$@" 2>&1 | grep -E '^\(' | sed "s/^/$b r$i: /" | tee -a "$out/compare.txt"
  done
done
