#!/usr/bin/env bash
# Configures and builds scanserve into ${BUILD_DIR:-build}. Extra arguments go to cmake's configure
# step (e.g. -DSCANSERVE_CUDA=OFF). The CUDA backend is built when nvcc is found (/usr/local/cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
  "${launcher[@]}" "$@"
cmake --build "$build_dir" -j"${JOBS:-$(nproc)}"
