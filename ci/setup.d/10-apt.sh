#!/usr/bin/env bash
# Debian packages: nginx and Prometheus for the local stack, podman for image builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
pkgs=(python3-venv nginx-light prometheus curl ca-certificates unzip procps)
# shellcheck source=ci/lib/apt.sh
source ci/lib/apt.sh
apt_install "${pkgs[@]}"
# Debian starts these as services on install; snapserve runs its own unprivileged copies.
for svc in nginx prometheus prometheus-node-exporter; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done
pkill -x nginx 2>/dev/null || true
