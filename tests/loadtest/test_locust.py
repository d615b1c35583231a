"""locust, headless, against the real servers: every traffic pattern, 0 failures, the SLO gate, reports."""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")
PATTERNS = ("v1 single", "v1 batch64", "openai single", "v2 bytes", "v1 mixed")


def locust(servers, out: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """locust in its own process (its gevent patching must never meet kserve in ours)."""
    cmd = [str(LOCUST), "--config", "loadtest/locust/locust.conf", "--headless", "--only-summary",
           "-H", servers.transformer_url, *args]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPSERVE_SHAPE", "SNAPSERVE_SLO", "SNAPSERVE_API_KEY"))}
    full_env = {**inherited, "SNAPSERVE_MODEL": servers.model_name, **(env or {})}
    r = subprocess.run(cmd, check=False, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    (out / "locust.log").write_text(r.stdout + r.stderr)
    return r


def stats(prefix: Path) -> dict[str, dict]:
    with Path(f"{prefix}_stats.csv").open(newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def test_every_pattern_passes_the_slo_with_reports(servers, tmp_path):
    prefix = tmp_path / "run"
    r = locust(servers, tmp_path, "-u", "10", "-r", "10", "-t", "12s", "--csv", str(prefix), "--csv-full-history",
               "--html", str(tmp_path / "report.html"), "--slo-p99-ms", "30000", "--slo-max-failure-ratio", "0")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "SLO met" in r.stderr
    rows = stats(prefix)
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows["Aggregated"]
    for name in PATTERNS:  # 10 users over weights 4:1:2:2:1: one class each at least
        assert int(rows[name]["Request Count"]) > 0, f"{name} never ran: {sorted(rows)}"
    assert (tmp_path / "report.html").stat().st_size > 10_000

    png = tmp_path / "run.png"
    rep = subprocess.run([sys.executable, "-m", "loadtest.locust.report", f"{prefix}_stats_history.csv", "--out", str(png)],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_impossible_slo_fails_the_run(servers, tmp_path):
    r = locust(servers, tmp_path, "-u", "2", "-r", "2", "-t", "5s", "--slo-p99-ms", "1", "SingleSentenceUser")
    assert r.returncode == 3, (r.stdout + r.stderr)[-3000:]
    assert "SLO missed: p99" in r.stderr


def test_a_wrong_body_is_a_failure(servers, tmp_path):
    """A dimension the servers do not produce: every response must be counted as a failure."""
    prefix = tmp_path / "wrong"
    r = locust(servers, tmp_path, "-u", "1", "-r", "1", "-t", "3s", "--csv", str(prefix), "--dim", "768",
               "SingleSentenceUser")
    assert r.returncode == 1, (r.stdout + r.stderr)[-3000:]  # locust's own exit code on failures
    row = stats(prefix)["Aggregated"]
    assert int(row["Request Count"]) > 0 and row["Failure Count"] == row["Request Count"]
    assert "dimension 384, expected 768" in r.stdout + r.stderr


@pytest.mark.parametrize("shape", ["spike"])
def test_a_load_shape_changes_the_user_count(servers, tmp_path, shape):
    prefix = tmp_path / "shape"
    r = locust(servers, tmp_path, "-u", "4", "-t", "8s", "--csv", str(prefix), "SingleSentenceUser",
               env={"SNAPSERVE_SHAPE": shape})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    with Path(f"{prefix}_stats_history.csv").open(newline="") as fh:
        users = {int(row["User Count"]) for row in csv.DictReader(fh)}
    assert 4 in users and any(0 < u < 4 for u in users), users


def test_the_api_key_setting_reaches_a_guarded_transformer(servers, tmp_path):
    """SNAPSERVE_API_KEY becomes 'Authorization: Bearer ...': accepted with the key, 401s without it."""
    from tests import procs

    keys = tmp_path / "keys"
    keys.write_text("loadtest-key-0123456789\n")
    guarded, _ = procs.start_transformer(servers.predictor_url.removeprefix("http://"), model_dir=servers.model_dir,
                                         extra=["--api_keys_file", str(keys)], log_dir=tmp_path)
    try:
        target = dataclasses.replace(servers, transformer_url=guarded.url)
        with_key = locust(target, tmp_path, "-u", "1", "-r", "1", "-t", "3s", "--slo-max-failure-ratio", "0",
                          "OpenAIUser", env={"SNAPSERVE_API_KEY": "loadtest-key-0123456789"})
        assert with_key.returncode == 0, (with_key.stdout + with_key.stderr)[-3000:]
        without = locust(target, tmp_path, "-u", "1", "-r", "1", "-t", "2s", "--slo-max-failure-ratio", "0",
                         "OpenAIUser")
        assert without.returncode == 3 and "HTTP 401" in without.stdout + without.stderr
    finally:
        guarded.stop()
