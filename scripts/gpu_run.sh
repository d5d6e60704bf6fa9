#!/usr/bin/env bash
# Runs on the GPU machine, from the repo root, over the bundle that scripts/gpu_bundle.sh made:
# the GPU summary, the chosen test binaries (gtest JSON), optional compute-sanitizer runs over a
# gtest filter, and the chosen benchmarks (JSON), then a short table of every step last.
# Results land in $OUT/run (/tmp/gpu_out/run when OUT is unset): at most 8 files, because that is
# all the device tool brings back; when there are more, the logs are packed into logs.tar.gz.
#
# Usage (every option also reads from the environment variable named after it):
#   bash scripts/gpu_run.sh [--tests LIST] [--filter F] [--sanitize TOOLS]
#       [--sanitize-tests LIST] [--sanitize-filter F] [--benches LIST] [--bench-args ARGS]
#       [--step-timeout S]
#   --tests            GPU_TESTS: comma-separated binaries of .bundle/bin, "none" for none;
#                      default every *_test there
#   --filter           GPU_FILTER: gtest filter for the tests (default *)
#   --test-args        GPU_TEST_ARGS: extra arguments for every test binary (e.g. --gtest_repeat=3)
#   --sanitize         GPU_SANITIZE: compute-sanitizer tools, e.g. memcheck,racecheck (default none)
#   --sanitize-tests   GPU_SANITIZE_TESTS: binaries the sanitizer runs (default cuda_backend_test)
#   --sanitize-filter  GPU_SANITIZE_FILTER: gtest filter under the sanitizer (default *)
#   --benches          GPU_BENCHES: comma-separated benchmarks, "none" for none; default every
#                      cuda_*bench* there. Each gets --json FILE, then the bench args.
#   --bench-args       GPU_BENCH_ARGS: extra arguments for every benchmark; BENCH_ARGS_<name>
#                      (name with - as _) adds arguments for one
#   --serve            GPU_SERVE: start .bundle/bin/scanserve_server with these arguments (e.g.
#                      "--port=50051 --backend=cuda"), wait for its health check, run the
#                      --serve-bench loads with scanctl against it, then stop it by its PID
#   --serve-bench      GPU_SERVE_BENCH: ';'-separated argument lists of `scanctl bench` (each gets
#                      --target and --json), e.g. "--op=linear_scan --shape=1,64,1024
#                      --concurrency=256 --duration=10s;--op=echo --payload_bytes=16777216"
#   --step-timeout     GPU_STEP_TIMEOUT: seconds any one step may run (default 240)
# Example, through the device tool:
#   run(command="bash scripts/gpu_run.sh --tests cuda_backend_test --benches none",
#       carry=[".bundle"])
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bundle=$PWD/.bundle
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

tests=${GPU_TESTS:-}
filter=${GPU_FILTER:-*}
test_args=${GPU_TEST_ARGS:-}
sanitize=${GPU_SANITIZE:-none}
sanitize_tests=${GPU_SANITIZE_TESTS:-cuda_backend_test}
sanitize_filter=${GPU_SANITIZE_FILTER:-*}
benches=${GPU_BENCHES:-}
bench_args=${GPU_BENCH_ARGS:-}
step_timeout=${GPU_STEP_TIMEOUT:-240}
serve=${GPU_SERVE:-}
serve_bench=${GPU_SERVE_BENCH:-}
while (($#)); do
  case $1 in
    --tests) tests=$2 ;;
    --filter) filter=$2 ;;
    --test-args) test_args=$2 ;;
    --sanitize) sanitize=$2 ;;
    --sanitize-tests) sanitize_tests=$2 ;;
    --sanitize-filter) sanitize_filter=$2 ;;
    --benches) benches=$2 ;;
    --bench-args) bench_args=$2 ;;
    --step-timeout) step_timeout=$2 ;;
    --serve) serve=$2 ;;
    --serve-bench) serve_bench=$2 ;;
    *)
      echo "gpu_run: unknown option $1 (see the header of $0)" >&2
      exit 2
      ;;
  esac
  shift 2 || { echo "gpu_run: $1 needs a value" >&2; exit 2; }
done

if [[ ! -d $bundle/bin && -f $bundle/bundle.tar.xz ]]; then
  if command -v xz >/dev/null; then
    tar -C "$bundle" -xJf "$bundle/bundle.tar.xz"
  else
    python3 -c 'import lzma, sys, tarfile; tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])' \
      "$bundle/bundle.tar.xz" "$bundle"
  fi
