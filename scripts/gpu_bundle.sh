#!/usr/bin/env bash
# Packs what the GPU machine runs into .bundle/{bin,lib}: the test binaries (tests/cuda/*,
# tests/kernels/cpu_backend_test), the benchmarks (bench/cuda_*), scanserve_server and scanctl,
# stripped, plus every shared library they load beyond the C/C++ runtime and the CUDA driver
# (that machine has those, and nothing else the project links: no gRPC, protobuf, Abseil or
# prometheus-cpp). The folder travels with the working tree, whose limit is 64 MiB. Every binary
# embeds the same device code, so when the folder would exceed BUNDLE_LIMIT_MB (default 60) it is
# shipped as .bundle/bundle.tar.xz instead (a large dictionary folds the copies into one);
# scripts/gpu_run.sh unpacks it on the GPU machine.
#
# Usage: scripts/gpu_bundle.sh [BUILD_DIR]   (default: $BUILD_DIR, else build)
#   BUNDLE_ONLY=REGEX  keep only the binaries whose names match (e.g. 'cuda_backend_test|scan_bench')
# Then, on the GPU machine from the repo root: bash scripts/gpu_run.sh ... (carry .bundle)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-${BUILD_DIR:-build}}
bundle=.bundle
limit_mb=${BUNDLE_LIMIT_MB:-60}
[[ -d $build_dir ]] || { echo "gpu_bundle: no build directory $build_dir" >&2; exit 1; }

# Executable ELF files only: CMake leaves scripts and folders beside the binaries.
is_elf_exe() { [[ -f $1 && -x $1 ]] && head -c4 "$1" | grep -q $'\x7fELF'; }

binaries=()
for f in "$build_dir"/tests/cuda/* "$build_dir"/tests/kernels/cpu_backend_test \
  "$build_dir"/bench/cuda_* "$build_dir"/server/scanserve_server "$build_dir"/client/scanctl; do
  is_elf_exe "$f" || continue
  [[ -z ${BUNDLE_ONLY:-} || $(basename "$f") =~ $BUNDLE_ONLY ]] && binaries+=("$f")
done
if ((${#binaries[@]} == 0)); then
  echo "gpu_bundle: nothing built under $build_dir" >&2
  exit 1
fi

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
# What the GPU machine already has: the loader, glibc's libraries, the C++ runtime, the driver.
system_lib='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libresolv|libutil|libstdc\+\+|libgcc_s|libcuda|libnvidia-)[.-]'
declare -A seen=()
for bin in "${binaries[@]}"; do
  cp "$bin" "$bundle/bin/"
  strip --strip-all "$bundle/bin/$(basename "$bin")"
  while read -r name path; do
    [[ -n $path && -f $path ]] || continue
    [[ $name =~ $system_lib ]] && continue
    [[ -n ${seen[$name]:-} ]] && continue
    seen[$name]=1
    cp -L "$path" "$bundle/lib/$name"
    chmod u+w "$bundle/lib/$name"
    strip --strip-unneeded "$bundle/lib/$name"
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
done

total_kb=$(du -sk "$bundle" | cut -f1)
echo "gpu_bundle: ${#binaries[@]} binaries, ${#seen[@]} libraries, $((total_kb / 1024)) MiB in $bundle"
ls "$bundle/bin"
if ((total_kb > limit_mb * 1024)); then
  tar -C "$bundle" -cf - bin lib | xz -T1 --lzma2=preset=1,dict=192MiB >"$bundle/bundle.tar.xz.tmp"
  rm -rf "${bundle:?}/bin" "${bundle:?}/lib"
  mv "$bundle/bundle.tar.xz.tmp" "$bundle/bundle.tar.xz"
  packed_kb=$(du -sk "$bundle" | cut -f1)
  echo "gpu_bundle: packed into $bundle/bundle.tar.xz, $((packed_kb / 1024)) MiB"
  if ((packed_kb > limit_mb * 1024)); then
    echo "gpu_bundle: still over ${limit_mb} MiB; pick fewer binaries with BUNDLE_ONLY" >&2
    exit 1
  fi
fi
