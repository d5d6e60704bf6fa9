#!/usr/bin/env bash
# End-to-end correctness of a running scanserve_server through gRPC: every operation, every
# floating dtype, both layouts, unary and streaming, each answer checked by `scanctl run --verify`
# against ops.md's accuracy targets (the CLI recomputes the request on its own CPU backend).
# Starts the server itself with the given backend, waits for its health check, and stops it by
# PID at the end. Prints one line per request and a pass/fail count last; exit 1 on any failure.
#
# Usage: scripts/gpu_service_check.sh --server PATH --scanctl PATH [--backend cuda|cpu|auto]
#                                     [--port 50071] [--seed S]
# On the GPU machine, after scripts/gpu_run.sh unpacked the bundle:
#   LD_LIBRARY_PATH=.bundle/lib bash scripts/gpu_service_check.sh \
#     --server .bundle/bin/scanserve_server --scanctl .bundle/bin/scanctl --backend cuda
set -uo pipefail

server=
scanctl=
backend=cuda
port=50071
seed=${SEED:-$RANDOM$RANDOM}
while (($#)); do
  case $1 in
    --server) server=$2; shift 2 ;;
    --scanctl) scanctl=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "gpu_service_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $server && -x $scanctl ]] || {
  echo "gpu_service_check: --server and --scanctl required" >&2
  exit 2
}
target=127.0.0.1:$port
log=${OUT:-/tmp}/service_check_server.log

"$server" --host=127.0.0.1 --port="$port" --metrics_address=127.0.0.1:0 --backend="$backend" \
  --shutdown_grace=0s --max_message_bytes=$((256 << 20)) >"$log" 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' EXIT
if ! "$scanctl" health --target="$target" --wait --deadline_ms=60000 >/dev/null; then
  echo "gpu_service_check: server did not become healthy:" >&2
  cat "$log" >&2
  exit 1
fi
"$scanctl" info --target="$target" | head -20

# One request per line: the operation's flags; every line runs in each dtype and layout. Lengths
# off 16-byte rows (3001, 70001, 9001, 20001; 2500 in 16-bit types) make the backend pad its
# staged rows, before them where the scan runs right to left.
cases=(
  "--op=linear_scan --shape=2,48,3001 --with=b,c,h0 --return_final_state"
  "--op=linear_scan --shape=1,3,70001 --reverse"
  "--op=linear_scan_backward --shape=2,40,2500 --with=b,c,h0"
  "--op=linear_scan_backward --shape=1,16,9001 --reverse"
  "--op=selective_scan --shape=2,64,700 --state_dim=16 --groups=2 --with=D,z,delta_bias,h0 --delta_softplus --return_last_state"
  "--op=selective_scan --shape=1,32,4096 --state_dim=16 --fixed=B"
  "--op=associative_scan --shape=2,40,3000 --operator=logaddexp --exclusive"
  "--op=associative_scan --shape=1,8,20001 --operator=max --reverse"
)
pass=0
fail=0
n=0
for dtype in float32 float16 bfloat16; do
  for layout in BDL BLD; do
    for c in "${cases[@]}"; do
      n=$((n + 1))
      stream=()
      ((n % 3 == 0)) && stream=(--stream)
      # shellcheck disable=SC2086  # each case is a word list on purpose
      if result=$("$scanctl" run --target="$target" --verify --seed="$seed$n" --dtype="$dtype" \
        --layout="$layout" "${stream[@]}" $c 2>&1); then
        pass=$((pass + 1))
        status=ok
      else
        fail=$((fail + 1))
        status=FAIL
      fi
      printf '%-4s %-8s %-3s %-8s %s\n' "$status" "$dtype" "$layout" "${stream[*]:-unary}" "$c"
      if [[ $status == FAIL ]]; then
        tail -8 <<<"$result" | while IFS= read -r line; do printf '    %s\n' "$line"; done
      fi
    done
  done
done
echo "gpu_service_check: backend $backend, seed $seed: $pass passed, $fail failed"
((fail == 0))
