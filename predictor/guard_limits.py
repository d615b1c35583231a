"""The predictor's request-body limit (the transformer's guard uses the same ``BodyLimit``).

The default is larger than the transformer's: the transformer forwards token ids as binary INT64
tensors, ``input_ids`` + ``attention_mask`` = 16 bytes per token, so its largest request (2,048
texts x 256 tokens) is 8 MiB plus the JSON header.
"""

from __future__ import annotations

import logging

from predictor import flags
from predictor.bodylimit import BodyLimit

log = logging.getLogger("snapserve.predictor")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


def add_arguments(group) -> None:
    """``--max_body_bytes`` (env MAX_BODY_BYTES) on the predictor's argument group."""
    flags.add(group, "max_body_bytes", DEFAULT_MAX_BODY_BYTES, int, help="largest request body (more: 413)")


def install(app, args) -> None:
    """Add the body limit to kserve's FastAPI app; ``args`` carries ``max_body_bytes``."""
    max_bytes = int(getattr(args, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    log.info("max body %d bytes", max_bytes)
