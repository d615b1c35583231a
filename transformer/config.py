"""The transformer's settings: the only place that reads argv and the environment.

Each field is declared once (``snapserve.settings.setting``): flag, env var, default, help, the tasks it
applies to and the chart value that sets it. README's flag table is generated from here
(``python -m tools.render_flags``).
"""

from __future__ import annotations

import argparse
import dataclasses

from snapserve import settings as S
from snapserve.settings import ENCODER, GENERATE, kserve, setting
from transformer import guard


def _protocol(value: str, args) -> str:
    protocol = value if value != "v1" else args.protocol
    return "v2" if protocol == "v1" else protocol  # kserve's default; the predictor speaks v2 with binary tensors


@dataclasses.dataclass(frozen=True)
class Settings(S.shared("transformer")):
    # kserve's own flags, read from its parser (KServe passes --predictor_host to a transformer).
    predictor_host: str = kserve("predictor_host", "", lambda value, args: value or "")
    predictor_protocol: str = kserve("predictor_protocol", "v2", _protocol)
    predictor_timeout: int = kserve("predictor_request_timeout_seconds", 600)
    predictor_use_ssl: bool = kserve("predictor_use_ssl", False)
    predictor_health_check: bool = kserve("enable_predictor_health_check", False)

    max_texts: int = setting(2048, "most texts in one request (more: 413)", tasks=ENCODER,
                             chart="transformer.limits.maxTexts")
    max_text_chars: int = setting(100_000, "longest text in characters (longer: 413)",
                                  chart="transformer.limits.maxTextChars")
    coalesce_max_sequences: int = setting(256, "most sequences coalesced into one predictor call", tasks=ENCODER,
                                          chart="transformer.coalesce.maxSequences")
    coalesce_delay_ms: float = setting(0.5, "wait for more requests while no predictor call is in flight",
                                       tasks=ENCODER, chart="transformer.coalesce.delayMs")
    coalesce_max_call_ms: float = setting(
        100.0, "a predictor call holds at most about this many ms of work at the measured throughput (a request "
        "waits for its whole call); 0: only --coalesce_max_sequences", type=S.non_negative, tasks=ENCODER,
        chart="transformer.coalesce.maxCallMs")
    predictor_max_in_flight: int = setting(4, "predictor calls at once from this process", tasks=ENCODER,
                                           chart="transformer.coalesce.maxInFlight")
    max_queue_sequences: int = setting(2048, "sequences waiting for a predictor call before 429 (size it to 1-2 s "
                                       "of capacity)", tasks=ENCODER, chart="transformer.queue.maxSequences")
    max_queue_sequences_per_key: int = setting(
        0, "with API keys: sequences one key may have waiting before its requests get 429 (a key's max_queued= in "
        "the keys file wins; 0: half of --max_queue_sequences)", tasks=ENCODER,
        chart="transformer.queue.maxSequencesPerKey")
    max_queue_requests: int = setting(
        256, "generate: chat/completion requests held at once, waiting or streaming, before 429 (the predictor's "
        "--max_queue_requests is its own engine's)", tasks=GENERATE, chart="transformer.queue.maxRequests")
    max_queue_requests_per_key: int = setting(
        0, "generate, with API keys: requests one key may hold before its requests get 429 (a key's max_queued= "
        "in the keys file wins; 0: half of --max_queue_requests)", tasks=GENERATE,
        chart="transformer.queue.maxRequestsPerKey")
    predictor_connect_timeout_ms: float = setting(3_000.0, "connecting to the predictor",
                                                  chart="transformer.timeouts.predictorConnectMs")
    predictor_unready_after_s: float = setting(
        10.0, "turn not-ready once no predictor has answered for this long (0: readiness ignores the predictor)",
        chart="transformer.timeouts.predictorUnreadyAfterSeconds")
    log_predictor_calls: bool = setting(False, "one line per predictor call, naming the client request ids it served")
    max_dimensions: int = setting(0, "widest Matryoshka 'dimensions' a request may ask for (0: the model's width)",
                                  tasks=ENCODER)
    matryoshka_dims: tuple[int, ...] = setting(
        (), "comma-separated widths 'dimensions' must be one of (default: the snapshot's "
        "config_sentence_transformers.json matryoshka_dims, else any up to the width)", type=S.int_list, tasks=ENCODER)
    guard: guard.GuardSettings = S.group(guard.GuardSettings)  # noqa: RUF009 (a dataclasses.field)

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
    return S.parser(Settings, "transformer",
                    "snapserve transformer: validation, tokenisation and post-processing on CPU")


def load(argv: list[str] | None = None, task: str | None = None) -> Settings:
    """Settings from argv and the environment. A flag set explicitly that does not apply to the snapshot's
    task (``task``, else read from --model_dir when it is there) is refused."""
    settings, explicit = S.load(Settings, parser(), argv)
    S.refuse_inapplicable(Settings, explicit, task or S.snapshot_task(settings.model_dir), settings.model_dir)
    return settings
