"""Settings of the local stack: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RULES = REPO_ROOT / "charts" / "snapserve" / "files" / "prometheus-rules.yaml"


@dataclass(frozen=True)
class StackSettings:
    model_dir: Path
    model_name: str = "all-minilm-l6-v2"  # as ci/run-local.sh and the README's curl lines
    port: int = 8000  # the API (nginx in front of the transformers)
    prometheus_port: int = 9090
    predictor_lb_port: int = 0  # nginx in front of the predictors (the "Service"); 0 = a free port
    transformers: int = 2
    predictors: int = 2
    instances: int = 1  # model instances per predictor replica
    workdir: Path | None = None  # None = a temporary folder, removed on exit
    rules_file: Path = DEFAULT_RULES
    scrape_interval_s: int = 5
    max_body: str = "8m"
    read_timeout_s: int = 60
    python: str = sys.executable
    ready_timeout_s: int = 300

    def __post_init__(self) -> None:
        if self.transformers < 1 or self.predictors < 1:
            raise ValueError("--transformers and --predictors must be >= 1 (use 2 or more to survive a replica loss)")
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(
                f"--model_dir {self.model_dir} has no config.json; run `make setup` to export the default model")
        if self.scrape_interval_s < 1:
            raise ValueError("--scrape_interval_s must be >= 1")


def _env(name: str, default: object) -> str:
    return os.environ.get(name.upper(), str(default))


def parse(argv: list[str] | None = None) -> StackSettings:
    """Every flag is also an environment variable: the flag's name in upper case."""
    d = StackSettings.__dataclass_fields__
    p = argparse.ArgumentParser(
        prog="python -m loadtest.stack", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="The cluster's topology on loopback: nginx -> transformer replicas -> nginx -> predictor "
                    "replicas, scraped by Prometheus with the chart's rules; replicas restarted when they die. "
                    "Every flag is also an environment variable (the flag in upper case).")
    p.add_argument("--model_dir", default=_env("model_dir", "models/all-MiniLM-L6-v2"), help="model snapshot folder")
    p.add_argument("--model_name", default=_env("model_name", d["model_name"].default), help="name in the URLs")
    p.add_argument("--port", type=int, default=int(_env("port", d["port"].default)),
                   help="API port (nginx; 0 = a free port)")
    p.add_argument("--prometheus_port", type=int, default=int(_env("prometheus_port", d["prometheus_port"].default)),
                   help="Prometheus UI and API port (0 = a free port)")
    p.add_argument("--predictor_lb_port", type=int, default=int(_env("predictor_lb_port", 0)),
                   help="internal nginx port in front of the predictors (0 = a free port)")
    p.add_argument("--transformers", type=int, default=int(_env("transformers", 2)), help="transformer replicas")
    p.add_argument("--predictors", type=int, default=int(_env("predictors", 2)), help="predictor replicas")
    p.add_argument("--instances", type=int, default=int(_env("instances", 1)),
                   help="model instances per predictor replica (its --instances)")
    p.add_argument("--workdir", default=_env("workdir", ""),
                   help="folder for rendered configs, logs, TSDB and state.json "
                        "(empty: a temp folder, removed on exit)")
    p.add_argument("--rules_file", default=_env("rules_file", DEFAULT_RULES),
                   help="Prometheus rules file; the chart's is the one source")
    p.add_argument("--scrape_interval_s", type=int, default=int(_env("scrape_interval_s", 5)),
                   help="scrape and rule evaluation interval")
    p.add_argument("--max_body", default=_env("max_body", d["max_body"].default), help="nginx client_max_body_size")
    p.add_argument("--read_timeout_s", type=int, default=int(_env("read_timeout_s", 60)),
                   help="nginx proxy read/send timeout and retry budget")
    p.add_argument("--ready_timeout_s", type=int, default=int(_env("ready_timeout_s", 300)),
                   help="give up when not everything is ready by then")
    a = p.parse_args(argv)
    try:
        return StackSettings(
            model_dir=Path(a.model_dir).resolve(), model_name=a.model_name, port=a.port,
            prometheus_port=a.prometheus_port, predictor_lb_port=a.predictor_lb_port,
            transformers=a.transformers, predictors=a.predictors, instances=a.instances,
            workdir=Path(a.workdir).resolve() if a.workdir else None, rules_file=Path(a.rules_file).resolve(),
            scrape_interval_s=a.scrape_interval_s, max_body=a.max_body, read_timeout_s=a.read_timeout_s,
            ready_timeout_s=a.ready_timeout_s,
        )
    except ValueError as e:
        p.error(str(e))
