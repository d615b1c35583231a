"""``python -m predictor``: load the snapshot, then serve it with kserve (REST + gRPC)."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("snapserve.predictor")


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no tqdm bar in the pod log
    from predictor import config

    try:
        settings = config.load(argv)
    except ValueError as exc:
        print(f"predictor: {exc}", file=sys.stderr)
        return 2
    import kserve
    from kserve import model_server

    from predictor.encoder.model import SnapshotModel
    from snapserve import metrics
    from snapserve.settings import describe
    from snapserve.http import gate, handlers as http_errors, kserve_compat, lifecycle
    from snapserve.metadata import SnapshotInvalid
    from snapserve.snapshot import SnapshotError

    server = kserve.ModelServer(http_port=settings.http_port, grpc_port=settings.grpc_port, workers=1,
                                grace_period=settings.grace_period, enable_latency_logging=settings.trace_logging)
    lifecycle.configure_logging(settings)
    log.info("settings: %s", describe(settings))
    from snapserve import metadata

    try:
        generating = metadata.read(settings.model_dir, settings.task).task == metadata.GENERATE
        if generating:  # a causal LM: continuous batching and the generate extension
            from predictor.generate import routes as generate_api
            from predictor.generate.model import GenerateModel
        model = GenerateModel(settings) if generating else SnapshotModel(settings)
        model.load()
    except (SnapshotInvalid, SnapshotError, FileNotFoundError) as exc:
        log.error("cannot serve: %s", exc)
        print(f"predictor: cannot serve: {exc}", file=sys.stderr)
        return 1
    http_errors.install(model_server.app)
    if generating:
        model_server.app.include_router(generate_api.router(model))
    kserve_compat.grpc_deadlines_and_errors()
    kserve_compat.fast_tensors()
    kserve_compat.limit_client_reads(settings.client_timeout_s, metrics.SLOW_CLIENTS_CLOSED.labels("predictor").inc)
    gate.install(model_server.app, "predictor", settings.max_body_bytes, log_access=settings.log_access,
                 log_probes=settings.log_probes, drop_abandoned=settings.drop_abandoned)
    log.info("max body %d bytes", settings.max_body_bytes)
    lifecycle.run(server, model, settings.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
