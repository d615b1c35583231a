"""The predictor's request limits: a body limit and closed routes (model repository, explain, versions).

The transformer's guard uses the same two middlewares.

The default is larger than the transformer's: the transformer forwards token ids as binary INT64
tensors, ``input_ids`` + ``attention_mask`` = 16 bytes per token, so its largest request (2,048
texts x 256 tokens) is 8 MiB plus the JSON header.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

from predictor import flags
from predictor.bodylimit import BodyLimit, reject

log = logging.getLogger("snapserve.predictor")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


class ClosedRoutes:
    """404 for kserve routes snapserve does not serve.

    kserve answers ``POST /v2/repository/models/<name>/unload`` without any check: one anonymous
    request would take the model out of service until the pod restarts (snapserve loads its one
    model at start and never needs the repository API). ``:explain`` and ``/versions/...`` only
    ever answer 501, which callers and alerts would read as a server fault.
    """

    CLOSED = re.compile(r"^/v2/repository(/|$)|:explain$|^/v2/models/[^/]+/versions(/|$)")

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (self.CLOSED.search(scope["path"]) or versioned(scope)):
            return await reject(send, "not_found", f"{scope['path']} is not served by snapserve "
                                "(no model repository API, explainer or model versions)")
        return await self.app(scope, receive, send)


def versioned(scope) -> bool:
    """A non-empty ``?model_version=``: kserve answers 501 to it on every route."""
    query = scope.get("query_string", b"")
    if b"model_version" not in query:
        return False
    values = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=True).get("model_version", [])
    return any(values)


def add_arguments(group) -> None:
    """``--max_body_bytes`` (env MAX_BODY_BYTES) on the predictor's argument group."""
    flags.add(group, "max_body_bytes", DEFAULT_MAX_BODY_BYTES, int, help="largest request body (more: 413)")


def install(app, args) -> None:
    """Add the limits to kserve's FastAPI app; ``args`` carries ``max_body_bytes``."""
    max_bytes = int(getattr(args, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    app.add_middleware(ClosedRoutes)
    log.info("max body %d bytes", max_bytes)
