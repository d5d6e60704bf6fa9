#!/usr/bin/env bash
# deploy/prometheus under Debian's promtool: the scrape configuration and the alert rules are
# valid, and the rules' unit tests (alerts_test.yml) pass. The blackbox exporter's module file is
# checked too when the exporter is installed. Exit 77 (skipped) when promtool is missing.
set -euo pipefail
dir=$(cd "$(dirname "$0")/../../deploy/prometheus" && pwd)
if ! command -v promtool >/dev/null; then
  echo "SKIPPED: promtool is not installed (Debian package prometheus)"
  exit 77
fi
promtool --version | head -n 1
promtool check config "$dir/prometheus.yml"
promtool check rules "$dir/alerts.yml"
promtool test rules "$dir/alerts_test.yml"
if command -v prometheus-blackbox-exporter >/dev/null; then
  prometheus-blackbox-exporter --config.file="$dir/blackbox.yml" --config.check
else
  echo "NOTE: prometheus-blackbox-exporter is not installed: blackbox.yml not checked"
fi
