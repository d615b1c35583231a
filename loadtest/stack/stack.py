"""The whole stack: plan ports, render and check configs, start and supervise every process, stop them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from . import nginx, prometheus, replicas
from .activator import Activator
from .config import REPO_ROOT, StackSettings
from .net import free_port, http_ok, port_in_use
from .supervisor import Supervised
from .unpriv import check_reachable, hand_over, launch

log = logging.getLogger("snapserve.stack")
STARTUP_CRASHES = 3  # a replica that crashes this often before it is ready will not get better


class Stack:
    def __init__(self, s: StackSettings):
        self.s = s
        self.api_port = s.port or free_port()
        self.prometheus_port = s.prometheus_port or free_port()
        self.predictor_lb_port = s.predictor_lb_port or free_port()
        self.predictors = replicas.plan("predictor", s.predictors)
        self.transformers = replicas.plan("transformer", s.transformers)
        self._temp = s.workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="snapserve-stack-")) if self._temp else s.workdir
        self.procs: dict[str, Supervised] = {}
        self._state_lock = threading.Lock()
        self.ready = False
        self.activator: Activator | None = None

    # --- URLs -------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    # --- start ------------------------------------------------------------------------------
    def _prepare(self) -> tuple[Path, Path]:
        for flag, port in (("--port", self.api_port), ("--prometheus_port", self.prometheus_port),
                           ("--predictor_lb_port", self.predictor_lb_port)):
            if port_in_use(port):
                raise RuntimeError(f"port {port} is in use on 127.0.0.1; pick another with {flag} (0 = any free port)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        (self.workdir / "logs").mkdir(exist_ok=True)
        check_reachable(self.workdir / "nginx")
        if not self.s.rules_file.is_file():
            log.warning("rules file %s does not exist yet; Prometheus starts without rules", self.s.rules_file)
        ngx = nginx.write_config(
            self.workdir / "nginx", api_port=self.api_port, predictor_lb_port=self.predictor_lb_port,
            transformer_ports=[r.http_port for r in self.transformers],
            predictor_ports=[r.http_port for r in self.predictors],
            max_body=self.s.max_body, read_timeout_s=self.s.read_timeout_s,
            predictor_passive_health=not self.s.scale_from_zero)
        prom = prometheus.write_config(
            self.workdir / "prometheus", port=self.prometheus_port, rules_file=self.s.rules_file,
            targets={r.name: (r.component, r.http_port) for r in self.predictors + self.transformers},
            interval_s=self.s.scrape_interval_s)
        hand_over(self.workdir / "nginx")
        hand_over(self.workdir / "prometheus")
        nginx.check(self.workdir / "nginx", ngx)
        prometheus.check(prom)
        return ngx, prom

    def _supervise(self, name: str, argv: list[str], **kw) -> None:
        p = Supervised(name, argv, self.workdir / "logs" / f"{name}.log", on_start=self._write_state, **kw)
        with self._state_lock:  # another replica's restart may be writing state.json from its thread
            self.procs[name] = p
        p.start()

    def start(self) -> None:
        ngx, prom = self._prepare()
        self._supervise("nginx", nginx.command(self.workdir / "nginx", ngx), stop_signal=signal.SIGQUIT, grace_s=10)
        self._supervise("prometheus", prometheus.command(self.workdir / "prometheus", prom, self.prometheus_port),
                        grace_s=10)
        if self.s.scale_from_zero:  # at zero: the activator starts them (stack.activator)
            self.activator = Activator(self.prometheus_url, self.s.scrape_interval_s,
                                       lambda _held: self._start_replicas(self.predictors))
            self.activator.start()
        else:
            self._start_replicas(self.predictors)
        self._start_replicas(self.transformers)

    def predictor_host(self, transformer_index: int) -> str:
        """Where a transformer calls: its own pod's predictor on localhost when collocated, else the
        predictors' nginx (the predictor Service)."""
        if self.s.collocated:
            return f"127.0.0.1:{self.predictors[transformer_index].http_port}"
        return f"127.0.0.1:{self.predictor_lb_port}"

    def _start_replicas(self, group: list[replicas.Replica]) -> None:
        env = replicas.env(self.s)
        for i, r in enumerate(group):
            argv = replicas.argv(self.s, r, self.predictor_host(i), self.workdir / "tuning")
            self._supervise(r.name, launch(argv), env=env, cwd=REPO_ROOT)

    def wait_ready(self, stop: threading.Event) -> bool:
        """Every replica ready, the API answering through nginx, Prometheus ready. False when `stop` is
        set, the timeout passes, or a replica keeps crashing (its log tail is logged)."""
        at_zero = self.s.scale_from_zero  # no predictor yet: ready means the transformers hold requests
        checks = {r.name: f"{r.url}/v2/health/ready" for r in (self.transformers if at_zero else
                                                                self.predictors + self.transformers)}
        checks |= {"nginx": f"{self.api_url}/v2/health/ready", "prometheus": f"{self.prometheus_url}/-/ready"}
        pending, deadline = dict(checks), time.monotonic() + self.s.ready_timeout_s
        while pending and not stop.is_set():
            for name in list(pending):
                if http_ok(pending[name], timeout=1):
                    log.info("%s: ready", name)
                    del pending[name]
                elif self.procs[name].restarts >= STARTUP_CRASHES:
                    log.error("%s keeps crashing; last lines of its log:\n%s", name, self.log_tail(name))
                    return False
            if time.monotonic() > deadline:
                log.error("not ready after %d s: %s", self.s.ready_timeout_s, ", ".join(pending))
                return False
            stop.wait(0.5)
        self.ready = not pending
        self._write_state()
        return self.ready

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # --- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        urls = {r.name: (r.component, r.url, f"127.0.0.1:{r.grpc_port}") for r in self.predictors + self.transformers}
        urls |= {"nginx": ("nginx", self.api_url, None), "prometheus": ("prometheus", self.prometheus_url, None)}
        return {
            "ready": self.ready, "pid": os.getpid(), "api": self.api_url, "prometheus": self.prometheus_url,
            "predictor_service": f"http://127.0.0.1:{self.predictor_lb_port}", "workdir": str(self.workdir),
            "model_name": self.s.model_name, "task": self.s.task, "collocated": self.s.collocated,
            "scale_from_zero": self.s.scale_from_zero,
            "activated_at": self.activator.activated_at if self.activator else None,
            "predictors": {r.name: r.url for r in self.predictors},
            "processes": {
                name: {"component": urls[name][0], "url": urls[name][1], "grpc": urls[name][2],
                       "pid": p.pid, "restarts": p.restarts, "started_at": p.started_wall}
                for name, p in list(self.procs.items())
            },
        }

    def _write_state(self, _proc: Supervised | None = None) -> None:
        """state.json in the work folder: URLs and current pids, rewritten on every (re)start."""
        with self._state_lock:
            tmp = self.workdir / "state.json.tmp"
            tmp.write_text(json.dumps(self.state(), indent=2))
            tmp.replace(self.workdir / "state.json")

    # --- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Transformers drain first (their in-flight requests still need predictors), then predictors,
        then nginx (graceful quit) and Prometheus."""
        if self.activator:
            self.activator.stop()
        order = [[r.name for r in self.transformers], [r.name for r in self.predictors], ["nginx", "prometheus"]]
        for group in order:
            procs = [self.procs[n] for n in group if n in self.procs]
            for p in procs:
                p.stop()
            for p in procs:
                p.wait()
        if self._temp:
            shutil.rmtree(self.workdir, ignore_errors=True)
            log.info("stopped")
        else:
            log.info("stopped; logs in %s", self.workdir / "logs")

    def kill(self) -> None:
        """Second Ctrl-C: no more waiting."""
        for p in list(self.procs.values()):
            p.stop()
            p.send(signal.SIGKILL)
