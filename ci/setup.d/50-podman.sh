#!/usr/bin/env bash
# podman + debootstrap for the image tests, and a local Debian 12 base image to build FROM
# (no container registry is reachable here). Idempotent: once the base exists this only checks.
# step: podman and a local Debian base image (the first time: a few minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE_IMAGE=${SNAPSERVE_BASE_IMAGE:-localhost/snapserve-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# debian-archive-keyring: debootstrap verifies bookworm with it (Ubuntu hosts lack it by default).
pkgs=(podman debootstrap debian-archive-keyring uidmap fuse-overlayfs)
# shellcheck source=ci/lib/apt.sh
source ci/lib/apt.sh
apt_install "${pkgs[@]}"

MARK=/var/lib/snapserve/podman-unusable   # why podman cannot store images here, for the image tests
podman image exists "$BASE_IMAGE" && { rm -f "$MARK"; exit 0; }

# The base: what python:3.11-slim-bookworm gives (Debian 12, CPython 3.11, venv, CA bundle), built
# from Debian's own packages so the Dockerfiles' FROM ${BASE} works without a registry.
root=$(mktemp -d /var/tmp/snapserve-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "50-podman: debootstrap bookworm -> $BASE_IMAGE (once; a few minutes)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$MIRROR" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*.log
# A machine where podman cannot unpack layers at all (seen in a nested chroot whose / is no mount
# point: "remount /: invalid argument") gets the reason recorded; the image tests skip with it.
if ! err=$(tar -C "$root" --numeric-owner -c . |
  podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" 2>&1 >/dev/null); then
  mkdir -p "$(dirname "$MARK")"
  printf 'podman cannot store images on this machine: %s\n' "$(printf '%s' "$err" | tail -n 1)" > "$MARK"
  echo "50-podman: WARNING: $(cat "$MARK") — the image tests will be skipped" >&2
  exit 0
fi
rm -f "$MARK"
echo "50-podman: built $BASE_IMAGE"
