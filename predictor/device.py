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


# bf16 matmuls on a CPU go through oneDNN, and two caches keep a compiled kernel per input shape: ideep's
# (LRU_CACHE_CAPACITY) and oneDNN's own (ONEDNN_PRIMITIVE_CACHE_CAPACITY), 1,024 entries each by default,
# about 0.75 MiB an entry for this encoder. Every batch × length is a new shape: over 300 varied batches the
# predictor grew by 750 MiB before both were full (fp32 goes through MKL: +10 MiB). At 128 each the growth
# stops near +100 MiB, at the same speed over varied shapes (a miss costs ~8 ms at 32 × 15 tokens).
KERNEL_CACHE_ENTRIES = 128
KERNEL_CACHES = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(capability: str | None = None, flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and why (torch's capability, then the kernel's flags)."""
    if capability is None:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    if any(word in capability.upper() for word in ("AMX", "BF16")):
        return True, f"torch capability {capability}"
    have = sorted(set(BF16_FLAGS) & (cpu_flags() if flags is None else flags))
    if have:
        return True, f"cpu flags {' '.join(have)}"
    return False, f"torch capability {capability}, no {'/'.join(BF16_FLAGS)} in /proc/cpuinfo"


def bound_kernel_caches(environ=os.environ) -> dict[str, str]:
    """Cap oneDNN's per-shape kernel caches unless the environment already sets them; read at the first
    bf16 matmul, so this must run before it. Returns the settings in force."""
    for name in KERNEL_CACHES:
        environ.setdefault(name, str(KERNEL_CACHE_ENTRIES))
    return {name: environ[name] for name in KERNEL_CACHES}
