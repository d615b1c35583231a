"""Settings of the local stack: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RULES = REPO_ROOT / "charts" / "snapserve" / "files" / "prometheus-rules.yaml"


@dataclass(frozen=True)
class StackSettings:
    model_dir: Path
    model_name: str = ""  # "": the folder's name in lower case, as ci/run-local.sh (all-minilm-l6-v2)
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
    # The chart's collocated: true: transformer-i calls predictor-i on localhost, not through the Service.
    collocated: bool = False
    # The chart's predictor.autoscaling.minReplicas: 0: no predictor at start; the stack starts them as
    # KEDA's ScaledObject would, once Prometheus sees requests the transformers hold.
    scale_from_zero: bool = False

    def __post_init__(self) -> None:
        if self.transformers < 1 or self.predictors < 1:
            raise ValueError("--transformers and --predictors must be >= 1 (use 2 or more to survive a replica loss)")
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(
                f"--model_dir {self.model_dir} has no config.json; run `make setup` to export the default model")
        if self.scrape_interval_s < 1:
            raise ValueError("--scrape_interval_s must be >= 1")
        if self.collocated and self.transformers != self.predictors:
            raise ValueError(f"--collocated pairs each transformer with one predictor (one pod): give as many "
                             f"--transformers as --predictors (now {self.transformers} and {self.predictors})")
        if self.collocated and self.scale_from_zero:
            raise ValueError("--scale_from_zero needs transformers outside the predictors' pods to hold requests "
                             "(as the chart refuses minReplicas: 0 with collocated: true); drop --collocated")
        if not self.model_name:
            object.__setattr__(self, "model_name", self.model_dir.name.lower())

    @property
    def task(self) -> str:
        """"generate" for a causal LM (the servers read the same: a *ForCausalLM architecture), else
        "encoder"; read from the snapshot's config.json, as loadtest imports none of the servers."""
        config = json.loads((self.model_dir / "config.json").read_text())
        archs = config.get("architectures") or []
        return "generate" if any(str(a).endswith("ForCausalLM") for a in archs) else "encoder"


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
    p.add_argument("--model_name", default=_env("model_name", d["model_name"].default),
                   help="name in the URLs (empty: the folder's name in lower case)")
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
    p.add_argument("--collocated", action="store_true", default=_env("collocated", "false").lower() == "true",
                   help="each transformer calls its own predictor on localhost (the chart's collocated: true) "
                        "instead of the predictors' nginx (the Service); needs --transformers == --predictors")
    p.add_argument("--scale_from_zero", action="store_true",
                   default=_env("scale_from_zero", "false").lower() == "true",
                   help="start no predictor; start them once Prometheus sees requests held by the transformers "
                        "(the chart's ScaledObject with predictor.autoscaling.minReplicas: 0)")
    a = p.parse_args(argv)
    try:
        return StackSettings(
            model_dir=Path(a.model_dir).resolve(), model_name=a.model_name, port=a.port,
            prometheus_port=a.prometheus_port, predictor_lb_port=a.predictor_lb_port,
            transformers=a.transformers, predictors=a.predictors, instances=a.instances,
            workdir=Path(a.workdir).resolve() if a.workdir else None, rules_file=Path(a.rules_file).resolve(),
            scrape_interval_s=a.scrape_interval_s, max_body=a.max_body, read_timeout_s=a.read_timeout_s,
            ready_timeout_s=a.ready_timeout_s, collocated=a.collocated, scale_from_zero=a.scale_from_zero,
        )
    except ValueError as e:
        p.error(str(e))
