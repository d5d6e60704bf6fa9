#!/usr/bin/env bash
# Installs what is missing, builds, and starts the server in the foreground (gRPC on :50051,
# Prometheus metrics on :9090). Arguments go to the server, e.g. --backend=cpu --port=50052.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh >&2
exec "${BUILD_DIR:-build}/server/scanserve_server" "$@"
