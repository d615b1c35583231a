"""The guard's parts without a server: token buckets, key files, the ASGI middlewares on a stub app."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from snapserve.http.bodylimit import BodyLimit
from snapserve.http.gate import ClosedRoutes
from transformer import guard


def test_token_bucket_allows_the_burst_then_refills_at_the_rate():
    buckets = guard.TokenBuckets(rate=2, burst=3)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [None, None, None]
    assert buckets.take("a", now=0.0) == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert buckets.take("b", now=0.0) is None  # callers have their own buckets
    assert buckets.take("a", now=0.5) is None
    assert buckets.take("a", now=10.0) is None  # refill stops at the burst size
    assert [buckets.take("a", now=10.0) for _ in range(3)][-1] is not None


def test_token_buckets_forget_the_oldest_callers_beyond_the_cap():
    buckets = guard.TokenBuckets(rate=1, burst=1, max_callers=100)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}", now=0.0)
    assert len(buckets._buckets) == 100


def test_key_ring_reads_keys_skips_comments_and_reloads_on_change(tmp_path, monkeypatch):
    path = tmp_path / "keys"
    path.write_text("# comment\n  first-key  \n\nsecond-key\n")
    ring = guard.KeyRing(str(path))
    assert ring.match("first-key") == guard.key_id("first-key")
    assert ring.match("second-key") == guard.key_id("second-key")
    assert ring.match("# comment") is None and ring.match("") is None and ring.match("first") is None
    monkeypatch.setattr(guard, "RELOAD_SECONDS", 0.0)
    path.write_text("rotated-key\n")  # a Secret update
    assert ring.match("rotated-key") is not None
    assert ring.match("first-key") is None
    path.write_text("")  # an emptied file keeps the keys loaded rather than locking everyone out
    assert ring.match("rotated-key") is not None


@pytest.mark.parametrize("content", ["", "# only a comment\n\n"])
def test_an_empty_keys_file_is_refused_at_start(tmp_path, content):
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(ValueError, match="holds no keys"):
        guard.GuardSettings(api_keys_file=str(path))


def test_settings_are_validated_when_built(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        guard.GuardSettings(api_keys_file=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="rate_limit"):
        guard.GuardSettings(rate_limit_rps=-1)
    with pytest.raises(ValueError, match="max_body_bytes"):
        guard.GuardSettings(max_body_bytes=0)
    assert guard.GuardSettings(rate_limit_rps=2.5).burst == 3


@pytest.mark.parametrize(("method", "path", "open_"), [
    ("GET", "/", True), ("GET", "/metrics", True), ("GET", "/v2/health/live", True),
    ("GET", "/v2/health/ready", True), ("GET", "/v2/models/snap/ready", True), ("GET", "/v1/models/snap", True),
    ("POST", "/v1/models/snap:predict", False), ("GET", "/v1/models/snap:predict", False),
    ("POST", "/v2/models/snap/infer", False), ("POST", "/openai/v1/embeddings", False),
    ("GET", "/v2/models/snap", False), ("GET", "/openai/v1/models", False), ("GET", "/v2/health/readyx", False),
])
def test_only_probes_and_scrapes_are_open(method, path, open_):
    assert guard.is_open(method, path) is open_


# -- the middlewares, driven as ASGI apps --------------------------------------------------------
def scope(path="/v1/models/snap:predict", headers=(), client=("10.0.0.1", 4000), query=b""):
    return {"type": "http", "method": "POST", "path": path, "headers": list(headers), "client": client,
            "query_string": query}


async def echo(scope, receive, send):
    """A stub app: answers 200 with the body it read."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"".join(chunks)})


def call(app, scope_, chunks=(b"",)):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope_, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_guard_rate_limits_per_client_address_without_keys():
    app = guard.Guard(echo, buckets=guard.TokenBuckets(rate=1, burst=1))
    assert call(app, scope(client=("10.0.0.1", 1)))[0] == 200
    status, headers, body = call(app, scope(client=("10.0.0.1", 2)))
    assert status == 429 and headers[b"retry-after"] == b"1"
    assert orjson.loads(body)["error_type"] == "rate_limited"
    assert call(app, scope(client=("10.0.0.2", 1)))[0] == 200
    assert call(app, scope(path="/v2/health/ready", client=("10.0.0.1", 3)))[0] == 200  # probes unlimited


def test_guard_sheds_past_max_concurrent_requests():
    gate = asyncio.Event()

    async def slow(scope, receive, send):
        await gate.wait()
        await echo(scope, receive, send)

    app = guard.Guard(slow, max_concurrent=2)

    async def scenario():
        results = []

        async def one():
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"x", "more_body": False}

            async def send(message):
                sent.append(message)

            await app(scope(), receive, send)
            results.append(sent[0]["status"])

        tasks = [asyncio.create_task(one()) for _ in range(3)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*tasks)
        return sorted(results)

    assert asyncio.run(scenario()) == [200, 200, 429]


def test_guard_door_check_refuses_before_the_body_is_read():
    """A request the queue would refuse anyway (door_check raises 429/503) is answered by the guard
    without its body being read; a malformed header is left to the app, and other paths are not checked."""
    from snapserve.scheduling.batch import BatchLimits
    from snapserve.scheduling.device_batcher import DeviceBatcher
    from snapserve.errors import ServingError

    full = DeviceBatcher(None, lambda batch: batch, BatchLimits(max_batch_size=1, max_delay_ms=0, max_queue_sequences=1))
    full._queue.pending.append((None, 0))  # one sequence waiting: the queue is full

    def door(headers):
        if headers.get("x-bad"):
            raise ServingError("validation", "bad header")
        full.admit(1)

    app = guard.Guard(echo, door_check=door)
    status, headers, body = call(app, scope(), chunks=(b"never read",))
    assert status == 429 and int(headers[b"retry-after"]) >= 1, (status, headers)
    assert orjson.loads(body)["error_type"] == "overloaded" and b"never read" not in body
    assert call(app, scope(headers=[(b"x-bad", b"1")]), chunks=(b"read",))[0] == 200  # the app's own answer
    assert call(app, scope(path="/v1/tokenize"), chunks=(b"read",))[0] == 200  # not an inference path
    full._queue.pending.clear()
    assert call(app, scope(), chunks=(b"read",)) == (200, {}, b"read")


def test_body_limit_on_content_length_and_while_streaming():
    app = BodyLimit(echo, max_bytes=10)
    assert call(app, scope(headers=[(b"content-length", b"10")]), [b"0123456789"]) == (200, {}, b"0123456789")
    status, _, body = call(app, scope(headers=[(b"content-length", b"11")]), [b"0123456789a"])
    assert status == 413 and orjson.loads(body)["error_type"] == "payload_too_large"
    assert call(app, scope(), [b"01234", b"56789"])[2] == b"0123456789"  # chunked, within the limit
    assert call(app, scope(), [b"01234", b"56789", b"!"])[0] == 413  # chunked, one byte over
    assert call(app, scope(headers=[(b"content-length", b"ten")]), [b""])[0] == 400


def test_closed_routes():
    app = ClosedRoutes(echo)
    for path in ("/v2/repository/models/snap/unload", "/v1/models/snap:explain", "/v2/models/snap/versions/1/infer"):
        status, _, body = call(app, scope(path=path))
        assert status == 404 and orjson.loads(body)["error_type"] == "not_found", path
    assert call(app, scope(path="/v2/models/snap/ready", query=b"model_version=2"))[0] == 404
    assert call(app, scope(path="/v2/models/snap/ready", query=b"model_version="))[0] == 200
    assert call(app, scope(path="/v2/models/snap/infer"))[0] == 200
