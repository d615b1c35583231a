"""The transformer's settings: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from snapserve import flags
from transformer import guard


@dataclasses.dataclass(frozen=True)
class Settings:
    model_name: str
    model_dir: Path
    predictor_host: str
    predictor_protocol: str
    predictor_timeout: int
    predictor_use_ssl: bool
    predictor_health_check: bool
    max_length: int
    max_texts: int
    max_text_chars: int
    coalesce_max_sequences: int
    coalesce_delay_ms: float
    coalesce_max_call_ms: float
    predictor_max_in_flight: int
    max_queue_sequences: int
    max_queue_sequences_per_key: int
    max_queue_requests: int
    max_queue_requests_per_key: int
    http_port: int
    grpc_port: int
    workers: int
    grace_period: int
    log_access: bool
    log_probes: bool
    trace_logging: bool
    drop_abandoned: bool
    client_timeout_s: float
    log_predictor_calls: bool
    request_timeout_ms: float
    predictor_connect_timeout_ms: float
    predictor_unready_after_s: float
    guard: guard.GuardSettings
    max_dimensions: int = 0  # widest Matryoshka `dimensions` a request may ask for (0: the model's width)
    matryoshka_dims: tuple[int, ...] = ()  # the only widths allowed (empty: the snapshot's, else any)

    def __post_init__(self):
        if self.max_dimensions < 0 or any(d < 1 for d in self.matryoshka_dims):
            raise ValueError("--max_dimensions must be >= 0 and --matryoshka_dims positive integers")
        if not self.predictor_host:
            raise ValueError("--predictor_host is required (host:port of the predictor)")
        if self.predictor_protocol not in ("v2", "grpc-v2"):
            raise ValueError("--predictor_protocol must be v2 (REST, binary tensors) or grpc-v2")
        for name in ("max_texts", "max_text_chars", "coalesce_max_sequences", "predictor_max_in_flight",
                     "max_queue_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        for name in ("request_timeout_ms", "predictor_connect_timeout_ms"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0 (got {getattr(self, name)})")
        if self.max_queue_requests < 1 or self.max_queue_requests_per_key < 0:
            raise ValueError("--max_queue_requests must be at least 1 and --max_queue_requests_per_key >= 0")
        if self.max_queue_sequences_per_key < 0:
            raise ValueError("--max_queue_sequences_per_key must be >= 0 (0: half of --max_queue_sequences)")
        if not self.predictor_unready_after_s >= 0:
            raise ValueError("--predictor_unready_after_s must be >= 0")
        if not self.coalesce_delay_ms >= 0:  # the coalescer would report it as its own max_delay_ms
            raise ValueError(f"--coalesce_delay_ms must be >= 0 (got {self.coalesce_delay_ms})")


def parser() -> argparse.ArgumentParser:
    p, g = flags.server_parser(
        "transformer", "snapserve transformer: validation, tokenisation and post-processing on CPU")
    flags.add(g, "max_texts", 2048, int, help="most texts in one request (more: 413)")
    flags.add(g, "max_text_chars", 100_000, int, help="longest text in characters (longer: 413)")
    flags.add(g, "coalesce_max_sequences", 256, int, help="most sequences coalesced into one predictor call")
    flags.add(g, "coalesce_delay_ms", 0.5, float, help="wait for more requests while no predictor call is in flight")
    flags.add(g, "coalesce_max_call_ms", 100.0, flags.non_negative, help="a predictor call holds at most about "
              "this many ms of work at the measured throughput (a request waits for its whole call); 0: only "
              "--coalesce_max_sequences")
    flags.add(g, "predictor_max_in_flight", 4, int, help="predictor calls at once from this process")
    flags.add(g, "max_queue_sequences", 2048, int,
              help="sequences waiting for a predictor call before 429 (size it to 1-2 s of capacity)")
    flags.add(g, "max_queue_sequences_per_key", 0, int, help="with API keys: sequences one key may have waiting "
              "before its requests get 429 (a key's max_queued= in the keys file wins; 0: half of --max_queue_sequences)")
    flags.add(g, "max_queue_requests", 256, int, help="generate: chat/completion requests held at once, waiting or "
              "streaming, before 429 (the predictor's --max_queue_requests is its own engine's)")
    flags.add(g, "max_queue_requests_per_key", 0, int, help="generate, with API keys: requests one key may hold "
              "before its requests get 429 (a key's max_queued= in the keys file wins; 0: half of --max_queue_requests)")
    flags.add(g, "predictor_connect_timeout_ms", 3_000.0, float, help="connecting to the predictor")
    flags.add(g, "predictor_unready_after_s", 10.0, float, help="turn not-ready once no predictor has "
              "answered for this long (0: readiness ignores the predictor)")
    flags.add(g, "log_predictor_calls", False, bool,
              help="one line per predictor call, naming the client request ids it served")
    flags.add(g, "max_dimensions", 0, int, help="widest Matryoshka 'dimensions' a request may ask for "
              "(0: the model's width)")
    flags.add(g, "matryoshka_dims", (), int_list, help="comma-separated widths 'dimensions' must be one of "
              "(default: the snapshot's config_sentence_transformers.json matryoshka_dims, else any up to the width)")
    guard.add_arguments(g)
    return p


def int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def load(argv: list[str] | None = None) -> Settings:
    args = parser().parse_args(argv)
    protocol = args.predictor_protocol if args.predictor_protocol != "v1" else args.protocol
    if protocol == "v1":
        protocol = "v2"  # kserve's default; the predictor speaks v2 with binary tensors
    return Settings(
        model_name=args.model_name, model_dir=Path(args.model_dir), predictor_host=args.predictor_host or "",
        predictor_protocol=protocol, predictor_timeout=args.predictor_request_timeout_seconds,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_health_check=args.enable_predictor_health_check, max_length=args.max_length, max_texts=args.max_texts,
        max_text_chars=args.max_text_chars, coalesce_max_sequences=args.coalesce_max_sequences,
        coalesce_delay_ms=args.coalesce_delay_ms,
        coalesce_max_call_ms=args.coalesce_max_call_ms, predictor_max_in_flight=args.predictor_max_in_flight,
        max_queue_sequences=args.max_queue_sequences,
        max_queue_sequences_per_key=args.max_queue_sequences_per_key,
        max_queue_requests=args.max_queue_requests, max_queue_requests_per_key=args.max_queue_requests_per_key, http_port=args.http_port, grpc_port=args.grpc_port,
        workers=args.workers, grace_period=args.grace_period,
        log_access=args.log_access, log_probes=args.log_probes, trace_logging=args.trace_logging,
        drop_abandoned=args.drop_abandoned, client_timeout_s=args.client_timeout_s,
        log_predictor_calls=args.log_predictor_calls, request_timeout_ms=args.request_timeout_ms,
        predictor_connect_timeout_ms=args.predictor_connect_timeout_ms,
        predictor_unready_after_s=args.predictor_unready_after_s, guard=guard.settings_from(args),
        max_dimensions=args.max_dimensions, matryoshka_dims=tuple(args.matryoshka_dims),
    )