fi
[[ -d $bundle/bin ]] || { echo "gpu_run: no $bundle/bin; run scripts/gpu_bundle.sh and carry .bundle" >&2; exit 1; }
out=${OUT:-/tmp/gpu_out}/run
mkdir -p "$out"
summary=()
bench_logs=()

# Names in .bundle/bin matching a glob, comma-separated.
list_bin() {
  local names=() f
  for f in "$bundle"/bin/$1; do [[ -x $f ]] && names+=("$(basename "$f")"); done
  local IFS=,
  echo "${names[*]}"
}
[[ -z $tests ]] && tests=$(list_bin '*_test')
[[ -z $benches ]] && benches=$(list_bin 'cuda_*bench*')

# step NAME LOG CMD...: runs CMD under the step timeout, output to LOG and the console.
step_rc=0
step_secs=0
step() {
  local log=$2
  shift 2
  local t0=$SECONDS
  timeout -k 10 "$step_timeout" "$@" 2>&1 | tee "$log"
  step_rc=${PIPESTATUS[0]}
  step_secs=$((SECONDS - t0))
}

echo "== GPU"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv 2>&1 | tee "$out/gpu.txt"
else
  echo "nvidia-smi not found" | tee "$out/gpu.txt"
fi
date -u +"%Y-%m-%dT%H:%M:%SZ" >>"$out/gpu.txt"

# gtest JSON -> "tests passed failed skipped"; falls back to the log when python3 is missing.
gtest_counts() {
  local json=$1 log=$2
  if [[ -s $json ]] && command -v python3 >/dev/null; then
    python3 - "$json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
n = f = s = 0
for suite in d.get("testsuites", []):
    for t in suite.get("testsuite", []):
        n += 1
        if t.get("failures"):
            f += 1
        elif t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
            s += 1
print(n, n - f - s, f, s)
EOF
  else
    echo "? $(grep -c '^\[       OK \]' "$log") $(grep -c '^\[  FAILED  \]' "$log") $(grep -c '^\[  SKIPPED \]' "$log")"
  fi
}

IFS=, read -ra test_list <<<"$tests"
for t in "${test_list[@]}"; do
  [[ $t == none || -z $t ]] && continue
  if [[ ! -x $bundle/bin/$t ]]; then
    summary+=("$(printf '%-40s %-8s %s' "test $t" missing "-")")
    continue
  fi
  echo "== test $t (filter $filter)"
  # shellcheck disable=SC2086  # test_args is a word list on purpose
  step "test $t" "$out/$t.log" "$bundle/bin/$t" --gtest_filter="$filter" \
    --gtest_output=json:"$out/$t.json" --gtest_color=no $test_args
  read -r n p f s < <(gtest_counts "$out/$t.json" "$out/$t.log")
  status=$([[ $step_rc == 0 ]] && echo ok || echo "FAIL($step_rc)")
  summary+=("$(printf '%-40s %-8s %5ss  tests %s passed %s failed %s skipped %s' "test $t" "$status" "$step_secs" "$n" "$p" "$f" "$s")")
  grep '^\[  FAILED  \]' "$out/$t.log" | sort -u | head -20 | sed 's/^/    /' >>"$out/failures.txt"
done

if [[ $sanitize != none && -n $sanitize ]]; then
  sanitizer=$(command -v compute-sanitizer || true)
  if [[ -z $sanitizer ]]; then
    for c in /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer; do
      [[ -x $c ]] && { sanitizer=$c; break; }
    done
  fi
  IFS=, read -ra tools <<<"$sanitize"
  IFS=, read -ra san_list <<<"$sanitize_tests"
  for tool in "${tools[@]}"; do
    for t in "${san_list[@]}"; do
      name="sanitize $tool $t"
      if [[ -z $sanitizer ]]; then
        echo "== $name: compute-sanitizer not found (PATH, /usr/local/cuda*/bin)"
        summary+=("$(printf '%-40s %-8s %s' "$name" absent "compute-sanitizer not found")")
        continue
      fi
      echo "== $name (filter $sanitize_filter) with $sanitizer"
      log="$out/sanitize-$tool-$t.log"
      step "$name" "$log" "$sanitizer" --tool "$tool" --error-exitcode 86 --print-limit 50 \
        "$bundle/bin/$t" --gtest_filter="$sanitize_filter" --gtest_color=no
      found=$(grep -Eo '(ERROR|RACECHECK) SUMMARY: [0-9]+ [a-z]+' "$log" | tail -1)
      status=$([[ $step_rc == 0 ]] && echo clean || echo "FAIL($step_rc)")
      summary+=("$(printf '%-40s %-8s %5ss  %s' "$name" "$status" "$step_secs" "${found:-no summary line}")")
    done
  done
