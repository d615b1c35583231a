"""The one embedding/rerank pipeline in process (``transformer/pipeline.py``): the default model's real
tokenizer, a stand-in predictor call that returns one recognisable row per sequence (its length). The
stand-in checks plumbing only (admission, deadlines, validation, counts); it says nothing of model quality."""

from __future__ import annotations

import ast
import asyncio
import time
import types
from pathlib import Path

import numpy as np
import pytest

from snapserve import metadata, metrics, tensors, tokenizer
from snapserve.errors import ServingError
from transformer import pipeline as pipeline_module
from transformer.pipeline import Pipeline, scores

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"model_name": "snap", "max_texts": 8, "max_text_chars": 300, "request_timeout_ms": 5000,
            "drop_abandoned": True, "max_queue_sequences": 64, "max_queue_sequences_per_key": 0,
            "coalesce_max_sequences": 32, "coalesce_delay_ms": 0.0, "predictor_max_in_flight": 1,
            "coalesce_max_call_ms": 0.0}
KEY = {"x-snapserve-tenant": "key-a", "x-snapserve-tenant-max-queued": "3"}  # what the guard sets for an API key


async def lengths(work, _instance: int = 0) -> list:
    """Stand-in predictor: one (row, label) per sequence, the row holding the sequence's length."""
    return [(np.array([float(len(s))], dtype=np.float32), "LABEL_0") for s in work]


class Blocked:
    """Stand-in predictor that holds every call until released (``call``: an async function, as the
    coalescer tells async executors from threaded ones)."""

    def __init__(self):
        self.release = asyncio.Event()
        self.calls = 0

        async def call(work, _instance: int = 0) -> list:
            self.calls += 1
            await self.release.wait()
            return await lengths(work)

        self.call = call


def build(model_dir, task: str = "auto", call=lengths, **settings) -> Pipeline:
    info = metadata.read(model_dir, task, 32)
    pipe = Pipeline(types.SimpleNamespace(**{**SETTINGS, **settings}), info, tokenizer.TextEncoder(model_dir, info), call)
    pipe.tokenised = 0  # how many tokenising calls ran (admission must refuse before any)
    for name in ("encode", "encode_pairs"):
        setattr(pipe.encoder, name, counting(pipe, getattr(pipe.encoder, name)))
    return pipe


def counting(pipe: Pipeline, encode):
    def counted(*args):
        pipe.tokenised += 1
        return encode(*args)
    return counted


def refused(coro) -> ServingError:
    with pytest.raises(ServingError) as exc:
        asyncio.run(coro) if asyncio.iscoroutine(coro) else coro()
    return exc.value


# -- rows, token counts, the metric ----------------------------------------------------------------
def test_embed_returns_each_texts_row_in_order_and_its_token_count(model_dir):
    pipe = build(model_dir)
    counts = [len(s) for s in pipe.encoder.encode(["hello", "hello world, again"])]
    before = metrics.SEQUENCES.labels("transformer")._value.get()
    matrix, tokens = asyncio.run(pipe.embed(["hello", "hello world, again"]))
    assert matrix[:, 0].tolist() == counts and tokens == sum(counts)
    assert metrics.SEQUENCES.labels("transformer")._value.get() - before == 2  # once per request


def test_rerank_tokenises_pairs_and_counts_their_tokens(model_dir):
    pipe = build(model_dir, "rerank")
    pairs = pipe.encoder.encode_pairs("capital of france", ["paris", "a long document about lyon"])
    logits, tokens = asyncio.run(pipe.rerank("capital of france", ["paris", "a long document about lyon"]))
    assert logits.tolist() == [len(p) for p in pairs] and tokens == sum(len(p) for p in pairs)


def test_scores_are_the_one_sigmoid_unless_raw():
    logits = np.array([0.0, 2.0, -50.0], dtype=np.float32)
    assert scores(logits).tolist() == tensors.sigmoid(logits).tolist()
    assert scores(logits)[0] == 0.5 and scores(logits, raw=True) is logits


