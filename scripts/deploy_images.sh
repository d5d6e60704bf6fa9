#!/usr/bin/env bash
# Builds the scanserve images (deploy/docker/Dockerfile) with docker: scanserve:cpu and, with
# --target cuda, scanserve:cuda.
#
#   scripts/deploy_images.sh                      # scanserve:cpu from the working tree
#   scripts/deploy_images.sh --context git --jobs 2 --target cpu --target cuda
#
# The base image is the Dockerfile's pinned DEBIAN_IMAGE when docker has it or can pull it; where
# no registry is reachable (or with --local-base), the newest scanserve-local/debian image that
# scripts/deploy_base_image.sh made, running that script first when there is none.
#
# Usage: scripts/deploy_images.sh [--target cpu|cuda]... [--context worktree|git[=REF]]
#                                 [--jobs N] [--local-base] [--base IMAGE] [--tag-prefix NAME]
#   --target      Dockerfile target to build (repeatable; default cpu)
#   --context     worktree (default): the files as they are, .dockerignore applied;
#                 git[=REF]: the committed tree of REF (default HEAD) from `git archive`, so
#                 uncommitted edits stay out of the image
#   --jobs        parallel compile jobs in the build stage (default: ninja's choice)
#   --local-base  use (or make) the debootstrapped base without trying the registry
#   --base        use this base image as DEBIAN_IMAGE
#   --tag-prefix  image name (default scanserve): NAME:cpu, NAME:cuda
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dockerfile=$repo/deploy/docker/Dockerfile

targets=()
context=worktree
jobs=
local_base=0
base=
prefix=scanserve
while (($#)); do
  case $1 in
    --target) targets+=("$2"); shift 2 ;;
    --context) context=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --local-base) local_base=1; shift ;;
    --base) base=$2; shift 2 ;;
    --tag-prefix) prefix=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "deploy_images: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
((${#targets[@]})) || targets=(cpu)
for t in "${targets[@]}"; do
  if [[ $t != cpu && $t != cuda ]]; then
    echo "deploy_images: --target is cpu or cuda, not '$t'" >&2
    exit 2
  fi
done
if ! docker info >/dev/null 2>&1; then
  echo "deploy_images: no docker daemon answers (docker info failed)" >&2
  exit 1
fi

# The Dockerfile's pinned default, e.g. debian:12.11-slim.
pinned=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' "$dockerfile")
if [[ -z $base ]]; then
  if ((!local_base)) &&
    { docker image inspect "$pinned" >/dev/null 2>&1 || docker pull "$pinned"; }; then
    base=$pinned
  else
    # A base made by an earlier run (the newest point release), else a new one.
    base=$(docker image ls --format '{{.Repository}}:{{.Tag}}' scanserve-local/debian | sort -V |
      tail -n 1)
    if [[ -z $base ]]; then
      echo "deploy_images: $pinned is not available; bootstrapping a Debian 12 base locally"
      made=$("$repo/scripts/deploy_base_image.sh")
      echo "$made"
      base=$(sed -n 's/^deploy_base_image: \([^ ]*\) .*/\1/p' <<<"$made")
    fi
  fi
fi
echo "deploy_images: base $base"

build_context=$repo
cleanup() { [[ $build_context == "$repo" ]] || rm -rf "$build_context"; }
trap cleanup EXIT
if [[ $context == git* ]]; then
  ref=HEAD
  [[ $context == git=* ]] && ref=${context#git=}
  build_context=$(mktemp -d /tmp/scanserve-image-context.XXXXXX)
  git -C "$repo" archive "$ref" | tar -x -C "$build_context"
  echo "deploy_images: context is $(git -C "$repo" rev-parse --short "$ref") ($ref)"
elif [[ $context != worktree ]]; then
  echo "deploy_images: --context is worktree or git[=REF], not '$context'" >&2
  exit 2
fi

for t in "${targets[@]}"; do
  start=$SECONDS
  docker build --build-arg "DEBIAN_IMAGE=$base" ${jobs:+--build-arg "BUILD_JOBS=$jobs"} \
    -f "$build_context/deploy/docker/Dockerfile" --target "$t" -t "$prefix:$t" "$build_context"
  size=$(docker image inspect --format '{{.Size}}' "$prefix:$t")
  echo "deploy_images: $prefix:$t built in $((SECONDS - start)) s, $((size / 1024 / 1024)) MiB"
done
