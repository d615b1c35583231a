"""locust user classes for text generation (a causal LM served as task generate), through the transformer's
OpenAI routes. Active only with ``SNAPSERVE_TASK=generate`` (like RerankUser): an embedding model answers
these routes 404.

- ``ChatStreamUser``: ``/openai/v1/chat/completions`` with ``stream: true`` read as SSE. Besides the request
  itself ("chat stream", whole-stream latency) it fires two entries of its own under the same name:
  ``TTFT`` (ms from sending to the first content delta) and ``TOKENS/S`` (completion tokens per second of
  the decode phase, first content to last; locust has no unit but ms, so the number sits in the
  response-time column: read it as tokens/s, not ms). Both land in locust's total too, so an SLO p99 over
  the total is at least as strict as over the requests alone (TTFT <= the request's latency; a
  CPU/GPU-sized tokens/s is far below any p99 worth gating on).
- ``CompletionsUser``: ``/openai/v1/completions``, not streamed, body checked.

Settings: ``--max-tokens`` / ``SNAPSERVE_MAX_TOKENS`` (default 32) per request.
"""

from __future__ import annotations

import json
import os
import random
import time

from locust import HttpUser, constant, events, task

from loadtest import texts
from loadtest.locust.checks_generate import check_completion, check_stream
from loadtest.locust.post import post_checked

_ACTIVE = os.environ.get("SNAPSERVE_TASK", "embedding") == "generate"


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--max-tokens", env_var="SNAPSERVE_MAX_TOKENS", type=int, default=32,
                       help="max_tokens of each generation request (SNAPSERVE_TASK=generate)")


def _prompt(rng: random.Random) -> str:
    return f"Write a short story about this: {texts.single(rng)}"


class _GenerateUser(HttpUser):
    """requests-based (not FastHttpUser): its ``stream=True`` + ``iter_lines`` reads SSE as it arrives."""

    abstract = True
    wait_time = constant(0)  # closed loop

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.model = opts.model_name if opts else "smol"
        self.max_tokens = opts.max_tokens if opts else 32
        key = opts.api_key if opts else ""
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.rng = random.Random()

    def on_stop(self) -> None:
        # locust's --csv writer runs once a second and has no final write at quit: a generation that ends in
        # the last second of a run (one finishing under --stop-timeout) would be missing from the CSV
        time.sleep(1.5)

    def _extra(self, request_type: str, name: str, value: float, length: int = 0) -> None:
        self.environment.events.request.fire(request_type=request_type, name=name, response_time=value, response_length=length,
                            exception=None, context={})


class ChatStreamUser(_GenerateUser):
    """Streaming chat: the interactive pattern, where time-to-first-token is what a person feels."""

    abstract = not _ACTIVE
    weight = 3

    @task
    def chat_stream(self) -> None:
        name = "chat stream"
        payload = {"model": self.model, "messages": [{"role": "user", "content": _prompt(self.rng)}],
                   "max_tokens": self.max_tokens, "temperature": 0, "stream": True,
                   "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        first = last = None
        usage, finish, text = None, None, []
        with self.client.post("/openai/v1/chat/completions", json=payload, name=name, headers=self.headers,
                              stream=True, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                # chunk_size=None: hand over bytes as they arrive (the default 512 would batch events)
                for line in resp.iter_lines(chunk_size=None, decode_unicode=True):
                    if not line or not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        resp.failure(f"stream error: {str(event['error'])[:200]}")
                        return
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            last = time.perf_counter()
                            first = first or last
                            text.append(content)
                        finish = choice.get("finish_reason") or finish
            except (ValueError, OSError) as exc:
                resp.failure(f"bad stream: {exc!r}"[:200])
                return
            # locust times a streamed request to its headers; the entry should be the whole stream
            resp.request_meta["response_time"] = (time.perf_counter() - started) * 1e3
            problem = check_stream(text, finish, usage, self.max_tokens)
            if problem:
                resp.failure(problem)
                return
        if first is None:  # nothing to time: the answer was empty
            return
        tokens = usage["completion_tokens"]
        self._extra("TTFT", name, (first - started) * 1e3)
        if tokens > 1 and last > first:
            self._extra("TOKENS/S", name, (tokens - 1) / (last - first), tokens)


class CompletionsUser(_GenerateUser):
    """Plain (legacy) completions, one JSON answer per request."""

    abstract = not _ACTIVE
    weight = 1

    @task
    def completions(self) -> None:
        payload = {"model": self.model, "prompt": _prompt(self.rng), "max_tokens": self.max_tokens,
                   "temperature": 0}
        post_checked(self.client, "/openai/v1/completions", "completions", payload, self.headers,
                     lambda body: check_completion(body, self.max_tokens))