def test_a_prompt_counts_in_the_tokens(model_dir):
    async def both(pipe):  # one event loop per pipeline: its coalescer's scheduler runs on it
        return (await pipe.embed(["hello"]))[1], (await pipe.embed(["hello"], options={"prompt": "query: "}))[1]

    plain, prompted = asyncio.run(both(build(model_dir)))
    assert prompted == plain + len(build(model_dir).encoder.encode(["query:"])[0]) - 2


def test_big_requests_tokenise_off_the_loop_with_the_same_ids(model_dir):
    pipe = build(model_dir, max_texts=64)
    texts = [f"text number {i}" for i in range(pipeline_module.OFF_LOOP + 4)]
    job = asyncio.run(pipe.texts(texts))
    assert [s.tolist() for s in job.sequences] == [s.tolist() for s in pipe.encoder.encode(texts)]


# -- validation: 400 / 413 / 422 / 404, before admission and tokenising ------------------------------
@pytest.mark.parametrize("texts, truncate, status, reason", [
    ([], True, 400, "non-empty list"),
    ("hello", True, 400, "non-empty list"),
    (["ok", 3], True, 400, "item 1 is int"),
    (["x"] * 9, True, 413, "9 texts in one request; the limit is 8"),
    (["ok", "y" * 301], True, 413, "item 1 has 301 characters; the limit is 300"),
    (["ok"], "yes", 400, "'truncate' must be true or false"),
    (["ok", "word " * 50], False, 422, "item 1 is 52 tokens; this model takes at most 32"),
])
def test_texts_are_refused_with_their_reason(model_dir, texts, truncate, status, reason):
    pipe = build(model_dir)
    error = refused(pipe.texts(texts, {}, truncate))
    assert (error.status, pipe.tokenised) == (status, 0)
    assert reason in error.reason


@pytest.mark.parametrize("query, documents, truncate, status, reason", [
    ("", ["doc"], True, 400, "'query' must be a non-empty string"),
    (None, ["doc"], True, 400, "'query' must be a non-empty string"),
    ("q" * 301, ["doc"], True, 413, "the query has 301 characters"),
    ("query", [], True, 400, "non-empty list"),
    ("query", ["x"] * 9, True, 413, "9 texts"),
    ("query", ["doc"], "no", 400, "'truncate' must be true or false"),
    ("query", ["doc", "word " * 50], False, 422, "document 1 with the query is"),
])
def test_pairs_are_refused_with_their_reason(model_dir, query, documents, truncate, status, reason):
    pipe = build(model_dir, "rerank")
    error = refused(pipe.pairs(query, documents, {}, truncate))
    assert (error.status, pipe.tokenised) == (status, 0)
    assert reason in error.reason


def test_null_truncate_means_true_for_pairs(model_dir):
    assert len(asyncio.run(build(model_dir, "rerank").pairs("q", ["d"], {}, None)).sequences) == 1


def test_a_query_too_long_for_any_document_is_422(model_dir):
    error = refused(build(model_dir, "rerank").rerank("word " * 40, ["x"]))
    assert error.status == 422 and "query" in error.reason


def test_an_embedding_model_is_not_a_reranker(model_dir):
    pipe = build(model_dir)
    error = refused(pipe.rerank("query", ["doc"]))
    assert (error.status, pipe.tokenised) == (404, 0) and "not as a reranker" in error.reason


