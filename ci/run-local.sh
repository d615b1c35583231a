#!/usr/bin/env bash
# The main job, locally: predictor + transformer with the default model (both listen on 0.0.0.0, as kserve always binds; the curl lines use localhost); prints a
# working curl line and serves until Ctrl-C (which stops both, draining first).
# The servers log to out/run-local/ (override: LOG_DIR); once both are ready their new lines (access
# logs, errors) follow the curl lines on the terminal. A server that fails to start prints its log's end.
# MODEL_DIR=<snapshot> MODEL_NAME=<name>: serve your own snapshot; its task (embedding, rerank, a chat
# model's generate, ...) is read from it and picks the curl lines. MODEL=generate: the default chat model.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SNAPSERVE_SKIP_SETUP:-}" ] || bash ci/setup.sh serve
PY=.venv/bin/python
if [ -n "${MODEL_DIR:-}" ]; then        # the user's snapshot says what it is
  TASK=$($PY -c 'import sys
from snapserve import metadata
try:
    print(metadata.read(sys.argv[1]).task)
except Exception as exc:
    sys.exit(f"run-local: cannot read the snapshot {sys.argv[1]}: {exc}")' "$MODEL_DIR")
  MODEL_NAME=${MODEL_NAME:-$(basename "$MODEL_DIR" | tr '[:upper:]' '[:lower:]')}
elif [ "${MODEL:-}" = generate ]; then  # text generation: SmolLM2-135M-Instruct, chat completions
  TASK=generate MODEL_DIR=models/SmolLM2-135M-Instruct MODEL_NAME=${MODEL_NAME:-smollm2-135m-instruct}
else
  TASK=embedding MODEL_DIR=models/all-MiniLM-L6-v2 MODEL_NAME=${MODEL_NAME:-all-minilm-l6-v2}
fi
PORT=${PORT:-8080}                      # transformer (clients call this)
PREDICTOR_PORT=${PREDICTOR_PORT:-8090}
# kserve always serves gRPC too (8081 would collide): one port above each HTTP port unless given
GRPC_PORT=${GRPC_PORT:-$((PORT + 1))} PREDICTOR_GRPC_PORT=${PREDICTOR_GRPC_PORT:-$((PREDICTOR_PORT + 1))}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG_DIR=${LOG_DIR:-out/run-local}
mkdir -p "$LOG_DIR"
plog=$LOG_DIR/predictor-$PREDICTOR_PORT.log tlog=$LOG_DIR/transformer-$PORT.log
pids=() follow=
# shellcheck disable=SC2317  # run by the EXIT trap
stop() {  # the shutdown's own log lines stay in the log files
  trap - INT TERM EXIT
  [ -z "$follow" ] || kill "$follow" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT   # exit runs stop (the EXIT trap)
trap 'exit 143' TERM
served() {  # until a server stops by itself (Ctrl-C ends this script through the traps above)
  wait -n "${pids[@]}" || true
  sleep 0.5  # the server's last log lines, through the tail below
  echo "run-local: a server stopped by itself; its log is in $LOG_DIR/" >&2
  exit 1
}

wait_ready() {  # url pid log
  for _ in $(seq 1 600); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    if ! kill -0 "$2" 2>/dev/null; then
      { echo "run-local: the server exited before it was ready; the end of $3:"; tail -n 30 "$3"; } >&2
      exit 1
    fi
    sleep 0.5
  done
  { echo "run-local: $1 not ready after 300 s; the end of $3:"; tail -n 30 "$3"; } >&2; exit 1
}

echo "run-local: starting the predictor and the transformer (logs in $LOG_DIR/)"
$PY -m predictor --model_name "$MODEL_NAME" --model_dir "$MODEL_DIR" \
  --http_port "$PREDICTOR_PORT" --grpc_port "$PREDICTOR_GRPC_PORT" "$@" >"$plog" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$PREDICTOR_PORT/v2/models/$MODEL_NAME/ready" "${pids[0]}" "$plog"
$PY -m transformer --model_name "$MODEL_NAME" --model_dir "$MODEL_DIR" \
  --predictor_host "127.0.0.1:$PREDICTOR_PORT" --http_port "$PORT" --grpc_port "$GRPC_PORT" >"$tlog" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$PORT/v2/models/$MODEL_NAME/ready" "${pids[1]}" "$tlog"
# from here on, what the servers log (access lines, warnings) shows below the curl lines
tail -q -n 0 -F "$plog" "$tlog" 2>/dev/null &
follow=$!

if [ "$TASK" = generate ]; then
  cat <<MSG

snapserve is up (text generation): transformer http://127.0.0.1:$PORT -> predictor http://127.0.0.1:$PREDICTOR_PORT
  curl -s -H 'content-type: application/json' http://127.0.0.1:$PORT/openai/v1/chat/completions -d '{"model": "$MODEL_NAME", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 32}'
  curl -sN -H 'content-type: application/json' http://127.0.0.1:$PORT/openai/v1/chat/completions -d '{"model": "$MODEL_NAME", "messages": [{"role": "user", "content": "Tell me a joke."}], "max_tokens": 64, "stream": true}'
  curl -s -H 'content-type: application/json' http://127.0.0.1:$PREDICTOR_PORT/v2/models/$MODEL_NAME/generate -d '{"text_input": "The capital of France is", "parameters": {"max_tokens": 16, "temperature": 0}}'
Ctrl-C stops both.
MSG
  served
fi
if [ "$TASK" != embedding ]; then        # rerank or classification: v1 scores single texts too
  cat <<MSG

snapserve is up ($TASK): transformer http://127.0.0.1:$PORT -> predictor http://127.0.0.1:$PREDICTOR_PORT
  curl -s -H 'content-type: application/json' http://127.0.0.1:$PORT/v1/models/$MODEL_NAME:predict -d '{"instances": ["A man is playing a guitar."]}'
Ctrl-C stops both.
MSG
  served
fi
cat <<MSG

snapserve is up: transformer http://127.0.0.1:$PORT -> predictor http://127.0.0.1:$PREDICTOR_PORT
  curl -s -H 'content-type: application/json' http://127.0.0.1:$PORT/v1/models/$MODEL_NAME:predict -d '{"instances": ["A man is playing a guitar."]}'
  curl -s -H 'content-type: application/json' http://127.0.0.1:$PORT/openai/v1/embeddings -d '{"model": "$MODEL_NAME", "input": "hello"}'
Ctrl-C stops both.
MSG
served
