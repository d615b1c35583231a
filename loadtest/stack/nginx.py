"""nginx: render the config for the stack's replicas, check it with `nginx -t`, and the command to run it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .render import render
from .unpriv import launch

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# Passive health: after this many failed tries within fail_timeout, a replica is skipped for fail_timeout.
MAX_FAILS, FAIL_TIMEOUT = 2, "3s"


def _servers(ports: list[int], passive_health: bool = True) -> str:
    health = f" max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT}" if passive_health else " max_fails=0"
    return "\n".join(f"    server 127.0.0.1:{p}{health};" for p in ports)


def write_config(workdir: Path, *, api_port: int, predictor_lb_port: int, transformer_ports: list[int],
                 predictor_ports: list[int], max_body: str, read_timeout_s: int,
                 predictor_passive_health: bool = True) -> Path:
    """``predictor_passive_health=False``: a predictor that refused is tried again on the next request,
    as a Service sends to an endpoint as soon as it is Ready (scale from zero: the first predictor's
    first answer must not wait out the fail_timeout its refusals while starting earned it)."""
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / d).mkdir(parents=True, exist_ok=True)
    return render(
        "nginx.conf", workdir / "nginx.conf", workdir=workdir, api_port=api_port,
        predictor_lb_port=predictor_lb_port, transformer_servers=_servers(transformer_ports),
        predictor_servers=_servers(predictor_ports, predictor_passive_health), max_body=max_body, read_timeout_s=read_timeout_s,
        # every replica once, plus one: a request fails only when no replica can answer it
        tries=max(len(transformer_ports), len(predictor_ports)) + 1,
    )


def command(workdir: Path, conf: Path, *extra: str) -> list[str]:
    return launch([NGINX, "-e", "stderr", "-p", str(workdir), "-c", str(conf), *extra], unprivileged=True)


def check(workdir: Path, conf: Path) -> None:
    """`nginx -t` as the user that will run it; raises with nginx's own message."""
    r = subprocess.run(command(workdir, conf, "-t", "-q"), check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nginx -t failed for {conf}:\n{r.stderr.strip()}")
