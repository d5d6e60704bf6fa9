#!/usr/bin/env bash
# Builds a Debian 12 base image locally with debootstrap and imports it into docker, for machines
# that reach Debian's package mirror but no image registry. The result stands in for
# debian:12.x-slim in deploy/docker/Dockerfile:
#
#   scripts/deploy_base_image.sh                       # prints the tag it made, e.g.
#   docker build --build-arg DEBIAN_IMAGE=scanserve-local/debian:12.15-slim \
#     -f deploy/docker/Dockerfile --target cpu -t scanserve:cpu .
#
# The tree is debootstrap's minbase variant of bookworm, trimmed the way Debian's slim images are
# (no documentation, manual pages or translations; dpkg told to leave them out of later installs;
# apt's lists and caches removed). The tag carries the point release found in the tree.
#
# Usage: scripts/deploy_base_image.sh [--rootfs DIR] [--mirror URL] [--repository NAME] [--keep]
#   --rootfs      where to bootstrap (default: a fresh temporary folder); an existing tree there
#                 is reused, so a second run only re-imports
#   --mirror      Debian mirror (default http://deb.debian.org/debian)
#   --repository  image repository name (default scanserve-local/debian)
#   --keep        keep the rootfs folder afterwards
# Needs root, debootstrap and a running docker daemon.
set -euo pipefail

rootfs=
mirror=http://deb.debian.org/debian
repository=scanserve-local/debian
keep=0
while (($#)); do
  case $1 in
    --rootfs) rootfs=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --repository) repository=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "deploy_base_image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for tool in debootstrap docker tar; do
  if ! command -v "$tool" >/dev/null; then
    echo "deploy_base_image: $tool is not installed" >&2
    exit 1
  fi
done
if [[ $(id -u) -ne 0 ]]; then
  echo "deploy_base_image: debootstrap needs root" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "deploy_base_image: no docker daemon answers (docker info failed)" >&2
  exit 1
fi

if [[ -z $rootfs ]]; then
  rootfs=$(mktemp -d /tmp/scanserve-debian-rootfs.XXXXXX)
fi
cleanup() {
  if ((!keep)); then
    rm -rf "$rootfs"
  fi
}
trap cleanup EXIT

if [[ ! -f $rootfs/etc/debian_version ]]; then
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
fi

# What Debian's slim images leave out, now and in every later apt-get install.
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d" "$rootfs/etc/apt/apt.conf.d"
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/{man,info,lintian}/* "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
  -exec rm -rf {} +

version=$(cat "$rootfs/etc/debian_version")
if [[ ! $version =~ ^12\.[0-9]+$ ]]; then
  echo "deploy_base_image: $rootfs is Debian '$version', not a Debian 12 point release" >&2
  exit 1
fi
tag="$repository:$version-slim"
# Sorted names and a fixed owner keep the layer independent of the bootstrap folder.
tar --numeric-owner --sort=name -C "$rootfs" -c . |
  docker import --change 'CMD ["bash"]' --message "debootstrap minbase bookworm $version" - "$tag" \
    >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$tag")
echo "deploy_base_image: $tag ($((size / 1024 / 1024)) MiB)"
