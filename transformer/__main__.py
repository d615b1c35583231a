"""``python -m transformer``: tokenise, call the predictor, post-process (kserve REST + gRPC)."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("snapserve.transformer")


def main(argv: list[str] | None = None) -> int:
    from transformer import config

    try:
        settings = config.load(argv)
    except ValueError as exc:
        print(f"transformer: {exc}", file=sys.stderr)
        return 2
    import kserve
    from kserve import model_server

    from snapserve import metrics
    from snapserve.settings import describe

    from snapserve.http import handlers as http_errors, kserve_compat, lifecycle
    from snapserve.metadata import SnapshotInvalid
    from transformer import guard
    from transformer.routes import openai as openai_api, rerank, tokenize as tokenize_api
    from transformer.model import EmbeddingTransformer

    # No kserve PredictorConfig: the transformer's own PredictorClient calls the predictor.
    server = kserve.ModelServer(http_port=settings.http_port, grpc_port=settings.grpc_port,
                                workers=settings.workers, grace_period=settings.grace_period,
                                enable_latency_logging=settings.trace_logging)
    lifecycle.configure_logging(settings)
    log.info("settings: %s", describe(settings))
    from snapserve import metadata

    try:
        generating = metadata.read(settings.model_dir).task == metadata.GENERATE
        if generating:  # a causal LM: chat templates, detokenising, the predictor's generate stream
            from transformer.routes import openai_chat
            from transformer.chat.model import ChatModel
        model = ChatModel(settings) if generating else EmbeddingTransformer(settings)
    except (FileNotFoundError, ValueError, SnapshotInvalid) as exc:
        print(f"transformer: cannot serve: {exc}", file=sys.stderr)
        return 1
    http_errors.install(model_server.app)
    if generating:
        model_server.app.include_router(openai_chat.router(model))
    else:
        model_server.app.include_router(openai_api.router(model))
        model_server.app.include_router(rerank.router(model))
        model_server.app.include_router(tokenize_api.router(model))
    # Both products: ready only while a predictor answered recently (README: "Readiness"), since a
    # Service must not route to a transformer whose requests can only wait and fail; and the door check,
    # the queue's admission for one more request, answered before its body is read.
    ready_check = None
    if settings.predictor_unready_after_s > 0:
        async def ready_check():
            return await model.client.unready_reason(settings.predictor_unready_after_s)
    kserve_compat.grpc_deadlines_and_errors()
    kserve_compat.fast_tensors()
    kserve_compat.limit_client_reads(settings.client_timeout_s, metrics.SLOW_CLIENTS_CLOSED.labels("transformer").inc)
    guard.install(model_server.app, settings.guard, log_access=settings.log_access, log_probes=settings.log_probes,
                  ready_check=ready_check, drop_abandoned=settings.drop_abandoned,
                  door_check=lambda headers: model.refuse_if_full(1, headers))
    lifecycle.run(server, model, settings.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
