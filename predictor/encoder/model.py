"""The kserve Model: decodes v1/v2 inputs into token sequences, batches them, encodes answers.

Owns no HTTP details: kserve's REST and gRPC servers call ``predict``; errors are raised as
``ServingError`` and rendered by the shared status table.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import kserve
import numpy as np
from kserve import InferRequest

from predictor.config import Settings
from snapserve import deadlines, metrics, tenants, tensors, tokenizer
from snapserve.http import kserve_compat
from snapserve.scheduling.device_batcher import DeviceBatcher, instance_threads
from snapserve.errors import ServingError, json_object
from snapserve.metadata import CLASSIFICATION, RERANK

log = logging.getLogger("snapserve.predictor")


class SnapshotModel(kserve.Model):
    def __init__(self, settings: Settings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.engine = None
        self.encoder: tokenizer.TextEncoder | None = None
        self.batcher: DeviceBatcher | None = None

    def load(self) -> bool:
        from predictor.encoder import autotune, engine, tuning_cache
        from snapserve import snapshot

        s = self.settings
        if s.verify_snapshot and snapshot.verify(s.model_dir):
            log.info("snapshot manifest verified: %s", s.model_dir / snapshot.MANIFEST)
        cache = tuning_cache.for_settings(s) if s.tuning_cache else None
        # loading (with its fp32/bf16 check and the engine race) runs on the thread that serves instance 0
        threads = instance_threads(s.instances)
        self.engine = threads[0].submit(
            engine.load, s.model_dir, s.task, s.device, s.dtype, s.instances, s.cpu_threads, s.max_length,
            engine=s.engine, compile=s.compile, quantize=s.quantize, cpu_bf16=s.cpu_bf16, cache=cache).result()
        self.info = self.engine.info
        if (s.model_dir / "tokenizer.json").is_file():
            self.encoder = tokenizer.TextEncoder(s.model_dir, self.info)
        self.max_length = self.info.max_length
        self.vocab_size = self.info.vocab_size
        log.info("model %s: %s max_length=%d instances=%d", s.model_name,
                 " ".join(f"{k}={v}" for k, v in self.engine.describe().items()), self.max_length, s.instances)
        self.batcher = DeviceBatcher(None, self._execute, s.batch_limits(),
                                     metrics.BatchObserver(), on_drop=metrics.SEQUENCES_DROPPED.labels("predictor").inc,
                                     threads=threads)
        # warm-up on the threads that will serve (DeviceBatcher's one per instance), then the auto limits from it
        self.batcher.limits = autotune.tune(self.engine, self.batcher, s, self.max_length, cache)
        metrics.export_wait("predictor", self.batcher.estimated_wait)
        metrics.GPU_USED.set_function(lambda: self.engine.gpu_memory()[0])
        metrics.GPU_TOTAL.set_function(lambda: self.engine.gpu_memory()[1])
        self.platform = f"snapserve:predictor:{self.info.task}"  # v2 metadata (kserve_compat patch 6)
        kserve_compat.report_model_platform()
        self.ready = True
        return self.ready

    def _execute(self, work: list[np.ndarray], instance: int) -> np.ndarray:
        """A batch's padding and forward, both on its instance's thread: one thread hop a batch instead of
        two (prepare on the batcher's own thread, then execute), which was most of what a single sentence
        spent between entering the batcher and its forward (tools/one_client_overhead.py). Preparing the
        next batch while one runs saved less: padding a batch takes tens of microseconds."""
        return self.engine.execute(self.engine.prepare(work), instance)

    def get_input_types(self) -> list[dict]:
        """v2 metadata: padded token ids (a reranker's pairs also carry their segment ids); a BYTES
        ``text`` input is accepted too when the snapshot has a tokenizer."""
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if self.info.task == RERANK else [])
        return [tensors.spec(name, "INT64", [-1, -1]) for name in names]

    def get_output_types(self) -> list[dict]:
        return tensors.output_specs(self.info)

    # -- inputs ----------------------------------------------------------------------------
    def _texts(self, texts) -> list[np.ndarray]:
        if self.encoder is None:
            raise ServingError("validation", "this snapshot has no tokenizer.json: send input_ids and attention_mask")
        if not isinstance(texts, list) or not texts:
            raise ServingError("validation", "expected a non-empty list of strings")
        if not all(isinstance(t, str) for t in texts):
            raise ServingError("validation", "every text must be a string")
        return self.encoder.encode(texts)

    def _tensor(self, request: InferRequest, name: str) -> np.ndarray | None:
        for item in request.inputs:
            if item.name == name:
                tensors.check(item, integers=item.datatype != "BYTES")
                try:
                    return item.as_numpy()
                except Exception as exc:  # noqa: BLE001 - malformed tensor data is the client's
                    raise ServingError("validation", f"input {name!r}: {exc}") from None
        return None

    def _sequences_v2(self, request: InferRequest) -> list[np.ndarray]:
        names = {i.name: i.datatype for i in request.inputs}
        if "text" in names:
            return self._texts(tensors.texts(next(i for i in request.inputs if i.name == "text")))
        if "input_ids" not in names:
            raise ServingError("validation", "expected input 'input_ids' (+ 'attention_mask') or 'text'")
        for name in ("input_ids", "attention_mask"):
            if name in names and names[name] not in ("INT64", "INT32"):
                raise ServingError("validation", f"input {name!r} must be INT64")
        ids = self._tensor(request, "input_ids")
        mask = self._tensor(request, "attention_mask")
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ServingError("validation", f"input 'input_ids' must have shape [n, length], got {list(ids.shape)}")
        if mask is None:
            mask = np.ones_like(ids)
        if mask.shape != ids.shape:
            raise ServingError("validation", "'attention_mask' must have the shape of 'input_ids'")
        if not np.isin(mask, (0, 1)).all():
            raise ServingError("validation", "'attention_mask' values must be 0 or 1")
        if ids.shape[1] > self.max_length:
            raise ServingError("unprocessable", f"sequences are {ids.shape[1]} tokens; this model takes {self.max_length}")
        if ids.min() < 0 or (self.vocab_size and ids.max() >= self.vocab_size):
            raise ServingError("validation", f"token ids must be in [0, {self.vocab_size})")
        sequences = tokenizer.unpad(ids.astype(np.int64, copy=False), mask)
        if any(len(s) == 0 for s in sequences):
            raise ServingError("validation", "every sequence needs at least one token")
        if "token_type_ids" in names:  # a cross-encoder's (query, document) pairs
            sequences = self._segments(request, names["token_type_ids"], sequences, ids.shape, mask)
        return sequences

    def _segments(self, request: InferRequest, datatype: str, sequences, shape, mask) -> list[np.ndarray]:
        if datatype not in ("INT64", "INT32"):
            raise ServingError("validation", "input 'token_type_ids' must be INT64")
        types = self._tensor(request, "token_type_ids")
        if types.shape != shape:
            raise ServingError("validation", "'token_type_ids' must have the shape of 'input_ids'")
        limit = self.info.type_vocab_size or 2
        if types.min() < 0 or types.max() >= limit:
            raise ServingError("validation", f"token type ids must be in [0, {limit})")
        rows = tokenizer.unpad(types.astype(np.int64, copy=False), mask)
        return [tokenizer.Segmented.of(s, t) for s, t in zip(sequences, rows, strict=True)]

    def _sequences(self, payload) -> list[np.ndarray]:
        if isinstance(payload, (bytes, bytearray)):  # a JSON body sent without a JSON content-type
            payload = json_object(payload)
        if isinstance(payload, InferRequest):
            return self._sequences_v2(payload)
        if isinstance(payload, dict) and "instances" in payload:
            return self._texts(payload["instances"])
        raise ServingError("validation", 'expected {"instances": ["text", ...]} or a v2 inference request')

    # -- predict ---------------------------------------------------------------------------
    async def predict(self, payload, headers=None):
        # (--drop_abandoned false, the old behaviour for comparisons: the caller's deadline is not heard)
        timeout = deadlines.timeout_for(headers if self.settings.drop_abandoned else None,
                                        self.settings.request_timeout_ms)
        deadline = time.monotonic() + timeout
        admit_within = (lambda: deadline - time.monotonic()) if self.settings.drop_abandoned else (lambda: None)
        self.batcher.admit(1, admit_within())  # refuse before decoding (cheap 429s under overload)
        sequences = self._sequences(payload)
        limit = self.batcher.limits.max_queue_sequences
        if len(sequences) > limit:  # would hold the model for longer than a full queue does
            raise ServingError("payload_too_large", f"{len(sequences)} sequences in one request; this predictor "
                               f"queues at most {limit} (--max_queue_sequences)")
        self.batcher.admit(len(sequences), admit_within())
        try:  # past the deadline its queued sequences leave the batcher (the submit is cancelled)
            tenant = tenants.from_headers(headers)  # the transformer's caller: its place in the fair queue
            # asyncio.timeout, not wait_for: the submit runs in this task instead of one of its own, two loop
            # turns fewer between the rows and the response at one client
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                rows = await self.batcher.submit(sequences, tenant=tenant.id, weight=tenant.weight)
        except TimeoutError:
            raise ServingError("timeout", f"not computed within the request's deadline of {timeout * 1000:.0f} ms "
                               "(x-request-timeout-ms, capped by --request_timeout_ms)") from None
        metrics.SEQUENCES.labels("predictor").inc(len(sequences))
        matrix = np.stack(rows).astype(np.float32, copy=False)
        labels, logits = None, None
        if self.info.task in (CLASSIFICATION, RERANK):
            labels = [self.info.labels[i] for i in matrix.argmax(axis=1)]
        if self.info.task == RERANK:  # the raw logits travel beside the probabilities (raw_scores)
            logits, matrix = matrix, tensors.sigmoid(matrix)
        if isinstance(payload, InferRequest):
            params = payload.parameters or {}
            # gRPC answers in raw_output_contents, as Triton does (its clients read nothing else)
            binary = payload.from_grpc or bool(params.get("binary_data_output"))
            return tensors.response(self.name, response_id(payload, headers), matrix, labels, binary, logits)
        return {"predictions": tensors.predictions(matrix, labels)}

    async def drain(self) -> None:
        """Turn not-ready, then finish everything accepted."""
        self.ready = False
        if self.batcher is not None:
            await asyncio.wait_for(self.batcher.drain(), self.settings.grace_period)


def response_id(request: InferRequest, headers) -> str:
    """A v2 answer's id is its request's (Open Inference Protocol), else the x-request-id."""
    return request.id or (headers or {}).get("x-request-id") or uuid.uuid4().hex
