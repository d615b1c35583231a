"""The predictor's settings: the only place that reads argv and the environment.

Each field is declared once (``snapserve.settings.setting``): flag, env var, default, help, the tasks it
applies to and the chart value that sets it. README's flag table is generated from here
(``python -m tools.render_flags``).
"""

from __future__ import annotations

import argparse

import dataclasses

from predictor.encoder import autotune, tuning_cache
from predictor.generate import settings as generate_config
from snapserve import metadata, settings as S
from snapserve.scheduling.batcher import BatchLimits
from snapserve.settings import ENCODER, setting


def _instances(value, args) -> int:
    if value != autotune.AUTO:
        return value
    from predictor import device

    return device.auto_instances(args.device, args.cpu_threads)


def _cache_dir(value: str, args) -> str:
    return "" if value.lower() in ("off", "none") else value


@dataclasses.dataclass(frozen=True)
class Settings(S.shared("predictor")):
    task: str = setting("auto", "what to compute", choices=["auto", *metadata.TASKS], chart="predictor.task")
    device: str = setting("auto", "where to run the model", choices=["auto", "cuda", "cpu"], chart="predictor.device")
    dtype: str = setting("auto", "auto: measured at start. Embeddings on CUDA: fp32, bf16 and fp16 raced per batch "
                         "size, each within the check against fp32; generate on CUDA: bf16 when supported, else fp16; "
                         "on a CPU (both tasks): bf16 when it has AVX-512 BF16 or AMX and passes the start-up check "
                         "against fp32 (generate: and is faster), else fp32",
                         choices=["auto", "bfloat16", "float16", "float32"], chart="predictor.dtype")
    # "auto": tuned at warm-up (predictor/encoder/autotune.py)
    max_batch_size: int | str = setting("auto", "most sequences in one forward pass (auto: measured at warm-up)",
                                        type=autotune.int_or_auto, tasks=ENCODER,
                                        chart="predictor.batching.maxBatchSize")
    max_batch_tokens: int | str = setting("auto", "most padded tokens in one forward pass (auto: measured at warm-up)",
                                          type=autotune.int_or_auto, tasks=ENCODER,
                                          chart="predictor.batching.maxBatchTokens")
    max_batch_latency_ms: float | str = setting(
        "auto", "the forward-pass time auto batch limits stay within (auto: 50 on CPU, 20 on GPU)",
        type=autotune.float_or_auto, tasks=ENCODER)
    shared_batch_latency_ms: float | str = setting(
        "auto", "the forward-pass time of the short batches that let waiting work pass a backlog: while more than one "
        "API key sent work in the last 2 s, every batch; with one key or none, the batch a short request runs in "
        "while longer ones have a full batch queued (auto: 0.2 x the latency budget; 0: off)",
        type=autotune.float_or_auto, tasks=ENCODER)
    engine: str = setting("auto", "auto: whichever of torch and ONNX Runtime (model.onnx in the snapshot) measures "
                          "faster", choices=["auto", "torch", "onnx"], tasks=ENCODER)
    compile: bool = setting(False, "torch.compile the forward; warm-up compiles every length bucket", tasks=ENCODER)
    # auto: int8 is offered, never imposed; its quality was gated at export and the race keeps it only if faster
    quantize: str = setting("auto", "auto: --engine auto also races model.int8.onnx, which the export writes only "
                            "when int8 keeps cosine >= 0.995 against fp32 on a fixed set of texts; none: never int8; "
                            "int8: serve ONNX Runtime int8 (quantised at start behind the start-up check when the "
                            "snapshot has no model.int8.onnx)", choices=["auto", "none", "int8"], tasks=ENCODER)
    max_delay_ms: float = setting(1.0, "longest wait for more work while the device is idle", tasks=ENCODER,
                                  chart="predictor.batching.maxDelayMs")
    instances: int = setting("auto", "model executions at once over shared weights (auto: 1 on a GPU; on a CPU one "
                             "per core of --cpu_threads, at most 4, each single-threaded)", type=autotune.int_or_auto,
                             tasks=ENCODER, chart="predictor.instances", after=_instances)
    # The chart sets CPU_THREADS from the container's CPU limit (rounded up), when it has one.
    cpu_threads: int = setting(0, "CPU threads for the model on CPU, split across instances (0: every core; set it "
                               "to the pod's CPU limit)", chart="predictor.resources.limits.cpu")
    max_queue_sequences: int = setting(4096, "sequences waiting before new requests get 429", tasks=ENCODER,
                                       chart="predictor.batching.maxQueueSequences")
    # On by default (issue 11): its memory growth is bounded (predictor/encoder/precision.py); the overload tests'
    # 9-38 s accepted p99 with it was their load generator's (tests/hardening/load.py open_loop), not the servers'.
    cpu_bf16: bool = setting(True, "with --dtype auto on a CPU with native bf16 (AVX-512 BF16/AMX): bf16 when a "
                             "check against fp32 passes (embeddings: cosine >= 0.999; generate: faster, and the "
                             "greedy/perplexity gate)")
    # Every task (only encoders measure today): test harnesses and deployments give all predictors one folder.
    tuning_cache: str = setting(
        tuning_cache.DEFAULT_DIR, "folder where start-up keeps what it measured (engine race, batch tuning) for the "
        "next start on the same machine and flags: a restarted container serves sooner (the chart's /tmp is an "
        "emptyDir, which outlives a container); off: measure every start", after=_cache_dir)
    warmup: bool = setting(True, "run warm-up forward passes before turning ready")
    verify_snapshot: bool = setting(True, "check snapserve-manifest.json when present")
    generate: generate_config.GenerateSettings = S.group(generate_config.GenerateSettings)  # noqa: RUF009 (a dataclasses.field)

    def __post_init__(self):
        self.batch_limits()  # the batcher's own checks, at start rather than at the first request
        if self.cpu_threads < 0:
            raise ValueError(f"--cpu_threads must be >= 0 (got {self.cpu_threads})")
        if self.workers != 1:
            raise ValueError("--workers must be 1: the batcher and the model live in one process; "
                             "scale with replicas or --instances")

    def batch_limits(self) -> BatchLimits:
        """The limits as flagged; an ``auto`` one holds BatchLimits' default until warm-up tunes it."""
        auto = BatchLimits()
        size = auto.max_batch_size if self.max_batch_size == autotune.AUTO else self.max_batch_size
        tokens = auto.max_batch_tokens if self.max_batch_tokens == autotune.AUTO else self.max_batch_tokens
        instances = 1 if self.instances == autotune.AUTO else self.instances
        if self.max_batch_latency_ms != autotune.AUTO and not self.max_batch_latency_ms > 0:
            raise ValueError(f"--max_batch_latency_ms must be > 0 or auto (got {self.max_batch_latency_ms})")
        if self.shared_batch_latency_ms != autotune.AUTO and not self.shared_batch_latency_ms >= 0:
            raise ValueError(f"--shared_batch_latency_ms must be >= 0 or auto (got {self.shared_batch_latency_ms})")
        try:
            return BatchLimits(size, tokens, self.max_delay_ms, instances, self.max_queue_sequences)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None


def parser() -> argparse.ArgumentParser:
    return S.parser(Settings, "predictor",
                    "snapserve predictor: a Hugging Face snapshot behind kserve with dynamic batching")


def load(argv: list[str] | None = None, task: str | None = None) -> Settings:
    """Settings from argv and the environment. A flag set explicitly that does not apply to the snapshot's
    task (``task``, else read from --model_dir when it is there) is refused."""
    settings, explicit = S.load(Settings, parser(), argv)
    S.refuse_inapplicable(Settings, explicit, task or S.snapshot_task(settings.model_dir, settings.task),
                          settings.model_dir)
    return settings