fi

IFS=, read -ra bench_list <<<"$benches"
for b in "${bench_list[@]}"; do
  [[ $b == none || -z $b ]] && continue
  if [[ ! -x $bundle/bin/$b ]]; then
    summary+=("$(printf '%-40s %-8s %s' "bench $b" missing "-")")
    continue
  fi
  var="BENCH_ARGS_${b//-/_}"
  # shellcheck disable=SC2086  # the argument strings are word lists on purpose
  echo "== bench $b $bench_args ${!var:-}"
  # shellcheck disable=SC2086
  step "bench $b" "$out/$b.log" "$bundle/bin/$b" --json "$out/$b.json" $bench_args ${!var:-}
  status=$([[ $step_rc == 0 ]] && echo ok || echo "FAIL($step_rc)")
  summary+=("$(printf '%-40s %-8s %5ss  json %s' "bench $b" "$status" "$step_secs" "$([[ -s $out/$b.json ]] && echo written || echo missing)")")
  bench_logs+=("$out/$b.log")
done

if [[ -n $serve ]]; then
  port=$(grep -Eo -- '--port=[0-9]+' <<<"$serve" | cut -d= -f2)
  target=localhost:${port:-50051}
  echo "== serve: scanserve_server $serve"
  # shellcheck disable=SC2086  # the server's arguments are a word list on purpose
  "$bundle/bin/scanserve_server" $serve >"$out/server.log" 2>&1 &
  server_pid=$!
  if "$bundle/bin/scanctl" health --wait --deadline_ms=60000 --target="$target" >>"$out/server.log" 2>&1; then
    summary+=("$(printf '%-40s %-8s %s' "serve" ok "pid $server_pid on $target")")
    "$bundle/bin/scanctl" info --target="$target" --json >"$out/server-info.json" 2>&1
    IFS=';' read -ra loads <<<"$serve_bench"
    n=0
    for load in "${loads[@]}"; do
      [[ -z ${load// /} ]] && continue
      n=$((n + 1))
      echo "== serve bench $n: scanctl bench $load"
      t0=$SECONDS
      # shellcheck disable=SC2086
      timeout -k 10 "$step_timeout" "$bundle/bin/scanctl" bench --target="$target" --json $load \
        >"$out/serve-bench-$n.json" 2>>"$out/server.log"
      step_rc=$?
      step_secs=$((SECONDS - t0))
      cat "$out/serve-bench-$n.json"
      status=$([[ $step_rc == 0 ]] && echo ok || echo "FAIL($step_rc)")
      summary+=("$(printf '%-40s %-8s %5ss  %s' "serve bench $n" "$status" "$step_secs" "$load")")
    done
  else
    summary+=("$(printf '%-40s %-8s %s' "serve" FAIL "no health within 60 s; see server.log")")
    tail -20 "$out/server.log"
  fi
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
fi

# The table last, where the device tool's output tail keeps it.
for log in "${bench_logs[@]}"; do
  [[ -f $log ]] || continue
  echo "== $(basename "$log" .log) (table)"
  if grep -q '^== table' "$log"; then
    sed -n '/^== table/,$p' "$log" | head -80
  else
    tail -40 "$log"
  fi
done
if [[ -s $out/failures.txt ]]; then
  echo "== failed tests"
  cat "$out/failures.txt"
fi
echo "== summary ($(head -2 "$out/gpu.txt" | tail -1 | cut -d, -f1))"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"

[[ -s $out/failures.txt ]] || rm -f "$out/failures.txt"
# The device tool brings back 8 files at most: pack the logs when there are more.
if (($(find "$out" -type f | wc -l) > 8)); then
  (cd "$out" && tar czf logs.tar.gz ./*.log && rm -f ./*.log)
fi
