#!/usr/bin/env bash
# Runs on the GPU machine after scripts/gpu_run.sh has unpacked the bundle: profiles one kernel
# launch of each named benchmark case with Nsight Compute and keeps the text reports (speed of
# light, memory, warp stalls, launch and occupancy), one file per case, packed into one archive.
#
# Usage: bash scripts/gpu_ncu.sh BENCH KERNEL_REGEX CASE [CASE...]
#   BENCH         a benchmark binary of .bundle/bin taking --only SUBSTRING and --runs N
#                 (cuda_scan_bench, cuda_selective_scan_bench)
#   KERNEL_REGEX  which kernels ncu profiles, e.g. 'LinearScanKernel|AssociativeScanKernel'
#   CASE          a substring of a benchmark case name, e.g. 'linear bf16 (8,1536,65536)'
# NCU_SOURCE=1 also writes sass-I.csv per case: the SASS with executed instructions and stall samples.
# NCU_METRICS=1 also writes metrics-I.txt per case: pipe utilization (exp2/XU, LSU, FMA), shared-
# memory wavefronts, issue activity and the average cycles per warp in each stall reason.
# Writes $OUT/ncu.tar.gz (or /tmp/gpu_out/ncu.tar.gz) and prints each report's summary lines.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
(($# >= 3)) || { sed -n 2,14p "$0"; exit 2; }
bench=$1
kernels=$2
shift 2
export LD_LIBRARY_PATH="$PWD/.bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp/gpu_out}
work=$(mktemp -d)
i=0
for c in "$@"; do
  i=$((i + 1))
  report="$work/ncu-$i.txt"
  echo "== $c" | tee "$report"
  # The bench's warm-ups come first; skipping a few launches profiles a steady-state one. Clocks
  # stay as the machine set them (the device notes ask for --clock-control none).
  timeout 240 ncu --clock-control none -k "regex:$kernels" --launch-skip 3 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section LaunchStats --section Occupancy --section ComputeWorkloadAnalysis \
    --section InstructionStats \
    ".bundle/bin/$bench" --only "$c" --runs 5 >>"$report" 2>&1
  echo "rc=$?" >>"$report"
  # Per-instruction counts and stall samples of the SASS, for finding where a kernel's issue slots go.
  if [[ ${NCU_SOURCE:-0} == 1 ]]; then
    timeout 240 ncu --clock-control none -k "regex:$kernels" --launch-skip 3 --launch-count 1 \
      --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
      ".bundle/bin/$bench" --only "$c" --runs 5 >"$work/sass-$i.csv" 2>&1
    echo "sass rc=$? lines=$(wc -l <"$work/sass-$i.csv")" >>"$report"
  fi
  # Which pipe or stall bounds a kernel, in numbers the sections above do not print.
  if [[ ${NCU_METRICS:-0} == 1 ]]; then
    stalls=short_scoreboard,wait,barrier,mio_throttle,long_scoreboard,math_pipe_throttle,not_selected,selected,dispatch_stall
    metrics=smsp__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active
    metrics+=,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active
    metrics+=,smsp__inst_executed.sum,gpu__time_duration.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum
    metrics+=,l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed
    for st in ${stalls//,/ }; do metrics+=,smsp__average_warp_latency_issue_stalled_$st.ratio; done
    timeout 240 ncu --clock-control none -k "regex:$kernels" --launch-skip 3 --launch-count 1 \
      --metrics "$metrics" ".bundle/bin/$bench" --only "$c" --runs 5 2>&1 |
      grep -E '^ +[a-z_0-9]+__' | sed 's/  */ /g' >"$work/metrics-$i.txt"
    cat "$work/metrics-$i.txt"
  fi
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|Executed Ipc A|Warp Cycles Per Issued|Stall|rc=" \
    "$report" | head -40
done
mkdir -p "$out"
tar czf "$out/ncu.tar.gz" -C "$work" .
rm -rf "$work"
