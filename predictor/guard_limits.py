"""The predictor's request limits: a body limit and a closed model-repository API.

The transformer's guard uses the same two middlewares.

The default is larger than the transformer's: the transformer forwards token ids as binary INT64
tensors, ``input_ids`` + ``attention_mask`` = 16 bytes per token, so its largest request (2,048
texts x 256 tokens) is 8 MiB plus the JSON header.
"""

from __future__ import annotations

import logging

from predictor import flags
from predictor.bodylimit import BodyLimit, reject

log = logging.getLogger("snapserve.predictor")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


class ClosedRepository:
    """404 for kserve's model-repository extension (``/v2/repository/...``).

    kserve serves ``POST /v2/repository/models/<name>/unload`` without any check: one anonymous
    request would take the model out of service until the pod restarts. snapserve loads its one
    model at start and never needs it.
    """

    PREFIX = "/v2/repository"

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(self.PREFIX):
            return await reject(send, "not_found", "the model repository API (load/unload) is disabled")
        return await self.app(scope, receive, send)


def add_arguments(group) -> None:
    """``--max_body_bytes`` (env MAX_BODY_BYTES) on the predictor's argument group."""
    flags.add(group, "max_body_bytes", DEFAULT_MAX_BODY_BYTES, int, help="largest request body (more: 413)")


def install(app, args) -> None:
    """Add the limits to kserve's FastAPI app; ``args`` carries ``max_body_bytes``."""
    max_bytes = int(getattr(args, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    app.add_middleware(ClosedRepository)
    log.info("max body %d bytes", max_bytes)
