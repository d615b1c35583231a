"""The replica processes: what a predictor or transformer pod runs, on its own loopback ports."""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass

from .config import StackSettings
from .net import free_port


@dataclass(frozen=True)
class Replica:
    name: str  # e.g. predictor-0, as a pod name
    component: str  # "predictor" | "transformer", the label Prometheus scrapes it with
    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def plan(component: str, count: int) -> list[Replica]:
    return [Replica(f"{component}-{i}", component, free_port(), free_port()) for i in range(count)]


def argv(s: StackSettings, r: Replica, predictor_host: str, tuning: Path | None = None) -> list[str]:
    """A replica's command line; ``tuning``: the predictors' --tuning_cache (what the chart's /tmp
    emptyDir is in a pod: a replica restarted by the supervisor reuses its first start's measurements)."""
    common = ["--model_name", s.model_name, "--model_dir", str(s.model_dir),
              "--http_port", str(r.http_port), "--grpc_port", str(r.grpc_port)]
    if r.component == "predictor":
        cache = ["--tuning_cache", str(tuning)] if tuning else []
        # --instances is an encoder flag (the generate predictor refuses it: one engine batches continuously)
        instances = ["--instances", str(s.instances)] if s.task != "generate" else []
        return [s.python, "-m", "predictor", *common, *instances, *cache]
    # At zero no predictor answers: readiness must ignore it, or the transformers would leave the front
    # nginx's rotation and nothing would hold the requests that wake a predictor (as the chart sets).
    unready = ["--predictor_unready_after_s", "0"] if s.scale_from_zero else []
    return [s.python, "-m", "transformer", *common, "--predictor_host", predictor_host, *unready]


def env(s: StackSettings) -> dict[str, str]:
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    # Share the cores between predictor replicas as CPU limits would (the chart passes the pod's limit
    # as CPU_THREADS), instead of every replica starting one torch thread per core and all of them fighting.
    share = str(max(1, (os.cpu_count() or 1) // s.predictors))
    e.setdefault("CPU_THREADS", share)
    e.setdefault("OMP_NUM_THREADS", share)
    # The predictor's warm-up passes (up to 32 x 128 tokens) cost seconds of CPU on every (re)start here,
    # which is most of a replica's recovery time on a small CPU box; WARMUP=true brings them back.
    e.setdefault("WARMUP", "false")
    return e
