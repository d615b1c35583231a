"""What the benchmark measures: how to start each target and the URL its load goes to.

- a          the usual pattern: FastAPI/uvicorn, one model, one request -> one forward pass
- b          plain KServe: a kserve.Model without batching (loadtest/bench/baselines/plain_kserve.py)
- snapserve  python -m transformer -> python -m predictor, directly on loopback
- stack      the same behind the local nginx stack (python -m loadtest.stack)
- snapserve-nobatch   snapserve with the predictor's batching off (--max_batch_size 1 --max_delay_ms 0)
- engine-*   snapserve with one engine x dtype forced (the engines table: what ``--engine auto`` picks from)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loadtest.bench.procs import Server, free_port, python

LABELS = {
    "a": "A: FastAPI, 1 req = 1 forward",
    "b": "B: plain KServe, no batching",
    "snapserve": "snapserve (transformer -> predictor)",
    "snapserve-nobatch": "snapserve, batching off",
    "stack": "snapserve via nginx stack",
}
NO_BATCHING = ("--max_batch_size", "1", "--max_delay_ms", "0")
# snapserve with one engine x dtype, for the engines table (CPU: fp16 is not worth serving there)
ENGINES = {
    "engine-torch-fp32": ("--engine", "torch", "--dtype", "float32"),
    "engine-torch-bf16": ("--engine", "torch", "--dtype", "bfloat16"),
    "engine-onnx-fp32": ("--engine", "onnx"),
}
GPU_ENGINES = {
    "engine-torch-fp16": ("--engine", "torch", "--dtype", "float16"),
    "engine-torch-bf16-compiled": ("--engine", "torch", "--dtype", "bfloat16", "--compile", "true"),
}
LABELS.update({name: "snapserve, " + name.removeprefix("engine-").replace("-", " ") for name in {**ENGINES, **GPU_ENGINES}})


@dataclass(frozen=True)
class Settings:
    model_dir: str
    model_name: str
    device: str
    log_dir: Path
    predictor_args: tuple[str, ...] = ()
    transformer_args: tuple[str, ...] = ()
    stack_args: tuple[str, ...] = ()


@dataclass
class Running:
    name: str
    url: str
    servers: list[Server] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers if s.pid]

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()


def _predict_url(base: str, model: str) -> str:
    return f"{base}/v1/models/{model}:predict"


def _snapserve(s: Settings, name: str, extra_predictor: tuple[str, ...]) -> Running:
    p_http, p_grpc, t_http, t_grpc = free_port(), free_port(), free_port(), free_port()
    common = ("--model_name", s.model_name, "--model_dir", s.model_dir)
    predictor = Server(f"{name}-predictor", python("-m", "predictor", *common, "--http_port", str(p_http),
                                                   "--grpc_port", str(p_grpc), "--device", s.device,
                                                   "--tuning_cache", "off",  # the bench measures now, every run
                                                   *s.predictor_args, *extra_predictor), s.log_dir)
    run = Running(name, _predict_url(f"http://127.0.0.1:{t_http}", s.model_name), [predictor])
    try:
        predictor.start().wait_ready(_predict_url(f"http://127.0.0.1:{p_http}", s.model_name))
        transformer = Server(f"{name}-transformer",
                             python("-m", "transformer", *common, "--predictor_host", f"127.0.0.1:{p_http}",
                                    "--http_port", str(t_http), "--grpc_port", str(t_grpc), *s.transformer_args),
                             s.log_dir)
        run.servers.append(transformer)
        transformer.start().wait_ready(run.url)
    except BaseException:
        run.stop()
        raise
    return run


def start(name: str, s: Settings) -> Running:
    """Start target ``name`` and return once a real request through it succeeds."""
    if name in ("snapserve", "snapserve-nobatch"):
        return _snapserve(s, name, NO_BATCHING if name == "snapserve-nobatch" else ())
    if name in ENGINES or name in GPU_ENGINES:
        return _snapserve(s, name, {**ENGINES, **GPU_ENGINES}[name])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if name == "a":
        argv = python("-m", "loadtest.bench.baselines.fastapi_a", "--model_dir", s.model_dir, "--model_name", s.model_name,
                      "--port", str(port), "--device", s.device)
    elif name == "b":
        argv = python("-m", "loadtest.bench.baselines.plain_kserve", "--model_dir", s.model_dir, "--model_name", s.model_name,
                      "--http_port", str(port), "--grpc_port", str(free_port()), "--device", s.device)
    elif name == "stack":
        argv = python("-m", "loadtest.stack", "--model_dir", s.model_dir, "--model_name", s.model_name,
                      "--port", str(port), "--prometheus_port", str(free_port()), *s.stack_args)
    else:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(LABELS)}")
    server = Server(name, argv, s.log_dir)
    run = Running(name, _predict_url(base, s.model_name), [server])
    try:
        server.start().wait_ready(run.url, timeout_s=600 if name == "stack" else 300)
    except BaseException:
        run.stop()
        raise
    return run
