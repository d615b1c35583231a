"""Prometheus: render the scrape config (every replica, labelled by component), check it with promtool
(which also checks the rules file), and the command to run it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .render import render
from .unpriv import launch

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _static_configs(targets: dict[str, tuple[str, int]]) -> str:
    """targets: pod name -> (component, port). One entry per pod so each gets its own `pod` label."""
    lines = []
    for pod, (component, port) in targets.items():
        lines += [f"      - targets: [{json.dumps(f'127.0.0.1:{port}')}]",
                  f"        labels: {{component: {json.dumps(component)}, pod: {json.dumps(pod)}}}"]
    return "\n".join(lines)


def write_config(workdir: Path, *, port: int, targets: dict[str, tuple[str, int]], rules_file: Path,
                 interval_s: int) -> Path:
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    return render("prometheus.yml", workdir / "prometheus.yml", port=port, interval=f"{interval_s}s",
                  rule_files=json.dumps([str(rules_file)] if rules_file.is_file() else []),
                  static_configs=_static_configs(targets))


def command(workdir: Path, conf: Path, port: int) -> list[str]:
    return launch([
        PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn",
    ], unprivileged=True)


def check(conf: Path) -> None:
    """`promtool check config` as the user that will run Prometheus; it also parses the rule files."""
    r = subprocess.run(launch([PROMTOOL, "check", "config", str(conf)], unprivileged=True),
                       check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"promtool check config failed for {conf}:\n{(r.stdout + r.stderr).strip()}")
