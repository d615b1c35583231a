"""The predictor's settings: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from snapserve import flags, metadata
from snapserve.batching import BatchLimits


@dataclasses.dataclass(frozen=True)
class Settings:
    model_name: str
    model_dir: Path
    task: str
    device: str
    dtype: str
    max_batch_size: int
    max_batch_tokens: int
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
    max_body_bytes: int

    def __post_init__(self):
        self.batch_limits()  # the batcher's own checks, at start rather than at the first request
        if self.cpu_threads < 0:
            raise ValueError(f"--cpu_threads must be >= 0 (got {self.cpu_threads})")
        if self.workers != 1:
            raise ValueError("--workers must be 1: the batcher and the model live in one process; "
                             "scale with replicas or --instances")

    def batch_limits(self) -> BatchLimits:
        try:
            return BatchLimits(self.max_batch_size, self.max_batch_tokens, self.max_delay_ms, self.instances,
                               self.max_queue_sequences)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None


def parser() -> argparse.ArgumentParser:
    p, g = flags.server_parser(
        "predictor", "snapserve predictor: a Hugging Face snapshot behind kserve with dynamic batching")
    flags.add(g, "task", "auto", choices=["auto", *metadata.TASKS], help="what to compute")
    flags.add(g, "device", "auto", choices=["auto", "cuda", "cpu"], help="where to run the model")
    flags.add(g, "dtype", "auto", choices=["auto", "bfloat16", "float16", "float32"],
              help="auto: bf16 on CUDA when supported, else fp16 on CUDA, fp32 on CPU")
    flags.add(g, "max_batch_size", 512, int, help="most sequences in one forward pass")
    flags.add(g, "max_batch_tokens", 32768, int, help="most padded tokens in one forward pass")
    flags.add(g, "max_delay_ms", 1.0, float, help="longest wait for more work while the device is idle")
    flags.add(g, "instances", 1, int, help="model executions at once over shared weights")
    flags.add(g, "cpu_threads", 0, int, help="CPU threads for the model on CPU, split across instances "
              "(0: every core; set it to the pod's CPU limit)")
    flags.add(g, "max_queue_sequences", 4096, int, help="sequences waiting before new requests get 429")
    flags.add(g, "warmup", True, bool, help="run warm-up forward passes before turning ready")
    flags.add(g, "verify_snapshot", True, bool, help="check snapserve-manifest.json when present")
    return p


def load(argv: list[str] | None = None) -> Settings:
    args = parser().parse_args(argv)
    return Settings(
        model_name=args.model_name, model_dir=Path(args.model_dir), task=args.task, device=args.device,
        dtype=args.dtype, max_batch_size=args.max_batch_size, max_batch_tokens=args.max_batch_tokens,
        max_delay_ms=args.max_delay_ms, instances=args.instances, cpu_threads=args.cpu_threads,
        max_queue_sequences=args.max_queue_sequences, max_length=args.max_length, warmup=args.warmup,
        verify_snapshot=args.verify_snapshot, http_port=args.http_port, grpc_port=args.grpc_port,
        workers=args.workers, grace_period=args.grace_period, max_body_bytes=args.max_body_bytes,
    )
