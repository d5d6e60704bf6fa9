#!/usr/bin/env bash
# Builds local stand-ins for the Prometheus and blackbox exporter images of deploy/compose.yaml
# from Debian 12's packages, for machines that reach Debian's mirror but no image registry:
#
#   scanserve-local/prometheus:debian12        Debian's prometheus (2.42), not prom/prometheus
#   scanserve-local/blackbox-exporter:debian12 Debian's prometheus-blackbox-exporter (0.23)
#
# They run deploy/compose.yaml's commands and mounts unchanged (same paths, same flags), so
# tests/deploy/compose_test.py can bring the stack up with an override that names these images.
# Grafana has no Debian package: it has no stand-in, and the compose test leaves it out.
#
# Usage: scripts/deploy_monitoring_standins.sh [--base IMAGE]
#   --base  Debian 12 image to install into (default: the newest scanserve-local/debian tag that
#           scripts/deploy_base_image.sh made, else the Dockerfile's pinned DEBIAN_IMAGE)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
base=
while (($#)); do
  case $1 in
    --base) base=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "deploy_monitoring_standins: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if ! docker info >/dev/null 2>&1; then
  echo "deploy_monitoring_standins: no docker daemon answers (docker info failed)" >&2
  exit 1
fi
if [[ -z $base ]]; then
  base=$(docker image ls --format '{{.Repository}}:{{.Tag}}' scanserve-local/debian | sort -V |
    tail -n 1)
  [[ -n $base ]] || base=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' "$repo/deploy/docker/Dockerfile")
fi

context=$(mktemp -d /tmp/scanserve-standins.XXXXXX)
trap 'rm -rf "$context"' EXIT
# One Dockerfile, two targets. Both run as nobody like the images they stand in for;
# /prometheus is the data folder compose mounts its volume on (created here so the volume
# starts owned by nobody).
cat >"$context/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE} AS prometheus
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus /etc/prometheus \
 && chown nobody:nogroup /prometheus
WORKDIR /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus", "--storage.tsdb.path=/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml"]

FROM ${BASE} AS blackbox-exporter
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      prometheus-blackbox-exporter \
 && rm -rf /var/lib/apt/lists/*
USER nobody
EXPOSE 9115
ENTRYPOINT ["/usr/bin/prometheus-blackbox-exporter"]
CMD ["--config.file=/etc/blackbox/blackbox.yml"]
EOF
for target in prometheus blackbox-exporter; do
  docker build --build-arg "BASE=$base" --target "$target" \
    -t "scanserve-local/$target:debian12" "$context" >"$context/$target.log" ||
    { cat "$context/$target.log" >&2; exit 1; }
  echo "deploy_monitoring_standins: scanserve-local/$target:debian12 (on $base)"
done
