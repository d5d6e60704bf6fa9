#!/usr/bin/env bash
# Assembles the runtime file tree of the scanserve images: the server and scanctl plus every shared
# library they load beyond glibc and the C++ runtime (which every Debian 12 base image has), laid
# out as it is copied onto the image root:
#
#   OUT/opt/scanserve/bin/{scanserve_server,scanctl}
#   OUT/opt/scanserve/lib/*.so.*                 gRPC, protobuf, Abseil, prometheus-cpp, ...
#   OUT/etc/ld.so.conf.d/scanserve.conf          puts lib/ on the loader's path after `ldconfig`
#
# The Dockerfile's runtime stages are exactly this tree on debian slim. Outside a container, run
# the binaries with LD_LIBRARY_PATH=OUT/opt/scanserve/lib (e.g. on a GPU host without gRPC).
#
# Usage: scripts/deploy_runtime_tree.sh --build-dir DIR --out DIR [--static-cudart] [--no-strip]
#        scripts/deploy_runtime_tree.sh --server PATH --scanctl PATH --out DIR [...]
#   --build-dir      where to find scanserve_server and scanctl (a cmake build folder)
#   --server, --scanctl  the two binaries by path instead
#   --static-cudart  fail unless the server links the CUDA runtime statically (the cuda image
#                    must need nothing from CUDA but the driver's libcuda)
#   --no-strip       keep debug symbols in the copied binaries
set -euo pipefail

build_dir=
server=
scanctl=
out=
static_cudart=0
strip_binaries=1
while (($#)); do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --scanctl) scanctl=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --static-cudart) static_cudart=1; shift ;;
    --no-strip) strip_binaries=0; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "deploy_runtime_tree: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z $out || (-z $build_dir && (-z $server || -z $scanctl)) ]]; then
  echo "deploy_runtime_tree: --out and either --build-dir or --server and --scanctl are required" >&2
  exit 2
fi

# Libraries the base image provides: glibc's family, libstdc++ and libgcc_s. Bundling them would
# pin the loader to a libc it was not built for.
is_base_library() {
  case $1 in
    ld-linux*.so* | libc.so* | libm.so* | libmvec.so* | libpthread.so* | libdl.so* | librt.so* | \
      libresolv.so* | libutil.so* | libanl.so* | libnss_*.so* | libstdc++.so* | libgcc_s.so*)
      return 0 ;;
  esac
  return 1
}

find_binary() {
  local name=$1 found
  found=$(find "$build_dir" -type f -name "$name" -perm -u+x -not -path '*/CMakeFiles/*' | head -n 1)
  if [[ -z $found ]]; then
    echo "deploy_runtime_tree: $name not found under $build_dir (build the target first)" >&2
    exit 1
  fi
  echo "$found"
}

[[ -n $server ]] || server=$(find_binary scanserve_server)
[[ -n $scanctl ]] || scanctl=$(find_binary scanctl)
for binary in "$server" "$scanctl"; do
  if [[ ! -x $binary ]]; then
    echo "deploy_runtime_tree: $binary is not an executable" >&2
    exit 1
  fi
done
binaries=("$server" "$scanctl")

bin_dir=$out/opt/scanserve/bin
lib_dir=$out/opt/scanserve/lib
rm -rf "$out/opt/scanserve"
mkdir -p "$bin_dir" "$lib_dir" "$out/etc/ld.so.conf.d"
echo /opt/scanserve/lib >"$out/etc/ld.so.conf.d/scanserve.conf"

declare -A copied=()
for binary in "${binaries[@]}"; do
  # ldd prints "name => /path (addr)" for resolved libraries and "name => not found" otherwise;
  # its list is transitive.
  ldd_output=$(ldd "$binary")
  if grep -q 'not found' <<<"$ldd_output"; then
    echo "deploy_runtime_tree: $binary has unresolved libraries:" >&2
    grep 'not found' <<<"$ldd_output" >&2
    exit 1
  fi
  if ((static_cudart)) && [[ $(basename "$binary") == scanserve_server ]]; then
    if grep -q 'libcudart' <<<"$ldd_output"; then
      echo "deploy_runtime_tree: $binary links libcudart dynamically; link CUDA::cudart_static" >&2
      exit 1
    fi
    if ! grep -aq 'libcuda.so' "$binary"; then
      echo "deploy_runtime_tree: $binary holds no CUDA runtime (built without the CUDA backend?)" >&2
      exit 1
    fi
  fi
  while read -r name arrow path _; do
    [[ $arrow == "=>" && $path == /* ]] || continue
    is_base_library "$name" && continue
    [[ -n ${copied[$name]:-} ]] && continue
    cp -L "$path" "$lib_dir/$name"
    chmod 0644 "$lib_dir/$name"
    copied[$name]=1
  done <<<"$ldd_output"
  install -m 0755 "$binary" "$bin_dir/"
  if ((strip_binaries)); then
    strip --strip-unneeded "$bin_dir/$(basename "$binary")"
  fi
done

total=$(du -sh "$out/opt/scanserve" | cut -f1)
echo "deploy_runtime_tree: ${#binaries[@]} binaries, ${#copied[@]} libraries, $total in $out/opt/scanserve"
