"""The kserve transformer: texts in (v1, v2 BYTES, OpenAI), token ids to the predictor over v2
(binary tensors on REST, or gRPC), vectors or labels out."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid

import kserve
import numpy as np
from kserve import InferInput, InferRequest, InferResponse

from snapserve.http import kserve_compat

from snapserve import metadata, metrics, tenants, tensors, tokenizer
from snapserve.scheduling.batcher import Batcher, BatchLimits, Work
from snapserve.deadlines import requested_timeout
from snapserve.errors import ServingError, batcher_refusals, json_object
from transformer import encoding_options
from transformer.routes import rerank
from transformer.upstream import PredictorClient
from transformer.config import Settings

log = logging.getLogger("snapserve.transformer")
V1, V2 = "v1", "v2"


@dataclasses.dataclass
class Job:
    """One client request between the kserve hooks: its form, token ids, and later its rows."""

    form: str
    sequences: list[np.ndarray]
    binary: bool = False
    rows: list | None = None
    request_id: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # forwarded: x-request-id, traceparent
    timeout_s: float | None = None  # what the client asked for (x-request-timeout-ms / request-timeout)
    deadline: float = 0.0  # time.monotonic() by which it is answered or dropped (set in predict)
    options: dict = dataclasses.field(default_factory=dict)  # per-form choices (rerank: raw_scores)
    tenant: tenants.Tenant = dataclasses.field(default_factory=tenants.Tenant)  # whose (the API key): its place in the fair queues

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


class EmbeddingTransformer(kserve.Model):
    def __init__(self, settings: Settings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.info = metadata.read(settings.model_dir, "auto", settings.max_length)
        self.encoder = tokenizer.TextEncoder(settings.model_dir, self.info)
        self.classification = self.info.task in (metadata.CLASSIFICATION, metadata.RERANK)
        self.client = PredictorClient(settings.predictor_host, settings.predictor_protocol, settings.model_name,
                                      settings.predictor_timeout, settings.predictor_use_ssl,
                                      settings.predictor_connect_timeout_ms / 1000)
        # Requests that arrive while predictor calls are in flight share the next call: the
        # predictor sees few large requests (two-level batching), each request keeps its rows.
        limits = BatchLimits(max_batch_size=settings.coalesce_max_sequences, max_batch_tokens=1 << 20,
                             max_delay_ms=settings.coalesce_delay_ms, instances=settings.predictor_max_in_flight,
                             max_queue_sequences=settings.max_queue_sequences)
        self.coalescer = Batcher(None, self._call_predictor, limits, isolate=is_request_error,
                                 on_drop=metrics.SEQUENCES_DROPPED.labels("transformer").inc, group_by_tenant=True,
                                 max_batch_s=settings.coalesce_max_call_ms / 1000)
        self.platform = f"snapserve:transformer:{self.info.task}"  # v2 metadata (kserve_compat patch 6)
        kserve_compat.report_model_platform()
        self.ready = True

    def get_input_types(self) -> list[dict]:
        """v2 metadata: texts (a reranker: one query and its documents)."""
        if self.info.task == metadata.RERANK:
            return [tensors.spec("query", "BYTES", [1]), tensors.spec("text", "BYTES", [-1])]
        return [tensors.spec("text", "BYTES", [-1])]

    def get_output_types(self) -> list[dict]:
        if self.info.task == metadata.RERANK:
            return [tensors.spec("score", "FP32", [-1])]
        return tensors.output_specs(self.info)

    # -- validation ------------------------------------------------------------------------
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

    def check_length(self, texts: list[str], truncate: bool) -> None:
        """With ``truncate: false`` a text longer than the model's maximum is refused (422)."""
        if not isinstance(truncate, bool):
            raise ServingError("validation", "'truncate' must be true or false")
        if truncate:
            return
        for i, n in enumerate(self.encoder.untruncated_lengths(texts)):
            if n > self.encoder.max_length:
                raise ServingError("unprocessable", f"item {i} is {n} tokens; this model takes at most "
                                   f"{self.encoder.max_length} (send truncate: true to cut it)")

    def texts_of(self, payload) -> tuple[list[str], str, bool, dict]:
        if isinstance(payload, (bytes, bytearray)):  # a JSON body sent without a JSON content-type
            payload = json_object(payload)
        if isinstance(payload, InferRequest):
            inputs = {i.name: i for i in payload.inputs}
            if "text" not in inputs:
                raise ServingError("validation", "expected a BYTES input named 'text'")
            texts = tensors.texts(inputs["text"])
            params = payload.parameters or {}
            binary = bool(params.get("binary_data_output"))
            options = encoding_options.read(self, params)
            texts = encoding_options.prompted(options, self.validate_texts(texts))
            truncate = params.get("truncate", True)
            self.check_length(texts, getattr(truncate, "bool_param", truncate))  # gRPC wraps parameters
            return texts, V2, payload.from_grpc or binary, options  # gRPC: raw outputs, as Triton
        if isinstance(payload, dict) and "instances" in payload:
            params = payload.get("parameters") or {}
            if not isinstance(params, dict):
                raise ServingError("validation", "'parameters' must be an object")
            options = encoding_options.read(self, params)
            texts = encoding_options.prompted(options, self.validate_texts(payload["instances"]))
            self.check_length(texts, params.get("truncate", True))
            return texts, V1, False, options
        raise ServingError("validation", 'expected {"instances": ["text", ...]} or a v2 request with a BYTES input "text"')

    # -- kserve hooks ----------------------------------------------------------------------
    async def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        with metrics.TOKENIZE.time():
            if len(texts) > 16:  # big requests tokenise off the event loop (Rust, parallel)
                return await asyncio.get_running_loop().run_in_executor(None, self.encoder.encode, texts)
            return self.encoder.encode(texts)

    def request_for(self, sequences: list[np.ndarray], request_id: str) -> InferRequest:
        ids, mask = self.encoder.pad(sequences)
        binary = self.client.binary
        inputs = []
        arrays = [("input_ids", ids), ("attention_mask", mask)]
        types = tokenizer.pad_type_ids(sequences)  # (query, document) pairs: a cross-encoder needs them
        if types is not None:
            arrays.append(("token_type_ids", types))
        for name, array in arrays:
            item = InferInput(name=name, shape=list(array.shape), datatype="INT64")
            item.set_data_from_numpy(array, binary_data=binary)
            inputs.append(item)
        return InferRequest(model_name=self.name, infer_inputs=inputs, request_id=request_id,
                            parameters={"binary_data_output": True} if binary else None)

    def refuse_if_full(self, count: int, headers=None) -> None:
        """Refuse before tokenising when the queue cannot take the request anyway, or not within its
        deadline (cheap 429s)."""
        tenant = tenants.from_headers(headers)
        within = self.timeout_s(requested_timeout(headers)) if self.settings.drop_abandoned else None
        with batcher_refusals():
            self.coalescer.admit(count, within, tenant=tenant.id, max_queued=self.max_queued(tenant))

    def timeout_s(self, asked: float | None) -> float:
        """Seconds a request may take here: what its client asked for, capped by --request_timeout_ms."""
        cap = self.settings.request_timeout_ms / 1000
        return min(cap, asked or cap)

    def max_queued(self, tenant: tenants.Tenant) -> int:
        """A key's cap on queued sequences: its own (keys file), else --max_queue_sequences_per_key,
        else half the queue, so no one key fills it; none without keys."""
        if not tenant.id:
            return 0
        return tenant.max_queued or self.settings.max_queue_sequences_per_key or max(1, self.settings.max_queue_sequences // 2)

    def validate(self, payload):
        return payload  # preprocess validated the client's input; kserve's check expects a dict

    async def preprocess(self, payload, headers=None) -> Job:
        if isinstance(payload, InferRequest) and any(i.name == "query" for i in payload.inputs):
            return await rerank.v2_job(self, payload, headers)
        texts, form, binary, options = self.texts_of(payload)
        self.refuse_if_full(len(texts), headers)
        job = Job(form, await self.tokenize(texts), binary, **traced(headers), options=options)
        if isinstance(payload, InferRequest) and payload.id:
            job.request_id = payload.id  # a v2 answer's id is its request's (Open Inference Protocol)
        return job

    async def predict(self, payload: Job, headers=None, response_headers=None) -> Job:
        if not self.settings.drop_abandoned:  # the old behaviour, for comparisons: the client's deadline unheard
            payload.timeout_s = None
        payload.deadline = payload.deadline or time.monotonic() + self.timeout_s(payload.timeout_s)
        tenant = payload.tenant
        within = payload.deadline - time.monotonic() if self.settings.drop_abandoned else None
        with batcher_refusals():
            self.coalescer.admit(len(payload.sequences), within, tenant.id, self.max_queued(tenant))
            try:
                submitted = self.coalescer.submit(payload.sequences, context=payload, tenant=tenant.id,
                                                  weight=tenant.weight, max_queued=self.max_queued(tenant))
                payload.rows = await asyncio.wait_for(submitted, max(0.0, payload.deadline - time.monotonic()))
            except TimeoutError:  # the coalescer drops its queued sequences (the submit was cancelled)
                raise ServingError("timeout", f"no answer within the request's deadline of "
                                   f"{self.timeout_s(payload.timeout_s) * 1000:.0f} ms") from None
        return payload

    async def _call_predictor(self, work: Work, _instance: int = 0) -> list:
        """One v2 call for coalesced sequences -> one (vector, label) row per sequence.

        A call for one client carries that client's x-request-id and traceparent; a call shared by
        several gets an id of its own, and its log line names the client ids it served."""
        jobs = [job for job in work.contexts if job is not None]
        clients = [job.headers for job in jobs]
        deadline = max((job.deadline for job in jobs), default=0.0) or None  # the longest waiter's
        if len(clients) == 1:
            headers = dict(clients[0])
        else:
            headers = {"x-request-id": uuid.uuid4().hex}
            if clients and "traceparent" in clients[0]:
                headers["traceparent"] = clients[0]["traceparent"]
        call_id = headers.get("x-request-id") or uuid.uuid4().hex
        if jobs:  # one tenant per call (the coalescer groups by tenant): the predictor queues it fairly
            headers.update(jobs[0].tenant.headers())
        if self.settings.log_predictor_calls:
            log.info("predictor call %s: %d sequences for client requests %s", call_id, len(work),
                     ",".join(c.get("x-request-id", "-") for c in clients) or "-")
        response = await self.client.infer(self.request_for(list(work), call_id), headers, deadline)
        # a rerank predictor's raw logits, else its first output (embedding or probabilities)
        first = next((o for o in response.outputs if o.name == "logits"), response.outputs[0])
        matrix = first.as_numpy().astype(np.float32, copy=False)
        labels = self.labels_of(response) or [None] * len(matrix)
        return list(zip(matrix, labels, strict=True))

    async def postprocess(self, job: Job, headers=None, response_headers=None):
        if job.form == rerank.RERANK_V2:
            return rerank.v2_response(self, job)
        matrix = encoding_options.truncate(np.stack([vector for vector, _ in job.rows]), job.options.get("dimensions"))
        if self.info.task == metadata.RERANK:  # a single text's relevance logit as a probability
            matrix = tensors.sigmoid(matrix)
        labels = [label for _, label in job.rows] if self.classification else None
        metrics.SEQUENCES.labels("transformer").inc(len(matrix))
        counts = [len(seq) for seq in job.sequences]  # tokens per text (prompt and special tokens included)
        if job.form == V1:
            return {"predictions": tensors.predictions(matrix, labels),
                    "parameters": {"token_counts": counts, "prompt_tokens": sum(counts)}}
        answer = tensors.response(self.name, job.request_id or uuid.uuid4().hex, matrix, labels, job.binary)
        answer.parameters = token_parameters(counts)
        return answer

    @staticmethod
    def labels_of(response: InferResponse) -> list[str] | None:
        for output in response.outputs:
            if output.name == "label":
                return [v.decode() if isinstance(v, bytes) else str(v) for v in output.as_numpy().reshape(-1)]
        return None

    async def embed(self, texts: list[str], headers=None, truncate: bool = True,
                    options: dict | None = None) -> tuple[np.ndarray, int]:
        """texts -> (vectors [n, dim], prompt tokens): the pipeline without kserve's request types.
        ``options`` from ``encoding_options.read``: Matryoshka dimensions, the prompt."""
        options = options or {}
        texts = encoding_options.prompted(options, self.validate_texts(texts))
        self.check_length(texts, truncate)
        self.refuse_if_full(len(texts), headers)
        job = await self.predict(Job(V1, await self.tokenize(texts), **traced(headers)), headers)
        metrics.SEQUENCES.labels("transformer").inc(len(job.sequences))
        matrix = np.stack([vector for vector, _ in job.rows])
        return encoding_options.truncate(matrix, options.get("dimensions")), job.tokens

    async def drain(self) -> None:
        """Finish the coalesced calls already accepted."""
        self.ready = False
        await self.coalescer.drain()
        await self.client.close()


def token_parameters(counts: list[int]) -> dict:
    """Token counts as v2 response parameters: v2 parameters are scalars (gRPC's InferParameter), so
    the per-text counts travel as one comma-separated string beside their total."""
    return {"token_counts": ",".join(map(str, counts)), "prompt_tokens": sum(counts)}


def traced(headers) -> dict:
    """The client's request id and trace context, for a Job."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    forward = {k: headers[k] for k in ("x-request-id", "traceparent", "tracestate") if k in headers}
    return {"request_id": forward.get("x-request-id", ""), "headers": forward, "timeout_s": requested_timeout(headers),
            "tenant": tenants.from_headers(headers)}



def is_request_error(exc: Exception) -> bool:
    """A coalesced call that failed for one request's content is retried request by request;
    overload, drain and predictor failures are everyone's and are not multiplied by retries."""
    return isinstance(exc, ServingError) and exc.error_type in ("validation", "unprocessable")
