"""The predictor's settings: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from predictor.encoder import autotune, tuning_cache

from predictor.generate import settings as generate_config
from snapserve import flags, metadata
from snapserve.scheduling.batcher import BatchLimits


@dataclasses.dataclass(frozen=True)
class Settings:
    model_name: str
    model_dir: Path
    task: str
    device: str
    dtype: str
    max_batch_size: int | str  # "auto": tuned at warm-up (predictor/encoder/autotune.py)
    max_batch_tokens: int | str
    max_delay_ms: float
    instances: int
    cpu_threads: int
    max_queue_sequences: int
    max_length: int
    warmup: bool
    verify_snapshot: bool
    http_port: int
    grpc_port: int
    workers: int
    grace_period: int
    log_access: bool
    log_probes: bool
    trace_logging: bool
    drop_abandoned: bool
    client_timeout_s: float
    request_timeout_ms: float
    cpu_bf16: bool
    max_body_bytes: int
    max_batch_latency_ms: float | str = "auto"
    shared_batch_latency_ms: float | str = "auto"
    engine: str = "auto"
    compile: bool = False
    quantize: str = "none"
    tuning_cache: str = ""
    generate: generate_config.GenerateSettings = dataclasses.field(default_factory=generate_config.GenerateSettings)

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
        if self.max_batch_latency_ms != autotune.AUTO and not self.max_batch_latency_ms > 0:
            raise ValueError(f"--max_batch_latency_ms must be > 0 or auto (got {self.max_batch_latency_ms})")
        if self.shared_batch_latency_ms != autotune.AUTO and not self.shared_batch_latency_ms >= 0:
            raise ValueError(f"--shared_batch_latency_ms must be >= 0 or auto (got {self.shared_batch_latency_ms})")
        try:
            return BatchLimits(size, tokens, self.max_delay_ms, self.instances, self.max_queue_sequences)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None


def parser() -> argparse.ArgumentParser:
    p, g = flags.server_parser(
        "predictor", "snapserve predictor: a Hugging Face snapshot behind kserve with dynamic batching")
    flags.add(g, "task", "auto", choices=["auto", *metadata.TASKS], help="what to compute")
    flags.add(g, "device", "auto", choices=["auto", "cuda", "cpu"], help="where to run the model")
    flags.add(g, "dtype", "auto", choices=["auto", "bfloat16", "float16", "float32"],
              help="auto: bf16 on CUDA when supported, else fp16; on CPU bf16 when it has AVX-512 BF16 or AMX and "
              "passes the start-up check against fp32, else fp32")
    flags.add(g, "max_batch_size", "auto", autotune.int_or_auto,
              help="most sequences in one forward pass (auto: measured at warm-up)")
    flags.add(g, "max_batch_tokens", "auto", autotune.int_or_auto,
              help="most padded tokens in one forward pass (auto: measured at warm-up)")
    flags.add(g, "max_batch_latency_ms", "auto", autotune.float_or_auto,
              help="the forward-pass time auto batch limits stay within (auto: 50 on CPU, 20 on GPU)")
    flags.add(g, "shared_batch_latency_ms", "auto", autotune.float_or_auto,
              help="while more than one API key sent work in the last 2 s, batches fit this forward-pass time, "
              "so another key's request waits behind short ones (auto: 0.2 x the latency budget; 0: off)")
    flags.add(g, "engine", "auto", choices=["auto", "torch", "onnx"],
              help="auto: whichever of torch and ONNX Runtime (model.onnx in the snapshot) measures faster")
    flags.add(g, "compile", False, bool, help="torch.compile the forward; warm-up compiles every length bucket")
    flags.add(g, "quantize", "none", choices=["none", "int8"],
              help="int8: ONNX Runtime dynamic int8, kept only if it passes the start-up quality check")
    flags.add(g, "max_delay_ms", 1.0, float, help="longest wait for more work while the device is idle")
    flags.add(g, "instances", "auto", autotune.int_or_auto, help="model executions at once over shared weights "
              "(auto: 1 on a GPU; on a CPU one per core of --cpu_threads, at most 4, each single-threaded)")
    flags.add(g, "cpu_threads", 0, int, help="CPU threads for the model on CPU, split across instances "
              "(0: every core; set it to the pod's CPU limit)")
    flags.add(g, "max_queue_sequences", 4096, int, help="sequences waiting before new requests get 429")
    # On by default (issue 11): its memory growth is bounded (predictor/encoder/precision.py); the overload tests'
    # 9-38 s accepted p99 with it was their load generator's (tests/hardening/load.py open_loop), not the servers'.
    flags.add(g, "cpu_bf16", True, bool, help="with --dtype auto on a CPU with native bf16 (AVX-512 BF16/AMX): "
              "bf16 when a check against fp32 gives cosine >= 0.999")
    flags.add(g, "tuning_cache", tuning_cache.DEFAULT_DIR, str, help="folder where start-up keeps what it measured "
              "(engine race, batch tuning) for the next start on the same machine and flags: a restarted container "
              "serves sooner (the chart's /tmp is an emptyDir, which outlives a container); off: measure every start")
    flags.add(g, "warmup", True, bool, help="run warm-up forward passes before turning ready")
    flags.add(g, "verify_snapshot", True, bool, help="check snapserve-manifest.json when present")
    generate_config.add_arguments(g)
    return p


def instances(args) -> int:
    if args.instances != autotune.AUTO:
        return args.instances
    from predictor import device

    return device.auto_instances(args.device, args.cpu_threads)


def load(argv: list[str] | None = None) -> Settings:
    args = parser().parse_args(argv)
    return Settings(
        model_name=args.model_name, model_dir=Path(args.model_dir), task=args.task, device=args.device,
        dtype=args.dtype, max_batch_size=args.max_batch_size, max_batch_tokens=args.max_batch_tokens,
        max_delay_ms=args.max_delay_ms, instances=instances(args), cpu_threads=args.cpu_threads,
        max_queue_sequences=args.max_queue_sequences, max_length=args.max_length, warmup=args.warmup,
        verify_snapshot=args.verify_snapshot, http_port=args.http_port, grpc_port=args.grpc_port,
        workers=args.workers, grace_period=args.grace_period,
        max_batch_latency_ms=args.max_batch_latency_ms, shared_batch_latency_ms=args.shared_batch_latency_ms,
        engine=args.engine, compile=args.compile,
        quantize=args.quantize, tuning_cache="" if args.tuning_cache.lower() in ("off", "none") else args.tuning_cache,
        log_access=args.log_access, log_probes=args.log_probes, trace_logging=args.trace_logging,
        drop_abandoned=args.drop_abandoned, client_timeout_s=args.client_timeout_s, request_timeout_ms=args.request_timeout_ms,
        cpu_bf16=args.cpu_bf16, max_body_bytes=args.max_body_bytes,
        generate=generate_config.settings_from(args),
    )
