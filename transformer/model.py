"""The kserve transformer: texts in (v1, v2 BYTES, OpenAI), token ids to the predictor over v2
(binary tensors on REST, or gRPC), vectors or labels out."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid

import kserve
import numpy as np
from kserve import InferInput, InferRequest, InferResponse

from snapserve import metadata, metrics, tensors, tokenizer
from snapserve.batching import Batcher, BatchLimits, Work
from snapserve.errors import ServingError, batcher_refusals, json_object
from transformer.client import PredictorClient
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

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


class EmbeddingTransformer(kserve.Model):
    def __init__(self, settings: Settings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.info = metadata.read(settings.model_dir, "auto", settings.max_length)
        self.encoder = tokenizer.TextEncoder(settings.model_dir, self.info)
        self.classification = self.info.task == metadata.CLASSIFICATION
        self.client = PredictorClient(settings.predictor_host, settings.predictor_protocol, settings.model_name,
                                      settings.predictor_timeout, settings.predictor_use_ssl)
        # Requests that arrive while predictor calls are in flight share the next call: the
        # predictor sees few large requests (two-level batching), each request keeps its rows.
        limits = BatchLimits(max_batch_size=settings.coalesce_max_sequences, max_batch_tokens=1 << 20,
                             max_delay_ms=settings.coalesce_delay_ms, instances=settings.predictor_max_in_flight,
                             max_queue_sequences=settings.max_queue_sequences)
        self.coalescer = Batcher(None, self._call_predictor, limits, isolate=is_request_error)
        self.ready = True

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

    def texts_of(self, payload) -> tuple[list[str], str, bool]:
        if isinstance(payload, (bytes, bytearray)):  # a JSON body sent without a JSON content-type
            payload = json_object(payload)
        if isinstance(payload, InferRequest):
            inputs = {i.name: i for i in payload.inputs}
            if "text" not in inputs:
                raise ServingError("validation", "expected a BYTES input named 'text'")
            texts = tensors.texts(inputs["text"])
            params = payload.parameters or {}
            binary = bool(params.get("binary_data_output"))
            texts = self.validate_texts(texts)
            truncate = params.get("truncate", True)
            self.check_length(texts, getattr(truncate, "bool_param", truncate))  # gRPC wraps parameters
            return texts, V2, binary and not payload.from_grpc
        if isinstance(payload, dict) and "instances" in payload:
            params = payload.get("parameters") or {}
            if not isinstance(params, dict):
                raise ServingError("validation", "'parameters' must be an object")
            texts = self.validate_texts(payload["instances"])
            self.check_length(texts, params.get("truncate", True))
            return texts, V1, False
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
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            item = InferInput(name=name, shape=list(array.shape), datatype="INT64")
            item.set_data_from_numpy(array, binary_data=binary)
            inputs.append(item)
        return InferRequest(model_name=self.name, infer_inputs=inputs, request_id=request_id,
                            parameters={"binary_data_output": True} if binary else None)

    def refuse_if_full(self, count: int) -> None:
        """Refuse before tokenising when the queue cannot take the request anyway (cheap 429s)."""
        with batcher_refusals():
            self.coalescer.admit(count)

    def validate(self, payload):
        return payload  # preprocess validated the client's input; kserve's check expects a dict

    async def preprocess(self, payload, headers=None) -> Job:
        texts, form, binary = self.texts_of(payload)
        self.refuse_if_full(len(texts))
        job = Job(form, await self.tokenize(texts), binary, **traced(headers))
        if isinstance(payload, InferRequest) and payload.id:
            job.request_id = payload.id  # a v2 answer's id is its request's (Open Inference Protocol)
        return job

    async def predict(self, payload: Job, headers=None, response_headers=None) -> Job:
        with batcher_refusals():
            payload.rows = await self.coalescer.submit(payload.sequences, context=payload.headers)
        return payload

    async def _call_predictor(self, work: Work, _instance: int = 0) -> list:
        """One v2 call for coalesced sequences -> one (vector, label) row per sequence.

        A call for one client carries that client's x-request-id and traceparent; a call shared by
        several gets an id of its own, and its log line names the client ids it served."""
        clients = [c for c in work.contexts if c]
        if len(clients) == 1:
            headers = dict(clients[0])
        else:
            headers = {"x-request-id": uuid.uuid4().hex}
            if clients and "traceparent" in clients[0]:
                headers["traceparent"] = clients[0]["traceparent"]
        call_id = headers.get("x-request-id") or uuid.uuid4().hex
        log.info("predictor call %s: %d sequences for client requests %s", call_id, len(work),
                 ",".join(c.get("x-request-id", "-") for c in clients) or "-")
        response = await self.client.infer(self.request_for(list(work), call_id), headers)
        matrix = response.outputs[0].as_numpy().astype(np.float32, copy=False)
        labels = self.labels_of(response) or [None] * len(matrix)
        return list(zip(matrix, labels, strict=True))

    async def postprocess(self, job: Job, headers=None, response_headers=None):
        matrix = np.stack([vector for vector, _ in job.rows])
        labels = [label for _, label in job.rows] if self.classification else None
        metrics.SEQUENCES.labels("transformer").inc(len(matrix))
        if job.form == V1:
            return {"predictions": tensors.predictions(matrix, labels)}
        return tensors.response(self.name, job.request_id or uuid.uuid4().hex, matrix, labels, job.binary)

    @staticmethod
    def labels_of(response: InferResponse) -> list[str] | None:
        for output in response.outputs:
            if output.name == "label":
                return [v.decode() if isinstance(v, bytes) else str(v) for v in output.as_numpy().reshape(-1)]
        return None

    async def embed(self, texts: list[str], headers=None, truncate: bool = True) -> tuple[np.ndarray, int]:
        """texts -> (vectors [n, dim], prompt tokens): the pipeline without kserve's request types."""
        texts = self.validate_texts(texts)
        self.check_length(texts, truncate)
        self.refuse_if_full(len(texts))
        job = await self.predict(Job(V1, await self.tokenize(texts), **traced(headers)), headers)
        metrics.SEQUENCES.labels("transformer").inc(len(job.sequences))
        return np.stack([vector for vector, _ in job.rows]), job.tokens

    async def drain(self) -> None:
        """Finish the coalesced calls already accepted."""
        self.ready = False
        await self.coalescer.drain()
        await self.client.close()


def traced(headers) -> dict:
    """The client's request id and trace context, for a Job."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    forward = {k: headers[k] for k in ("x-request-id", "traceparent", "tracestate") if k in headers}
    return {"request_id": forward.get("x-request-id", ""), "headers": forward}


def is_request_error(exc: Exception) -> bool:
    """A coalesced call that failed for one request's content is retried request by request;
    overload, drain and predictor failures are everyone's and are not multiplied by retries."""
    return isinstance(exc, ServingError) and exc.error_type in ("validation", "unprocessable")
