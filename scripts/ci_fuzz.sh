#!/usr/bin/env bash
# Builds the request fuzzer (tests/fuzz) with clang, libFuzzer, ASan and UBSan into
# ${BUILD_DIR:-build-fuzz} and runs it for ${FUZZ_SECONDS:-90} seconds from the seed corpus (valid
# requests of every op, written by make_seed_corpus) plus tests/fuzz/regressions. Exits non-zero on
# any finding; the input is left in <build>/fuzz-artifacts/ and belongs in tests/fuzz/regressions/
# once the bug is fixed, where fuzz_replay_test replays it in every build.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-90}

packages=(clang-14 libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi
scripts/install_deps.sh

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
start=$(date +%s)
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSCANSERVE_FUZZ=ON -DSCANSERVE_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build "$build_dir" -j"${JOBS:-$(nproc)}" --target request_fuzzer make_seed_corpus
built=$(date +%s)

seeds="$build_dir/fuzz-seeds"
corpus="$build_dir/fuzz-corpus"
artifacts="$build_dir/fuzz-artifacts"
rm -rf "$seeds"
mkdir -p "$corpus" "$artifacts"
"$build_dir/tests/fuzz/make_seed_corpus" "$seeds"
log="$build_dir/fuzz.log"
# -timeout: one input past 10 s is a hang; -rss_limit_mb: past 2 GiB is a memory blow-up. New
# inputs go to $corpus (kept between runs of this build dir).
status=0
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$build_dir/tests/fuzz/request_fuzzer" -max_total_time="$seconds" -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
  "$corpus" "$seeds" tests/fuzz/regressions >"$log" 2>&1 || status=$?
tail -n 25 "$log"
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -n 1 || echo "corp: ?")
findings=$(find "$artifacts" -type f | wc -l)
echo "ci_fuzz: build $((built - start)) s, fuzzing ${seconds} s: $execs executions, $corp," \
  "$(ls "$seeds" | wc -l) seeds, $findings findings in $artifacts"
if ((status != 0 || findings > 0)); then
  echo "ci_fuzz: FAILED (exit $status); reproduce with $build_dir/tests/fuzz/request_fuzzer <file>"
  exit 1
fi
