"""snapserve load test: one user class per traffic pattern, every response body checked.

    locust --config loadtest/locust/locust.conf --headless -H http://127.0.0.1:8080 -u 32 -r 8 -t 1m \
        --html out/locust.html --csv out/locust --csv-full-history --slo-p99-ms 500 --slo-max-failure-ratio 0.001
    python -m loadtest.locust.report out/locust_stats_history.csv --out out/locust.png

Pick patterns by naming classes (``... SingleSentenceUser OpenAIUser``); pick a load shape with
``SNAPSERVE_SHAPE=step|spike`` (see loadtest/locust/shapes.py). Settings: ``--model-name`` /
``SNAPSERVE_MODEL``, ``--api-key`` / ``SNAPSERVE_API_KEY`` (sent as ``Authorization: Bearer``),
``--dim`` / ``SNAPSERVE_DIM``. Run locust as its own process: its gevent patching breaks kserve.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from locust import FastHttpUser, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `loadtest.*` without installing

from loadtest import texts
from loadtest.locust import checks, shapes, slo  # slo registers the SLO gate
from loadtest.locust.post import post_checked

__all__ = ["slo"]

if (_shape := shapes.selected()) is not None:
    globals()[_shape.__name__] = _shape  # locust runs the one shape class it finds here


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--model-name", env_var="SNAPSERVE_MODEL", default="all-minilm-l6-v2",
                       help="InferenceService / --model_name the servers were started with")
    parser.add_argument("--api-key", env_var="SNAPSERVE_API_KEY", default="", is_secret=True,
                       help="sent as 'Authorization: Bearer KEY' when set")
    parser.add_argument("--dim", env_var="SNAPSERVE_DIM", type=int, default=384,
                       help="expected embedding dimension")


class _EmbeddingUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)  # closed loop: the next request as soon as the last one is answered
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.model = opts.model_name if opts else "all-minilm-l6-v2"
        self.dim = opts.dim if opts else 384
        key = opts.api_key if opts else ""
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.rng = random.Random()

    def _post(self, path: str, name: str, payload: dict, check, n: int) -> None:
        post_checked(self.client, path, name, payload, self.headers, lambda body: check(body, n, self.dim))

    def v1(self, instances: list[str], name: str) -> None:
        self._post(f"/v1/models/{self.model}:predict", name, {"instances": instances}, checks.v1,
                   len(instances))


class SingleSentenceUser(_EmbeddingUser):
    """The commonest call: one short sentence per request (v1)."""

    weight = 4

    @task
    def single(self) -> None:
        self.v1([texts.single(self.rng)], "v1 single")


class Batch64User(_EmbeddingUser):
    """Clients that batch on their side: 64 sentences per request (v1)."""

    weight = 1

    @task
    def batch64(self) -> None:
        self.v1(texts.batch(self.rng, 64), "v1 batch64")


class OpenAIUser(_EmbeddingUser):
    """The OpenAI embeddings route, `input` as a string and as a list."""

    weight = 2

    @task(2)
    def one(self) -> None:
        payload = {"model": self.model, "input": texts.single(self.rng)}
        self._post("/openai/v1/embeddings", "openai single", payload, checks.openai, 1)

    @task(1)
    def many(self) -> None:
        payload = {"model": self.model, "input": texts.batch(self.rng, 8)}
        self._post("/openai/v1/embeddings", "openai list8", payload, checks.openai, 8)


class V2BytesUser(_EmbeddingUser):
    """Open Inference Protocol v2 with a BYTES input named `text`."""

    weight = 2

    @task
    def infer(self) -> None:
        items = texts.batch(self.rng, self.rng.choice((1, 4)))
        payload = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(items)], "data": items}]}
        self._post(f"/v2/models/{self.model}/infer", "v2 bytes", payload, checks.v2, len(items))


class MixedLengthUser(_EmbeddingUser):
    """Short and long texts (past the 256-token window), Korean and emoji, 1-8 per request."""

    weight = 1

    @task
    def mixed(self) -> None:
        self.v1(texts.mixed(self.rng, self.rng.randint(1, 8)), "v1 mixed")


class RerankUser(_EmbeddingUser):
    """Cross-encoder reranking (a snapshot served as task rerank): 1 query x 16 documents per request,
    Cohere-shaped ``/v1/rerank``. Runs only with ``SNAPSERVE_TASK=rerank`` (the embedding classes are
    then the ones to leave out): an embedding model answers the route 404."""

    abstract = os.environ.get("SNAPSERVE_TASK", "embedding") != "rerank"
    weight = 2

    @task
    def rerank(self) -> None:
        payload = {"model": self.model, "query": texts.single(self.rng), "documents": texts.batch(self.rng, 16),
                   "return_documents": False}
        self._post("/v1/rerank", "rerank 1x16", payload, checks.rerank, 16)
from loadtest.locust.generate import ChatStreamUser, CompletionsUser  # noqa: E402,F401 - SNAPSERVE_TASK=generate