# -- admission with the request's headers: the key's cap and its deadline -----------------------------
def test_rerank_admission_sees_the_keys_cap_before_tokenising(model_dir):
    async def scenario():
        call = Blocked()
        pipe = build(model_dir, "rerank", call=call.call)
        other = [asyncio.create_task(pipe.rerank("q", ["busy"], {"x-snapserve-tenant": "key-b"}))]
        await asyncio.sleep(0.05)  # key-b's call holds the predictor; key-a's pairs queue behind it
        mine = []
        for _ in range(8):
            mine.append(asyncio.create_task(pipe.rerank("q", ["mine"], KEY)))
            await asyncio.sleep(0.02)
        assert sum(t.done() for t in mine) >= 4  # refused at its cap of 3 queued sequences
        before = pipe.tokenised
        with pytest.raises(ServingError) as exc:
            await pipe.pairs("q", ["one more"], KEY)
        assert pipe.tokenised == before  # refused before tokenising
        await pipe.pairs("q", ["no key"], {})  # the cap is the key's, not the queue's
        call.release.set()
        await asyncio.gather(*other, *mine, return_exceptions=True)
        await pipe.coalescer.drain()
        return exc.value

    error = asyncio.run(scenario())
    assert error.status == 429 and "API key" in error.reason and error.retry_after


def test_rerank_admission_is_told_the_key_its_cap_and_what_is_left_of_the_deadline(model_dir):
    pipe = build(model_dir, "rerank")
    seen = []

    def admit(count, within_s=None, tenant="", max_queued=0):
        seen.append((count, within_s, tenant, max_queued))
        from snapserve.scheduling.admission import QueueFull
        raise QueueFull("full", 2.0)

    pipe.coalescer.admit = admit
    error = refused(pipe.pairs("q", ["a", "b"], {**KEY, "x-request-timeout-ms": "800"}))
    assert (error.status, pipe.tokenised) == (429, 0)
    (count, within, tenant, cap), = seen
    assert (count, tenant, cap) == (2, "key-a", 3) and 0.7 < within <= 0.8


def test_a_spent_deadline_is_504_before_tokenising(model_dir):
    for task, run in (("rerank", lambda p, h: p.rerank("q", ["d"], h)), ("auto", lambda p, h: p.embed(["t"], h))):
        pipe = build(model_dir, task)
        error = refused(run(pipe, {"x-request-timeout-ms": "0.000001"}))
        assert (error.status, error.error_type, pipe.tokenised) == (504, "timeout", 0)


def test_a_job_whose_deadline_passed_after_tokenising_is_504_without_a_predictor_call(model_dir):
    async def scenario():
        call = Blocked()
        pipe = build(model_dir, call=call.call)
        job = await pipe.texts(["t"], {"x-request-timeout-ms": "50"})
        job.deadline = time.monotonic() - 0.001
        with pytest.raises(ServingError) as exc:
            await pipe.submit(job)
        return exc.value, call.calls

    error, calls = asyncio.run(scenario())
    assert (error.status, calls) == (504, 0) and "deadline of 50 ms" in error.reason


def test_no_rows_within_the_deadline_is_504(model_dir):
    async def scenario():
        call = Blocked()
        pipe = build(model_dir, "rerank", call=call.call)
        started = time.monotonic()
        with pytest.raises(ServingError) as exc:
            await pipe.rerank("q", ["d"], {"x-request-timeout-ms": "100"})
        waited = time.monotonic() - started
        call.release.set()
        return exc.value, waited

    error, waited = asyncio.run(scenario())
    assert error.status == 504 and 0.09 < waited < 2


def test_the_deadline_is_unheard_without_drop_abandoned(model_dir):
    pipe = build(model_dir, drop_abandoned=False, request_timeout_ms=5000)
    job = asyncio.run(pipe.texts(["t"], {"x-request-timeout-ms": "0.000001"}))
    assert job.timeout_s is None and job.deadline - time.monotonic() > 4


def test_the_door_check_is_the_pipelines_admission(model_dir):
    pipe = build(model_dir)
    pipe.refuse_if_full(1, KEY)
    assert refused(lambda: pipe.refuse_if_full(1, {"x-request-timeout-ms": "0.000001"})).status == 504


# -- one pipeline, no cycle -------------------------------------------------------------------------
def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_model_and_pipeline_never_import_the_routes():
    for name in ("model.py", "pipeline.py"):
        assert not {m for m in imports(ROOT / "transformer" / name) if m.startswith("transformer.routes")}, name
