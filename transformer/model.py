"""The kserve transformer: texts in (v1, v2 BYTES, OpenAI), token ids to the predictor over v2
(binary tensors on REST, or gRPC), vectors or labels out."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid

import httpx
import kserve
import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse

from predictor import encoding, metrics
from predictor.errors import ServingError, json_object
from transformer.config import Settings

log = logging.getLogger("snapserve.transformer")
V1, V2 = "v1", "v2"


@dataclasses.dataclass
class Job:
    """What postprocess needs to know about the request it answers."""

    form: str
    count: int
    tokens: int
    binary: bool = False


class EmbeddingTransformer(kserve.Model):
    def __init__(self, settings: Settings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.encoder = encoding.TextEncoder(settings.model_dir, settings.max_length)
        config = json.loads((settings.model_dir / "config.json").read_text())
        architectures = config.get("architectures") or []
        self.classification = any(a.endswith("ForSequenceClassification") for a in architectures)
        self._jobs: dict[str, Job] = {}
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
        if truncate:
            return
        if not isinstance(truncate, bool):
            raise ServingError("validation", "'truncate' must be true or false")
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
            if inputs["text"].datatype != "BYTES":
                raise ServingError("validation", "input 'text' must be BYTES")
            try:
                raw = inputs["text"].as_numpy().reshape(-1).tolist()
                texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in raw]
            except (UnicodeDecodeError, ValueError) as exc:
                raise ServingError("validation", f"input 'text' is not valid UTF-8 text ({exc})") from None
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
        binary = self.settings.predictor_protocol == "v2"
        inputs = []
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            item = InferInput(name=name, shape=list(array.shape), datatype="INT64")
            item.set_data_from_numpy(array, binary_data=binary)
            inputs.append(item)
        return InferRequest(model_name=self.name, infer_inputs=inputs, request_id=request_id,
                            parameters={"binary_data_output": True} if binary else None)

    async def preprocess(self, payload, headers=None) -> InferRequest:
        texts, form, binary = self.texts_of(payload)
        sequences = await self.tokenize(texts)
        request_id = uuid.uuid4().hex
        self._jobs[request_id] = Job(form, len(texts), sum(len(s) for s in sequences), binary)
        return self.request_for(sequences, request_id)

    async def _http_predict(self, payload, headers=None, response_headers=None):
        # kserve's own version presets "Content-Type: application/json", which then sits beside the
        # "content-type: application/octet-stream" of a binary body and the predictor reads JSON.
        forward = {k: v for k, v in (headers or {}).items() if k.lower() in ("x-request-id", "traceparent")}
        return await self._http_client.infer(
            self.predictor_config.predictor_base_url, model_name=self.name, data=payload,
            headers=forward, response_headers=response_headers,
        )

    async def predict(self, payload, headers=None, response_headers=None):
        started = asyncio.get_running_loop().time()
        try:
            return await super().predict(payload, headers, response_headers)
        except httpx.HTTPStatusError as exc:
            self._jobs.pop(payload.id, None)
            raise upstream_error(exc.response) from None
        except (httpx.TransportError, OSError) as exc:
            self._jobs.pop(payload.id, None)
            raise ServingError("unavailable", f"predictor unreachable ({type(exc).__name__})", retry_after=1) from None
        except Exception as exc:
            self._jobs.pop(payload.id, None)
            grpc_error = grpc_status(exc)
            if grpc_error is None:
                raise
            raise grpc_error from None
        finally:
            metrics.PREDICTOR_CALL.observe(asyncio.get_running_loop().time() - started)

    async def postprocess(self, response: InferResponse, headers=None, response_headers=None):
        job = self._jobs.pop(response.id, None) or Job(V2, 0, 0)
        matrix = response.outputs[0].as_numpy().astype(np.float32, copy=False)
        metrics.SEQUENCES.labels("transformer").inc(len(matrix))
        labels = self.labels_of(response)
        if job.form == V1:
            if labels is not None:
                return {"predictions": [{"label": lab, "score": float(row.max())} for lab, row in zip(labels, matrix)]}
            return {"predictions": matrix.tolist()}
        out = InferOutput(name=response.outputs[0].name, shape=list(matrix.shape), datatype="FP32")
        out.set_data_from_numpy(matrix, binary_data=job.binary)
        outputs = [out]
        if labels is not None:
            label = InferOutput(name="label", shape=[len(labels)], datatype="BYTES")
            label.set_data_from_numpy(np.array([lab.encode() for lab in labels], dtype=np.object_),
                                      binary_data=job.binary)
            outputs.append(label)
        return InferResponse(response_id=response.id, model_name=self.name, infer_outputs=outputs,
                             use_binary_outputs=job.binary)

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
        sequences = await self.tokenize(texts)
        request = self.request_for(sequences, uuid.uuid4().hex)
        response = await self.predict(request, headers)
        return response.outputs[0].as_numpy().astype(np.float32, copy=False), sum(len(s) for s in sequences)


def upstream_error(response: httpx.Response) -> ServingError:
    """A predictor error as the client should see it: overload and drain pass through."""
    try:
        reason = response.json().get("error", "")
    except ValueError:
        reason = ""
    status = response.status_code
    if status in (429, 503):
        retry = response.headers.get("retry-after")
        kind = "overloaded" if status == 429 else "unavailable"
        return ServingError(kind, reason or "predictor busy", retry_after=float(retry) if retry else 1)
    if 400 <= status < 500:
        return ServingError("unprocessable" if status == 422 else "validation", reason or "rejected by the predictor")
    return ServingError("upstream", f"predictor failed with status {status}")


def grpc_status(exc: Exception) -> ServingError | None:
    try:
        import grpc
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, grpc.aio.AioRpcError):
        return None
    code = exc.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ServingError("overloaded", exc.details() or "predictor busy", retry_after=1)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ServingError("unavailable", "predictor unavailable", retry_after=1)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ServingError("validation", exc.details() or "rejected by the predictor")
    return ServingError("upstream", f"predictor failed ({code.name})")
