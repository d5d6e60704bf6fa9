#!/usr/bin/env bash
# Installs what is missing, builds everything and runs the whole test suite with ctest.
# GPU tests (label cuda) skip with a reason when no GPU is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh "$@"
build_dir=${BUILD_DIR:-build}
ctest --test-dir "$build_dir" -j"${JOBS:-$(nproc)}" --output-on-failure --timeout 900
