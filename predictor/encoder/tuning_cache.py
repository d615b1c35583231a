"""What start-up measured (the engine race, the batch limits), kept for the next start of the same
predictor on the same machine, so a restart skips the measuring.

A container restarted in its pod (kill -9, OOM, a failed liveness probe) keeps the pod's /tmp (an
emptyDir in the chart) and is serving seconds sooner; measured on the 2-core box, the race and the
tuning were ~10 of a restart's 15 s. A different snapshot, flag, CPU, thread count or library version
is a different fingerprint, so a stale entry is never used; warm-up still runs on every start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from importlib import metadata as dist
from pathlib import Path

log = logging.getLogger("snapserve.predictor")

DEFAULT_DIR = "/tmp/snapserve-tuning"
# the settings a measurement depends on
FIELDS = ("task", "device", "dtype", "engine", "compile", "quantize", "cpu_bf16", "instances", "cpu_threads",
          "max_length", "max_batch_size", "max_batch_tokens", "max_batch_latency_ms")
LIBRARIES = ("torch", "onnxruntime", "transformers")


def _cpu() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor()


def _version(name: str) -> str:
    try:
        return dist.version(name)
    except dist.PackageNotFoundError:
        return ""


def _snapshot(model_dir: Path) -> str:
    """The snapshot's identity: its manifest (SHA-256 of every file) when it has one, else names,
    sizes and modification times."""
    from snapserve import snapshot

    manifest = model_dir / snapshot.MANIFEST
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(f"{p.relative_to(model_dir)} {p.stat().st_size} {p.stat().st_mtime_ns}"
                                    for p in files).encode()).hexdigest()


def fingerprint(settings) -> str:
    facts = {name: str(getattr(settings, name)) for name in FIELDS}
    facts.update(snapshot=_snapshot(Path(settings.model_dir)), cpu=_cpu(), cores=str(os.cpu_count()),
                 affinity=str(len(os.sched_getaffinity(0))), cuda=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                 **{name: _version(name) for name in LIBRARIES})
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


class TuningCache:
    """One JSON file per fingerprint under ``folder`` (``""``: off). Never fails a start: an unreadable
    or unwritable cache is logged and measured around."""

    def __init__(self, folder: str, key: str):
        self.path = Path(folder) / f"{key}.json" if folder else None
        self._entries = self._read()

    def _read(self) -> dict:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            entries = json.loads(self.path.read_text())
            return entries if isinstance(entries, dict) else {}
        except (OSError, ValueError) as exc:
            log.warning("tuning cache %s unreadable (%s); measuring again", self.path, exc)
            return {}

    def get(self, name: str):
        return self._entries.get(name)

    def put(self, name: str, value) -> None:
        if self.path is None:
            return
        self._entries[name] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(self._entries, indent=1))
            partial.replace(self.path)  # atomic: a start killed while writing leaves no half file
        except OSError as exc:
            log.warning("tuning cache %s not written (%s); the next start measures again", self.path, exc)


def for_settings(settings) -> TuningCache:
    return TuningCache(settings.tuning_cache, fingerprint(settings) if settings.tuning_cache else "")
