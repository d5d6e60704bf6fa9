#!/usr/bin/env bash
# Service-level benchmark: starts scanserve_server on loopback and drives it with `scanctl bench`.
#  1. small requests (1,64,1024) fp32 linear_scan at concurrency 1, 16 and 256, with the default
#     batching and with --max_batch_requests=1 (one request per backend call);
#  2. 16 MiB requests (linear_scan (1,1,2^21) fp32: a and x in, y out) next to an Echo RPC of
#     16 MiB each way, the transport's own ceiling on this host.
# Prints one table; with OUT set, writes each run's JSON under $OUT/service_bench/.
#
# Usage: scripts/service_bench.sh --server PATH --scanctl PATH [--backend cpu|cuda|auto]
#                                 [--duration 10s] [--port 50061]
set -euo pipefail

server=
scanctl=
backend=auto
duration=10s
port=50061
while (($#)); do
  case $1 in
    --server) server=$2; shift 2 ;;
    --scanctl) scanctl=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "service_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $server && -x $scanctl ]] || { echo "service_bench: --server and --scanctl required" >&2; exit 2; }
out_dir=${OUT:-$(mktemp -d)}/service_bench
mkdir -p "$out_dir"
target=127.0.0.1:$port
pid=

stop_server() {
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap stop_server EXIT

start_server() {
  local log=$1
  shift
  "$server" --host=127.0.0.1 --port="$port" --metrics_address=127.0.0.1:0 --backend="$backend" \
    --shutdown_grace=0s --max_message_bytes=$((64 << 20)) "$@" >"$log" 2>&1 &
  pid=$!
  "$scanctl" health --target="$target" --wait >/dev/null || {
    echo "service_bench: server did not become healthy:" >&2
    cat "$log" >&2
    exit 1
  }
}

# One bench run; prints "<req/s> <GB/s> <p50 ms> <p99 ms> <errors>" from scanctl's JSON.
bench() {
  local name=$1
  shift
  "$scanctl" bench --target="$target" --json --duration="$duration" "$@" >"$out_dir/$name.json"
  python3 - "$out_dir/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_ms"]
print(f'{r["throughput_rps"]:.0f} {r["payload_gbps"]:.3f} {lat["p50"]:.3f} {lat["p99"]:.3f} '
      f'{r["failed"]}')
PY
}

rows=()
small=(--op=linear_scan --shape=1,64,1024 --dtype=float32)
for mode in batched unbatched; do
  extra=()
  [[ $mode == unbatched ]] && extra=(--max_batch_requests=1)
  start_server "$out_dir/server_$mode.log" "${extra[@]}"
  for c in 1 16 256; do
    read -r rps gbs p50 p99 errs < <(bench "small_${mode}_c$c" "${small[@]}" --concurrency="$c")
    rows+=("small (1,64,1024) fp32|$mode|$c|$rps|$gbs|$p50|$p99|$errs")
  done
  stop_server
done

# 16 MB requests: linear_scan (1,1,2^21) fp32 sends a and x (16 MiB) and receives y (8 MiB);
# echo sends and receives 16 MiB, an upper bound on what the transport moves per call.
start_server "$out_dir/server_large.log"
for c in 1 4; do
  read -r rps gbs p50 p99 errs < <(bench "large_linear_c$c" --op=linear_scan --shape=1,1,2097152 \
    --dtype=float32 --concurrency="$c" --distinct_inputs=2)
  rows+=("linear_scan 16 MiB in|batched|$c|$rps|$gbs|$p50|$p99|$errs")
  read -r rps gbs p50 p99 errs < <(bench "large_echo_c$c" --op=echo --payload_bytes=16777216 \
    --concurrency="$c")
  rows+=("echo 16 MiB|-|$c|$rps|$gbs|$p50|$p99|$errs")
done
stop_server

printf '\n%-24s %-10s %5s %10s %8s %9s %9s %6s\n' workload batching conc req/s GB/s p50_ms \
  p99_ms errors
for row in "${rows[@]}"; do
  IFS='|' read -r w b c rps gbs p50 p99 errs <<<"$row"
  printf '%-24s %-10s %5s %10s %8s %9s %9s %6s\n' "$w" "$b" "$c" "$rps" "$gbs" "$p50" "$p99" \
    "$errs"
done
