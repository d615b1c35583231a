"""python -m loadtest.stack: start the local stack, print its URLs, run until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from .config import parse
from .stack import Stack


def _banner(stack: Stack) -> str:
    s = stack.s
    hop = "on localhost (collocated)" if s.collocated else "through nginx (the predictor Service)"
    zero = ", none started until a request is held (--scale_from_zero)" if s.scale_from_zero else ""
    if s.task == "generate":
        curl = (f"curl -s -H 'Content-Type: application/json' {stack.api_url}/openai/v1/chat/completions"
                f" -d '{{\"model\": \"{s.model_name}\", \"messages\": [{{\"role\": \"user\", \"content\":"
                " \"What is the capital of France?\"}], \"max_tokens\": 32, \"temperature\": 0}'")
    else:
        curl = (f"curl -s -H 'Content-Type: application/json' {stack.api_url}/v1/models/{s.model_name}:predict"
                " -d '{\"instances\": [\"hello world\"]}'")
    return "\n".join([
        f"snapserve stack ready: {s.transformers} transformer(s) -> {s.predictors} predictor(s) {hop}{zero}, "
        f"model {s.model_name} ({s.task})",
        f"  API         {stack.api_url}",
        f"  Prometheus  {stack.prometheus_url}",
        f"  work folder {stack.workdir} (logs/, state.json, nginx/*.access.log)",
        f"  try: {curl}",
        "Ctrl-C stops everything.",
    ])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s stack %(levelname)s %(message)s", stream=sys.stderr)
    settings = parse(argv)
    stack = Stack(settings)
    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():  # a second Ctrl-C: stop waiting for drains
            stack.kill()
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        if not stack.wait_ready(stop):
            return 0 if stop.is_set() else 1
        print(_banner(stack), flush=True)
        stop.wait()
        return 0
    except RuntimeError as e:  # a config check failed: nginx's or promtool's own message says why
        logging.getLogger("snapserve.stack").error("%s", e)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
