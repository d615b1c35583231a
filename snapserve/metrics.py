"""snapserve's Prometheus metrics, registered once in the default registry that kserve's
``/metrics`` serves. The transformer uses the same names with ``component="transformer"``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("snapserve_requests", "Requests by outcome", ["component", "outcome"])
REQUEST_SECONDS = Histogram(
    "snapserve_request_duration_seconds", "Time spent on a request in this server", ["component"],
    buckets=LATENCY,
)
SEQUENCES = Counter("snapserve_sequences", "Sequences (texts) processed", ["component"])
QUEUE_WAIT = Histogram("snapserve_queue_wait_seconds", "Time a request waited for its batch", buckets=LATENCY)
BATCH_SIZE = Histogram("snapserve_batch_size", "Sequences per forward pass", buckets=SIZES)
BATCH_TOKENS = Histogram(
    "snapserve_batch_tokens", "Padded tokens per forward pass",
    buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072),
)
PADDING = Histogram(
    "snapserve_batch_padding_ratio", "Share of padded tokens that are padding",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
)
INFERENCE = Histogram("snapserve_inference_seconds", "Forward pass time per batch", buckets=LATENCY)
QUEUE_DEPTH = Gauge("snapserve_queue_depth", "Sequences waiting for a batch")
GPU_USED = Gauge("snapserve_gpu_memory_used_bytes", "GPU memory allocated by torch (0 on CPU)")
GPU_TOTAL = Gauge("snapserve_gpu_memory_total_bytes", "GPU memory on the device (0 on CPU)")
TOKENIZE = Histogram("snapserve_tokenize_seconds", "Tokenisation time per request", buckets=LATENCY)
PREDICTOR_CALL = Histogram(
    "snapserve_predictor_call_seconds", "Transformer to predictor call time", buckets=LATENCY
)


class BatchObserver:
    """Feeds the batcher's measurements into the histograms above."""

    def batch(self, size: int, padded_tokens: int, real_tokens: int, seconds: float) -> None:
        BATCH_SIZE.observe(size)
        BATCH_TOKENS.observe(padded_tokens)
        PADDING.observe(1 - real_tokens / padded_tokens if padded_tokens else 0)
        INFERENCE.observe(seconds)

    def queue_wait(self, seconds: float) -> None:
        QUEUE_WAIT.observe(seconds)

    def queue_depth(self, sequences: int) -> None:
        QUEUE_DEPTH.set(sequences)


def outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429 or status == 503:
        return "rejected"
    return "client_error" if status < 500 else "error"


# The batch limits in force: tuned at warm-up (``auto``) or set by flags (predictor only).
BATCH_LIMIT = Gauge("snapserve_batch_limit", "Batch limits in force (limit: max_batch_size, max_batch_tokens, shared_batch_size (while several API keys send work; 0: the same), "
                    "max_batch_latency_ms)", ["limit"])


# -- text generation (the predictor's generate task): vLLM's metric names with our prefix --------
TOKEN_LATENCY = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10, 20)
REQUEST_LATENCY = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
GEN_TTFT = Histogram("snapserve_time_to_first_token_seconds", "Time from admission to the first generated token",
                     buckets=TOKEN_LATENCY)
GEN_ITL = Histogram("snapserve_inter_token_latency_seconds", "Time between two generated tokens of a request",
                    buckets=TOKEN_LATENCY)
GEN_E2E = Histogram("snapserve_e2e_request_latency_seconds", "Time from admission to the last token of a request",
                    buckets=REQUEST_LATENCY)
GEN_PROMPT_TOKENS = Counter("snapserve_prompt_tokens", "Prompt tokens of admitted generation requests")
GEN_GENERATION_TOKENS = Counter("snapserve_generation_tokens", "Tokens generated")
GEN_SUCCESS = Counter("snapserve_request_success", "Generation requests finished, by finish reason",
                      ["finished_reason"])
GEN_RUNNING = Gauge("snapserve_num_requests_running", "Generation requests in the engine's running batch")
GEN_WAITING = Gauge("snapserve_num_requests_waiting", "Generation requests admitted and waiting for the batch")
GEN_KV_USAGE = Gauge("snapserve_kv_cache_usage_perc", "Share of the paged KV cache in use (1 = full)")
GEN_PREEMPTIONS = Counter("snapserve_num_preemptions", "Requests taken out of the batch for lack of KV blocks")
# vLLM's vllm:prefix_cache_queries / _hits, in tokens: prompt tokens looked up in the shared KV blocks, and found
GEN_PREFIX_QUERIES = Counter("snapserve_prefix_cache_queries", "Prompt tokens looked up among the shared KV blocks")
GEN_PREFIX_HITS = Counter("snapserve_prefix_cache_hits", "Prompt tokens found among the shared KV blocks (not prefilled)")
# vLLM's vllm:cache_config_info, for GIE's endpoint picker: the paged cache's real shape, set once at engine start
GEN_CACHE_CONFIG = Gauge("snapserve_cache_config_info", "The paged KV cache (1; labels: block_size tokens per block, "
                         "num_gpu_blocks blocks)", ["block_size", "num_gpu_blocks"])


# -- autoscaling (KEDA) and scale to zero: signals that follow the task ----------------------------
# Computed when /metrics is scraped (set_function): O(1), no lock the engine thread holds for a step.
ESTIMATED_WAIT = Gauge("snapserve_estimated_wait_seconds", "How long new work would wait now (embeddings: the "
                       "queue's running and queued sequences / measured throughput; generation: waiting prompt "
                       "tokens / prefill rate + remaining decode tokens / decode rate; 0 when idle or unmeasured)",
                       ["component"])
# What wakes a predictor scaled to zero: requests the transformer holds with no predictor answer yet.
AWAITING_PREDICTOR = Gauge("snapserve_requests_awaiting_predictor", "Requests the transformer holds that have no "
                           "predictor answer yet (queued, in a call, or retried while no predictor answers; chat: "
                           "admitted and no first event yet)", ["component"])


def export_wait(component: str, seconds: Callable[[], float | None]) -> None:
    """Serve ``seconds()`` as ``component``'s estimated wait, computed per scrape (None, unmeasured: 0)."""
    ESTIMATED_WAIT.labels(component).set_function(lambda: max(0.0, seconds() or 0.0))


def awaiting_predictor() -> Gauge:
    """The transformer's gauge of requests awaiting a predictor answer (exported at 0 from the start)."""
    return AWAITING_PREDICTOR.labels("transformer")


# Work nobody waits for any more (the client hung up, or its deadline passed), dropped before it ran.
SEQUENCES_DROPPED = Counter("snapserve_sequences_dropped", "Queued sequences dropped because their caller left",
                            ["component"])

# Connections closed because their request did not arrive within --client_timeout_s (slow clients).
SLOW_CLIENTS_CLOSED = Counter("snapserve_slow_clients_closed", "Connections closed because a request's headers or "
                              "body did not arrive within --client_timeout_s", ["component"])
