#!/usr/bin/env bash
# Debian packages: nginx and Prometheus for the local stack, podman for image builds.
set -euo pipefail
pkgs=(python3-venv nginx-light prometheus curl ca-certificates unzip procps)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these as services on install; snapserve runs its own unprivileged copies.
for svc in nginx prometheus prometheus-node-exporter; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done
pkill -x nginx 2>/dev/null || true
