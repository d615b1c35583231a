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
    from kserve.predictor_config import PredictorConfig

    from predictor import errors, flags, lifecycle
    from transformer import guard, openai_api
    from transformer.model import EmbeddingTransformer

    predictor = PredictorConfig(
        predictor_host=settings.predictor_host, predictor_protocol=settings.predictor_protocol,
        predictor_request_timeout_seconds=settings.predictor_timeout,
        predictor_health_check=settings.predictor_health_check,
    )
    server = kserve.ModelServer(http_port=settings.http_port, grpc_port=settings.grpc_port,
                                workers=settings.workers, grace_period=settings.grace_period,
                                predictor_config=predictor)
    lifecycle.configure_logging()
    log.info("settings: %s", flags.describe(settings))
    try:
        model = EmbeddingTransformer(settings)
    except (FileNotFoundError, ValueError) as exc:
        print(f"transformer: cannot serve: {exc}", file=sys.stderr)
        return 1
    errors.install(model_server.app)
    model_server.app.include_router(openai_api.router(model))
    guard.install(model_server.app, settings.guard)
    model_server.app.add_middleware(lifecycle.RequestGate, component="transformer")
    lifecycle.run(server, model, settings.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
