"""Rendered configs pass the tools' own checks (nginx -t, promtool) and carry the behaviour we rely on."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from loadtest.stack import nginx, prometheus
from loadtest.stack.config import DEFAULT_RULES, StackSettings, parse
from loadtest.stack.unpriv import hand_over


@pytest.fixture
def workdir():
    # Under /tmp: the checks run as nobody, who cannot enter pytest's 0700 tmp_path.
    d = Path(tempfile.mkdtemp(prefix="snapserve-stack-cfg-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def render_nginx(workdir: Path, max_body: str = "8m") -> Path:
    conf = nginx.write_config(workdir / "nginx", api_port=18000, predictor_lb_port=18001,
                              transformer_ports=[18010, 18011], predictor_ports=[18020, 18021, 18022],
                              max_body=max_body, read_timeout_s=60)
    hand_over(workdir / "nginx")
    return conf


def test_nginx_config_passes_nginx_t(workdir):
    conf = render_nginx(workdir)
    nginx.check(workdir / "nginx", conf)
    text = conf.read_text()
    assert text.count("least_conn;") == 2 and text.count("keepalive 32;") == 2
    assert text.count("max_fails=2 fail_timeout=3s") == 5
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in text
    assert "proxy_next_upstream_tries 4;" in text  # every replica of the larger pool once, plus one
    assert "client_max_body_size 8m;" in text
    assert "$upstream_response_time" in text and "$upstream_addr" in text
    assert str(workdir) in text  # pid and temp paths stay in the work folder


def test_nginx_check_reports_nginx_message(workdir):
    conf = render_nginx(workdir, max_body="lots")
    with pytest.raises(RuntimeError, match="client_max_body_size"):
        nginx.check(workdir / "nginx", conf)


def test_prometheus_config_passes_promtool_and_labels_every_target(workdir):
    targets = {"predictor-0": ("predictor", 18020), "predictor-1": ("predictor", 18021),
               "transformer-0": ("transformer", 18010)}
    conf = prometheus.write_config(workdir / "prometheus", port=19090, targets=targets,
                                   rules_file=DEFAULT_RULES, interval_s=5)
    hand_over(workdir / "prometheus")
    prometheus.check(conf)  # also parses the chart's rules file when it exists
    cfg = yaml.safe_load(conf.read_text())
    assert cfg["rule_files"] == ([str(DEFAULT_RULES)] if DEFAULT_RULES.is_file() else [])
    static = next(j for j in cfg["scrape_configs"] if j["job_name"] == "snapserve")["static_configs"]
    got = {sc["labels"]["pod"]: (sc["labels"]["component"], sc["targets"]) for sc in static}
    assert got == {pod: (c, [f"127.0.0.1:{p}"]) for pod, (c, p) in targets.items()}


def test_settings_refuse_impossible_values(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="--transformers"):
        StackSettings(model_dir=tmp_path, transformers=0)
    with pytest.raises(ValueError, match="make setup"):
        StackSettings(model_dir=tmp_path / "missing")
    with pytest.raises(SystemExit):
        parse(["--model_dir", str(tmp_path / "missing")])
    s = parse(["--model_dir", str(tmp_path), "--port", "8123", "--predictors", "3"])
    assert (s.port, s.predictors, s.transformers) == (8123, 3, 2)


def test_the_stack_thread_share_takes_effect_in_the_predictor(model_dir, tmp_path):
    """2 predictor replicas on this box: each runs torch on its share of the cores, as a CPU limit would."""
    import os
    import re

    from loadtest.stack import replicas
    from tests import procs

    settings = parse(["--model_dir", str(model_dir), "--predictors", "2"])
    env = {k: v for k, v in replicas.env(settings).items() if k in ("CPU_THREADS", "OMP_NUM_THREADS", "WARMUP")}
    share = max(1, (os.cpu_count() or 1) // 2)
    assert env["CPU_THREADS"] == str(share)
    server, _ = procs.start_predictor(model_dir=model_dir, log_dir=tmp_path, env=env)
    try:
        threads = re.search(r"threads=(\d+)", server.log.read_text())
    finally:
        server.stop()
    assert threads and int(threads.group(1)) == share
