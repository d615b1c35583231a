"""The local stack with the real default model: every replica scraped, rules loaded, a predictor
killed and a transformer rolled under load. The tests run in file order; the last one stops the stack."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import yaml

from loadtest.stack.config import DEFAULT_RULES

pytestmark = pytest.mark.timeout(900)
REPLICAS = {"predictor-0", "predictor-1", "transformer-0", "transformer-1"}


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def restarted(stack, name: str, old_pid: int) -> int | None:
    """The replica's new pid once it has been restarted and answers a real prediction itself."""
    p = stack.process(name)
    if p["pid"] in (None, old_pid):
        return None
    try:
        r = httpx.post(f"{p['url']}/v1/models/snap:predict", json={"instances": ["back?"]}, timeout=5)
    except httpx.HTTPError:
        return None
    return p["pid"] if r.status_code == 200 and len(r.json()["predictions"][0]) == 384 else None


def prom(stack, path: str, **params) -> dict:
    r = httpx.get(f"{stack.prometheus}{path}", params=params, timeout=10)
    r.raise_for_status()
    return r.json()["data"]


def test_prometheus_scrapes_every_replica_and_evaluates_the_chart_rules(stack):
    for _ in range(10):
        assert httpx.post(f"{stack.api}/v1/models/snap:predict", json={"instances": ["hi"]}, timeout=30).status_code == 200

    def all_up():
        t = prom(stack, "/api/v1/targets")["activeTargets"]
        return len(t) == len(REPLICAS) + 1 and all(x["health"] == "up" for x in t) and t
    targets = wait_for(all_up, 60, "every target up")
    assert {x["labels"].get("pod") for x in targets} >= REPLICAS

    def requests_seen():
        res = prom(stack, "/api/v1/query", query="sum by (component) (snapserve_requests_total)")["result"]
        return {r["metric"]["component"] for r in res if float(r["value"][1]) > 0} == {"predictor", "transformer"}
    wait_for(requests_seen, 60, "snapserve_requests_total from both components")

    assert DEFAULT_RULES.is_file(), f"the chart's rules file {DEFAULT_RULES} is missing"
    source = yaml.safe_load(DEFAULT_RULES.read_text())["groups"]
    expected = {g["name"]: len(g["rules"]) for g in source}

    def rules_evaluated():
        groups = prom(stack, "/api/v1/rules")["groups"]
        loaded = {g["name"]: len(g["rules"]) for g in groups}
        ok = all(r["health"] == "ok" and not r.get("lastEvaluation", "0001").startswith("0001") for g in groups for r in g["rules"])
        return loaded == expected and ok and groups
    groups = wait_for(rules_evaluated, 60, f"rule groups {sorted(expected)} loaded and evaluated ok")

    # the recording rules write series (the request rate needs two scrapes of the counter)
    records = [r["record"] for g in source for r in g["rules"] if "record" in r]
    if records:
        wait_for(lambda: any(prom(stack, "/api/v1/query", query=r)["result"] for r in records), 60,
                 f"a series from one of the recording rules {records}")
    print(f"\nprometheus: {len(targets)} targets up; rule groups {[g['name'] for g in groups]} loaded, all ok")


def test_kill_9_predictor_under_load(stack, load):
    name = "predictor-0"
    old = stack.process(name)["pid"]
    with load() as traffic:
        traffic.wait_ok(40)
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: restarted(stack, name, old), 60, f"{name} back and serving")
        recovery_s = time.monotonic() - t0
        traffic.wait_ok(80)  # steady load continues after the replica is back
    print(f"\nkill -9 {name}: {traffic.summary()}; back and serving in {recovery_s:.1f} s")
    assert traffic.failed <= 0.001 * traffic.total, traffic.summary()
    assert recovery_s <= 10, f"{name} took {recovery_s:.1f} s to come back (issue asks <= 10 s)"


def test_rolling_restart_of_a_transformer_loses_no_request(stack, load):
    name = "transformer-0"
    old = stack.process(name)["pid"]
    with load() as traffic:
        traffic.wait_ok(40)
        os.kill(old, signal.SIGTERM)
        t0 = time.monotonic()
        wait_for(lambda: restarted(stack, name, old), 60, f"{name} restarted after draining")
        back_s = time.monotonic() - t0
        traffic.wait_ok(80)
    print(f"\nSIGTERM {name}: {traffic.summary()}; replaced and serving in {back_s:.1f} s")
    assert traffic.failed == 0, traffic.summary()


def descendants(pid: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            children.setdefault(ppid, set()).add(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_stops_everything_and_leaves_no_process(stack):
    procs = descendants(stack.proc.pid)
    state_pids = {p["pid"] for p in stack.state()["processes"].values()}
    assert state_pids <= procs and len(state_pids) == len(REPLICAS) + 2  # + nginx, prometheus
    stack.stop()
    assert stack.proc.returncode == 0, stack.output()[-3000:]
    left = {p for p in procs if alive(p)}
    assert not left, f"left behind: {left}"
