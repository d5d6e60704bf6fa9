#!/usr/bin/env bash
# Sanitizer builds of a subset of the tests, each in its own build dir:
#   address: ASan + UBSan (build-asan): the server, client and CPU backend tests, the fuzz
#            corpus replay and the cancellation fault test;
#   thread:  TSan (build-tsan): batcher, executor, metrics and the CPU backend with its thread pool.
#            The gRPC tests are left out: the system's gRPC is not instrumented, and its lock-free
#            internals (and the grpc++ header code inlined into ours that relies on them) make TSan
#            report races by the hundred that are not ours. TSan sees Abseil's mutexes through
#            tests/fault/tsan_absl_sync.cc.
# Usage: scripts/ci_sanitize.sh [address|thread|all]   (default all). Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
jobs=${JOBS:-$(nproc)}
scripts/install_deps.sh

asan_tests=(batcher_test executor_test metrics_test validation_test integration_test
  client_tensor_test client_test scanctl_test cpu_backend_test cpu_internals_test reference_test
  fuzz_replay_test cancel_test)
tsan_tests=(batcher_test executor_test metrics_test cpu_backend_test cpu_internals_test)

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

# run_one <address|thread> <build dir> <tests...>
run_one() {
  local kind=$1 dir=$2
  shift 2
  local start built
  start=$(date +%s)
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSCANSERVE_SANITIZE="$kind" \
    -DSCANSERVE_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
  cmake --build "$dir" -j"$jobs" --target "$@"
  built=$(date +%s)
  local regex
  regex="^($(IFS='|'; echo "$*"))\$"
  # halt_on_error / exitcode: a report fails the test even where the code under test would go on.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
    LSAN_OPTIONS="suppressions=$PWD/tests/fault/lsan.supp:print_suppressions=0" \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    TSAN_OPTIONS="suppressions=$PWD/tests/fault/tsan.supp:halt_on_error=1:second_deadlock_stack=1:exitcode=66" \
    ctest --test-dir "$dir" -R "$regex" -j"$jobs" --output-on-failure --timeout 1800
  echo "ci_sanitize: $kind: build $((built - start)) s, tests $(($(date +%s) - built)) s"
}

if [[ $which == address || $which == all ]]; then
  run_one address "${ASAN_BUILD_DIR:-build-asan}" "${asan_tests[@]}"
fi
if [[ $which == thread || $which == all ]]; then
  run_one thread "${TSAN_BUILD_DIR:-build-tsan}" "${tsan_tests[@]}"
fi
