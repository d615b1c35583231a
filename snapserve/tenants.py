"""Who a request is for, so one caller cannot take the whole queue (fair queuing between API keys).

The transformer's guard names the caller by its API key (``--api_keys_file``; a key's line may carry
``weight=`` and ``max_queued=``) and puts it on the request as ``x-snapserve-tenant*`` headers, after
removing any a client sent. The transformer's coalescer and the predictor's batcher order queued work
by weighted fair queuing over tenants, and the transformer caps each tenant's queued sequences; the
transformer forwards the headers to the predictor with each call. Without keys every request is the
one tenant ``""``; within a tenant the queues are fair between requests (shortest first, aged:
``snapserve.scheduling.fair_queue``).
"""

from __future__ import annotations

import dataclasses

from snapserve.errors import ServingError

HEADERS = ("x-snapserve-tenant", "x-snapserve-tenant-weight", "x-snapserve-tenant-max-queued")


@dataclasses.dataclass(frozen=True)
class Tenant:
    id: str = ""
    weight: float = 1.0  # share of the queue against other tenants' (2: twice the default)
    max_queued: int = 0  # sequences it may have queued at once (0: the server's default)

    def __post_init__(self):
        if not self.weight > 0 or self.weight > 1000:
            raise ValueError(f"a tenant's weight must be > 0 and <= 1000 (got {self.weight})")
        if self.max_queued < 0:
            raise ValueError(f"a tenant's max_queued must be >= 0 (got {self.max_queued})")

    def cap(self, per_key: int, queue_limit: int) -> int:
        """How much this tenant may have queued: its own cap (keys file), else the server's ``per_key``,
        else half the queue's ``queue_limit``, so no one key fills it; no cap without keys (0)."""
        if not self.id:
            return 0
        return self.max_queued or per_key or max(1, queue_limit // 2)

    def headers(self) -> dict[str, str]:
        if not self.id:
            return {}
        return dict(zip(HEADERS, (self.id, f"{self.weight:g}", str(self.max_queued)), strict=True))


def from_headers(headers) -> Tenant:
    """The tenant named by a request's headers (a dict, any case), or the default one."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    name = headers.get(HEADERS[0], "")
    if not name:
        return Tenant()
    try:
        return Tenant(name[:64], float(headers.get(HEADERS[1], 1) or 1), int(headers.get(HEADERS[2], 0) or 0))
    except ValueError as exc:
        raise ServingError("validation", f"bad x-snapserve-tenant headers: {exc}") from None


def options(words: list[str]) -> dict:
    """``weight=2 max_queued=500`` (a keys-file line after its key) as Tenant keyword arguments."""
    kinds = {"weight": float, "max_queued": int}
    found = {}
    for word in words:
        name, _, value = word.partition("=")
        if name not in kinds or not value:
            raise ValueError(f"unknown key option {word!r}: expected weight=<number> or max_queued=<count>")
        try:
            found[name] = kinds[name](value)
        except ValueError:
            raise ValueError(f"key option {word!r}: {value!r} is not a {kinds[name].__name__}") from None
    return found
