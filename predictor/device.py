"""Device, dtype and CPU threads: what both tasks (encoder and generate) decide the same way."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch loads libgomp (read once, at load): OpenMP threads that spin while they wait starve the
# server's own threads on a small CPU, and one descheduled spinner stalls every barrier; measured on a
# busy 2-core box, 1 x 16 tokens took 250-450 ms spinning and 14 ms passive. The environment still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

from snapserve.metadata import SnapshotInvalid


def check_weights(model_dir: Path) -> None:
    if not any(Path(model_dir).glob("*.safetensors")):
        raise SnapshotInvalid(f"no *.safetensors weights in {model_dir} (pickle weights are not loaded)")


def threads_per_instance(cpu_threads: int, instances: int, environ=os.environ) -> int:
    """The CPU threads each instance's forward passes get. The budget is ``--cpu_threads`` (the chart
    sets it from the pod's CPU limit, which the process cannot see), else ``OMP_NUM_THREADS`` when
    set (torch.set_num_threads would otherwise override it), else the cores this process may use."""
    return max(1, cpu_budget(cpu_threads, environ) // max(1, instances))


def cpu_budget(cpu_threads: int = 0, environ=os.environ) -> int:
    if cpu_threads:
        return cpu_threads
    omp = environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else len(os.sched_getaffinity(0))


# On a CPU, N single-threaded instances beat one instance of N threads: no OpenMP barrier per operator,
# and one batch's Python and tokenizer work overlaps another's forward. On 2 cores, 2 x 1 against 1 x 2,
# through both servers, with --cpu_bf16 true (same bench run each): 8 clients x 64 sentences 1,024-1,152 -> 1,613-1,702
# sentences/s, 32 clients 378-411 -> 428-437 req/s, 1 client p50 within noise. Capped: past a few,
# each instance's batches only grow slower.
MAX_AUTO_CPU_INSTANCES = 4


def auto_instances(device: str, cpu_threads: int = 0, environ=os.environ) -> int:
    """``--instances auto``: 1 on a GPU; on a CPU one per core of the budget, at most 4."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, min(MAX_AUTO_CPU_INSTANCES, cpu_budget(cpu_threads, environ)))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SnapshotInvalid("--device cuda but no CUDA device is visible")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)
