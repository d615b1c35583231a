"""The one embedding / classification / rerank pipeline: validate -> admit -> tokenise -> submit -> rows.

Every entry point runs it: the kserve v1/v2 hooks (``model.py``, texts and v2 query/text pairs), OpenAI
``/v1/embeddings`` and the rerank routes (Cohere/Jina, TEI) in ``routes/``. Those parse and format
only; what a request goes through is decided here, once:

- validation: a non-empty list of strings within ``--max_texts`` / ``--max_text_chars`` (400/413), with
  ``truncate: false`` none longer than the model takes (422); a reranker's query likewise;
- admission before any tokenising, with the request's headers: its deadline starts here (the
  client's ``x-request-timeout-ms`` / ``request-timeout``, capped by ``--request_timeout_ms``), and a
  queue that cannot take it (in all, for its API key's cap, or within what is left of the deadline)
  answers 429 now; a deadline already spent answers 504;
- tokenising (off the event loop for big requests), single texts or (query, document) pairs;
- submit to the coalescer within what is left of the deadline (504 past it) -> one row per sequence;
- token counts (``Job.counts``) and the sequences metric, once per request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np

from snapserve import deadlines, metadata, metrics, tenants, tensors
from snapserve.deadlines import requested_timeout
from snapserve.errors import ServingError
from snapserve.scheduling.batch import BatchLimits
from snapserve.scheduling.coalescer import Coalescer
from transformer import encoding_options

V1, V2 = "v1", "v2"
RERANK_V2 = "rerank-v2"  # a Job's form for v2 pair requests (BYTES query [1] and text [n])
OFF_LOOP = 16  # requests with more texts than this tokenise off the event loop (Rust, parallel)


@dataclasses.dataclass
class Job:
    """One client request through the pipeline: its form, token ids, and later its rows."""

    form: str
    sequences: list[np.ndarray]
    binary: bool = False
    rows: list | None = None
    request_id: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # forwarded: x-request-id, traceparent
    timeout_s: float | None = None  # what the client asked for (x-request-timeout-ms / request-timeout)
    deadline: float = 0.0  # time.monotonic() by which it is answered or dropped (set at admission)
    options: dict = dataclasses.field(default_factory=dict)  # per-form choices (rerank: raw_scores)
    tenant: tenants.Tenant = dataclasses.field(default_factory=tenants.Tenant)  # whose (the API key): its place in the fair queues

    @property
    def counts(self) -> list[int]:
        """Tokens per text (prompt and special tokens included)."""
        return [len(s) for s in self.sequences]

    @property
    def tokens(self) -> int:
        return sum(self.counts)


class Pipeline:
    """Texts or pairs -> rows from the predictor, through one coalescer. ``call(work, instance)`` is the
    coalescer's executor: one predictor call for coalesced sequences -> one (vector, label) row each."""

    def __init__(self, settings, info: metadata.ModelInfo, encoder, call):
        self.settings, self.info, self.encoder = settings, info, encoder
        self.name = settings.model_name
        # Requests that arrive while predictor calls are in flight share the next call: the
        # predictor sees few large requests (two-level batching), each request keeps its rows.
        limits = BatchLimits(max_batch_size=settings.coalesce_max_sequences, max_batch_tokens=1 << 20,
                             max_delay_ms=settings.coalesce_delay_ms, instances=settings.predictor_max_in_flight,
                             max_queue_sequences=settings.max_queue_sequences)
        self.coalescer = Coalescer(call, limits, isolate=is_request_error,
                                   on_drop=metrics.SEQUENCES_DROPPED.labels("transformer").inc,
                                   max_batch_s=settings.coalesce_max_call_ms / 1000)
        metrics.export_wait("transformer", self.coalescer.estimated_wait)
        self.awaiting = metrics.awaiting_predictor()

    # -- whole requests -----------------------------------------------------------------------
    async def embed(self, texts, headers=None, truncate=True, options: dict | None = None) -> tuple[np.ndarray, int]:
        """texts -> (vectors [n, dim], prompt tokens). ``options`` from ``encoding_options.read``:
        Matryoshka dimensions, the prompt."""
        options = options or {}
        job = await self.submit(await self.texts(texts, headers, truncate, options))
        return encoding_options.truncate(matrix_of(job), options.get("dimensions")), job.tokens

    async def rerank(self, query, documents, headers=None, truncate=True) -> tuple[np.ndarray, int]:
        """-> (one raw logit per document [n], tokens of all pairs); ``scores`` makes them probabilities."""
        job = await self.submit(await self.pairs(query, documents, headers, truncate))
        return logits_of(job), job.tokens

    # -- steps ----------------------------------------------------------------------------------
    async def texts(self, texts, headers=None, truncate=True, options: dict | None = None, form: str = V1) -> Job:
        """Validated, admitted and tokenised single texts (the prompt of ``options`` prepended)."""
        texts = encoding_options.prompted(options or {}, self.validate_texts(texts))
        self.check_length(texts, truncate)
        job = self.admit(len(texts), headers, form)
        job.sequences = await self.tokenize(self.encoder.encode, texts)
        return job

    async def pairs(self, query, documents, headers=None, truncate=True, form: str = V1) -> Job:
        """Validated, admitted and tokenised (query, document) pairs, with their segment ids."""
        self.check_served_as_reranker()
        query = self.check_query(query)
        documents = self.validate_texts(documents)  # 400 / 413 as for embeddings
        if not encoding_options.flag(truncate, "truncate", True):
            for i, n in enumerate(self.encoder.untruncated_pair_lengths(query, documents)):
                if n > self.encoder.max_length:
                    raise ServingError("unprocessable", f"document {i} with the query is {n} tokens; this model takes "
                                       f"at most {self.encoder.max_length} (send truncate: true to cut the document)")
        job = self.admit(len(documents), headers, form)
        job.sequences = await self.tokenize(self.encoder.encode_pairs, query, documents)
        return job

    def admit(self, count: int, headers=None, form: str = V1) -> Job:
        """The door, before any tokenising: the request's deadline starts now. Refused (429) when the
        queue, or this API key's share of it, cannot take ``count`` more sequences, or not within what
        is left of the deadline; 504 when nothing is left of it. -> the request's (empty) Job."""
        job = Job(form, [], **traced(headers))
        if not self.settings.drop_abandoned:  # the old behaviour, for comparisons: the client's deadline unheard
            job.timeout_s = None
        job.deadline = time.monotonic() + self.timeout_s(job.timeout_s)
        self._admit(job, count)
        return job

    def refuse_if_full(self, count: int, headers=None) -> None:
        """The door check alone (cheap 429s before a body is read)."""
        self.admit(count, headers)

    async def tokenize(self, encode, *args) -> list[np.ndarray]:
        """``encode(*args)`` (the encoder's ``encode`` or ``encode_pairs``); the last argument holds the texts."""
        with metrics.TOKENIZE.time():
            if len(args[-1]) > OFF_LOOP:
                return await asyncio.get_running_loop().run_in_executor(None, encode, *args)
            return encode(*args)

    async def submit(self, job: Job) -> Job:
        """An admitted job's sequences through the coalescer within what is left of its deadline -> its rows."""
        self._admit(job, len(job.sequences))  # again: the queue may have filled while it tokenised
        try:
            submitted = self.coalescer.submit(job.sequences, context=job, tenant=job.tenant.id,
                                              weight=job.tenant.weight, max_queued=self.max_queued(job.tenant))
            with self.awaiting.track_inprogress():  # until its rows arrive, it fails or it is cancelled
                job.rows = await asyncio.wait_for(submitted, max(0.0, job.deadline - time.monotonic()))
        except TimeoutError:  # the coalescer drops its queued sequences (the submit was cancelled)
            raise self.late(job) from None
        metrics.SEQUENCES.labels("transformer").inc(len(job.rows))
        return job

    def _admit(self, job: Job, count: int) -> None:
        within = job.deadline - time.monotonic() if self.settings.drop_abandoned else None
        if within is not None and within <= 0:
            raise self.late(job)
        self.coalescer.admit(count, within, job.tenant.id, self.max_queued(job.tenant))

    def late(self, job: Job) -> ServingError:
        return ServingError("timeout", f"no answer within the request's deadline of "
                            f"{self.timeout_s(job.timeout_s) * 1000:.0f} ms")

    def timeout_s(self, asked: float | None) -> float:
        """Seconds a request may take here: what its client asked for, capped by --request_timeout_ms."""
        return deadlines.capped(asked, self.settings.request_timeout_ms)

    def max_queued(self, tenant: tenants.Tenant) -> int:
        """A key's cap on queued sequences (``Tenant.cap``: its own, else --max_queue_sequences_per_key, else half of --max_queue_sequences)."""
        return tenant.cap(self.settings.max_queue_sequences_per_key, self.settings.max_queue_sequences)

    # -- validation -----------------------------------------------------------------------------
    def validate_texts(self, texts) -> list[str]:
        if not isinstance(texts, list) or not texts:
            raise ServingError("validation", "expected a non-empty list of strings")
        if len(texts) > self.settings.max_texts:
            raise ServingError("payload_too_large", f"{len(texts)} texts in one request; the limit is "
                               f"{self.settings.max_texts}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ServingError("validation", f"item {i} is {type(text).__name__}, expected a string")
            if len(text) > self.settings.max_text_chars:
                raise ServingError("payload_too_large", f"item {i} has {len(text)} characters; the limit is "
                                   f"{self.settings.max_text_chars}")
        return texts

    def check_length(self, texts: list[str], truncate) -> None:
        """With ``truncate: false`` a text longer than the model's maximum is refused (422)."""
        truncate = getattr(truncate, "bool_param", truncate)  # gRPC wraps parameters
        if not isinstance(truncate, bool):
            raise ServingError("validation", "'truncate' must be true or false")
        if truncate:
            return
        for i, n in enumerate(self.encoder.untruncated_lengths(texts)):
            if n > self.encoder.max_length:
                raise ServingError("unprocessable", f"item {i} is {n} tokens; this model takes at most "
                                   f"{self.encoder.max_length} (send truncate: true to cut it)")

    def check_served_as_reranker(self) -> None:
        if self.info.task != metadata.RERANK:
            raise ServingError("not_found", f"model {self.name!r} is served as {self.info.task!r}, not as a "
                               "reranker (a one-label *ForSequenceClassification snapshot, or --task rerank)")

    def check_query(self, query) -> str:
        if not isinstance(query, str) or not query.strip():
            raise ServingError("validation", "'query' must be a non-empty string")
        if len(query) > self.settings.max_text_chars:
            raise ServingError("payload_too_large", f"the query has {len(query)} characters; the limit is "
                               f"{self.settings.max_text_chars}")
        return query


# -- rows -------------------------------------------------------------------------------------------
def matrix_of(job: Job) -> np.ndarray:
    """A job's vectors (or class probabilities, or a reranker's logits) as one matrix [n, width]."""
    return np.stack([vector for vector, _ in job.rows])


def logits_of(job: Job) -> np.ndarray:
    """A reranker's one raw logit per pair [n]."""
    return np.asarray([vector[0] for vector, _ in job.rows], dtype=np.float32)


def scores(logits: np.ndarray, raw: bool = False) -> np.ndarray:
    """Relevance scores as clients see them: the sigmoid of the logit (sentence-transformers' CrossEncoder
    default), or the logit itself with ``raw_scores``."""
    return logits if raw else tensors.sigmoid(logits)


def traced(headers) -> dict:
    """The client's request id, trace context, timeout and tenant, for a Job."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    forward = {k: headers[k] for k in ("x-request-id", "traceparent", "tracestate") if k in headers}
    return {"request_id": forward.get("x-request-id", ""), "headers": forward, "timeout_s": requested_timeout(headers),
            "tenant": tenants.from_headers(headers)}


def is_request_error(exc: Exception) -> bool:
    """A coalesced call that failed for one request's content is retried request by request;
    overload, drain and predictor failures are everyone's and are not multiplied by retries."""
    return isinstance(exc, ServingError) and exc.error_type in ("validation", "unprocessable")
