#!/usr/bin/env bash
# Debian packages the tests need: nginx and Prometheus for the local stack, unzip for the helm wheels,
# a C++ compiler for torch.compile's CPU backend.
# step: Debian packages for the tests (nginx, Prometheus, unzip, a C++ compiler)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=ci/lib/apt.sh
source ci/lib/apt.sh
apt_install nginx-light prometheus unzip g++ python3-dev  # torch.compile (inductor) on CPU: a C++ compiler, Python.h
# Debian starts nginx and Prometheus as system services when it installs them; snapserve runs its own
# unprivileged copies on other ports, so only the system instances (their pid files) are stopped.
for pidfile in /run/nginx.pid /run/prometheus/prometheus.pid; do
  if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
done
for svc in nginx prometheus prometheus-node-exporter; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done
