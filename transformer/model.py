"""The kserve transformer: texts in (v1, v2 BYTES, OpenAI), token ids to the predictor over v2
(binary tensors on REST, or gRPC), vectors or labels out."""

from __future__ import annotations

import logging
import uuid

import kserve
import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse

from snapserve.http import kserve_compat

from snapserve import metadata, tensors, tokenizer
from snapserve.scheduling.batcher import Work
from snapserve.errors import ServingError, json_object
from transformer import encoding_options
from transformer.pipeline import RERANK_V2, V1, V2, Job, Pipeline, matrix_of, logits_of, scores
from transformer.upstream import PredictorClient
from transformer.config import Settings

log = logging.getLogger("snapserve.transformer")


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
        # validate -> admit -> tokenise -> submit -> rows: every entry point (these hooks, routes/) runs it
        self.pipeline = Pipeline(settings, self.info, self.encoder, self._call_predictor)
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

    # -- parsing (kserve's request types; the pipeline validates) ----------------------------
    async def texts_job(self, payload, headers) -> Job:
        """A v1 or v2 request of texts -> an admitted, tokenised Job."""
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
            job = await self.pipeline.texts(texts, headers, params.get("truncate", True), options, V2)
            job.binary = payload.from_grpc or binary  # gRPC: raw outputs, as Triton
        elif isinstance(payload, dict) and "instances" in payload:
            params = payload.get("parameters") or {}
            if not isinstance(params, dict):
                raise ServingError("validation", "'parameters' must be an object")
            options = encoding_options.read(self, params)
            job = await self.pipeline.texts(payload["instances"], headers, params.get("truncate", True), options, V1)
        else:
            raise ServingError("validation", 'expected {"instances": ["text", ...]} or a v2 request with a BYTES input "text"')
        job.options = options
        return job

    async def rerank_job(self, request: InferRequest, headers) -> Job:
        """A v2 request with BYTES ``query`` [1] and ``text`` [n] -> an admitted Job of pairs."""
        inputs = {i.name: i for i in request.inputs}
        if "text" not in inputs:
            raise ServingError("validation", "a rerank request needs BYTES inputs 'query' [1] and 'text' [n]")
        query = tensors.texts(inputs["query"])
        if len(query) != 1:
            raise ServingError("validation", f"input 'query' must hold one text (shape [1]), got {len(query)}")
        params = request.parameters or {}
        raw = encoding_options.flag(params.get("raw_scores"), "raw_scores", False)
        job = await self.pipeline.pairs(query[0], tensors.texts(inputs["text"]), headers, params.get("truncate"),
                                        RERANK_V2)
        job.binary = request.from_grpc or encoding_options.flag(params.get("binary_data_output"),
                                                                "binary_data_output", False)
        job.options["raw_scores"] = raw
        return job

    # -- kserve hooks ----------------------------------------------------------------------
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
        deadline (cheap 429s): the pipeline's admission, for the door check."""
        self.pipeline.refuse_if_full(count, headers)

    def validate(self, payload):
        return payload  # preprocess validated the client's input; kserve's check expects a dict

    async def preprocess(self, payload, headers=None) -> Job:
        if isinstance(payload, InferRequest) and any(i.name == "query" for i in payload.inputs):
            job = await self.rerank_job(payload, headers)
        else:
            job = await self.texts_job(payload, headers)
        if isinstance(payload, InferRequest) and payload.id:
            job.request_id = payload.id  # a v2 answer's id is its request's (Open Inference Protocol)
        return job

    async def predict(self, payload: Job, headers=None, response_headers=None) -> Job:
        return await self.pipeline.submit(payload)

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
        response_id = job.request_id or uuid.uuid4().hex
        if job.form == RERANK_V2:  # FP32 score [n] in input order
            shown = scores(logits_of(job), job.options.get("raw_scores"))
            out = InferOutput(name="score", shape=[len(shown)], datatype="FP32")
            out.set_data_from_numpy(shown, binary_data=job.binary)
            return InferResponse(response_id=response_id, model_name=self.name, infer_outputs=[out],
                                 use_binary_outputs=job.binary, parameters=token_parameters(job.counts))
        matrix = encoding_options.truncate(matrix_of(job), job.options.get("dimensions"))
        if self.info.task == metadata.RERANK:  # a single text's relevance logit as a probability
            matrix = scores(matrix)
        labels = [label for _, label in job.rows] if self.classification else None
        if job.form == V1:
            return {"predictions": tensors.predictions(matrix, labels),
                    "parameters": {"token_counts": job.counts, "prompt_tokens": job.tokens}}
        answer = tensors.response(self.name, response_id, matrix, labels, job.binary)
        answer.parameters = token_parameters(job.counts)
        return answer

    @staticmethod
    def labels_of(response: InferResponse) -> list[str] | None:
        for output in response.outputs:
            if output.name == "label":
                return [v.decode() if isinstance(v, bytes) else str(v) for v in output.as_numpy().reshape(-1)]
        return None

    async def drain(self) -> None:
        """Finish the coalesced calls already accepted."""
        self.ready = False
        await self.pipeline.coalescer.drain()
        await self.client.close()


def token_parameters(counts: list[int]) -> dict:
    """Token counts as v2 response parameters: v2 parameters are scalars (gRPC's InferParameter), so
    the per-text counts travel as one comma-separated string beside their total."""
    return {"token_counts": ",".join(map(str, counts)), "prompt_tokens": sum(counts)}
