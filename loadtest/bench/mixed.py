"""The mixed-traffic figure: single sentences' p50 in the project's own mixed locust traffic, against
their p50 when the same single-sentence users run alone (issue 24's target: at most 3x).

    python -m loadtest.bench --mixed                     # 10 users (4 single-sentence, 1 batch-64, 2 OpenAI,
                                                         # 2 v2, 1 mixed-length), then the 4 singles alone
    python -m loadtest.bench --mixed --rounds 2          # alone, mixed, alone, mixed (a fresh server per round)
    python -m loadtest.bench --mixed --targets b,snapserve

locust (loadtest/locust/locustfile.py, its embedding user classes at their weights) runs as its own
process against each target; the figure is its "v1 single" row (SingleSentenceUser). Writes
OUT/mixed.json; server and locust logs under OUT/logs/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from loadtest.bench.procs import REPO_ROOT
from loadtest.bench.targets import LABELS, Settings, start

MIXED = ("SingleSentenceUser", "Batch64User", "OpenAIUser", "V2BytesUser", "MixedLengthUser")
WEIGHTS = {"SingleSentenceUser": 4, "Batch64User": 1, "OpenAIUser": 2, "V2BytesUser": 2, "MixedLengthUser": 1}
SINGLE = "v1 single"  # the SingleSentenceUser's row in locust's stats
TARGET_RATIO = 3.0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench --mixed", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--targets", default="snapserve", help=f"comma list of {', '.join(LABELS)}")
    p.add_argument("--users", type=int, default=sum(WEIGHTS.values()),
                   help="locust users in the mixed run, spread over the classes by weight (default one of each "
                        "weight: 10); the single-sentence ones then run alone")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per locust run (stats reset once spawned)")
    p.add_argument("--rounds", type=int, default=1, help="alone + mixed this many times, interleaved")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--model_dir", default=str(REPO_ROOT / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--model_name", default="snap")
    p.add_argument("--predictor_args", default="")
    p.add_argument("--transformer_args", default="")
    p.add_argument("--stack_args", default="--transformers 1 --predictors 1")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "bench-mixed")
    a = p.parse_args(argv)
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in a.targets:
        if t not in LABELS:
            p.error(f"unknown target {t!r}; choose from {', '.join(LABELS)}")
    return a


def singles_in(users: int) -> int:
    """How many of ``users`` locust makes SingleSentenceUsers (its weighted spread, for a whole cycle)."""
    return max(1, round(users * WEIGHTS["SingleSentenceUser"] / sum(WEIGHTS.values())))


def locust(base_url: str, model: str, classes: tuple[str, ...], users: int, seconds: float, prefix: Path) -> dict:
    """One headless locust run; its stats rows by name."""
    exe = Path(sys.executable).with_name("locust")
    cmd = [str(exe), "--config", "loadtest/locust/locust.conf", "--headless", "--only-summary", "--reset-stats",
           "-H", base_url, "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s", "--csv", str(prefix), *classes]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPSERVE_SHAPE", "SNAPSERVE_SLO", "SNAPSERVE_API_KEY"))}
    env["SNAPSERVE_MODEL"] = model
    r = subprocess.run(cmd, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                       timeout=seconds + 120)
    prefix.with_suffix(".log").write_text(r.stdout + r.stderr)
    with Path(f"{prefix}_stats.csv").open(newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def summary(rows: dict, name: str) -> dict:
    row = rows.get(name) or {}
    count = int(row.get("Request Count") or 0)
    return {"requests": count, "failures": int(row.get("Failure Count") or 0),
            "p50_ms": float(row["50%"]) if count else None, "p99_ms": float(row["99%"]) if count else None,
            "req_per_s": float(row.get("Requests/s") or 0)}


def main(argv: list[str]) -> int:
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    logs = a.out / "logs"
    settings = Settings(model_dir=a.model_dir, model_name=a.model_name, device=a.device, log_dir=logs,
                        predictor_args=tuple(shlex.split(a.predictor_args)),
                        transformer_args=tuple(shlex.split(a.transformer_args)),
                        stack_args=tuple(shlex.split(a.stack_args)))
    singles = singles_in(a.users)
    results = []
    for rnd, name in ((k, t) for k in range(a.rounds) for t in a.targets):
        print(f"== {LABELS[name]}: starting (round {rnd + 1})", flush=True)
        running = start(name, settings)
        base = running.url.split("/v1/")[0]
        try:
            row = {"target": name, "round": rnd, "users": a.users, "single_users": singles}
            for kind, classes, users in (("alone", ("SingleSentenceUser",), singles), ("mixed", MIXED, a.users)):
                stats = locust(base, a.model_name, classes, users, a.duration, logs / f"locust-{name}-{rnd}-{kind}")
                row[kind] = summary(stats, SINGLE)
                row[kind]["all"] = {n: summary(stats, n) for n in stats if n != "Aggregated"}
                s = row[kind]
                print(f"   {kind:<6} {users:>3} users: '{SINGLE}' p50 {s['p50_ms']} ms p99 {s['p99_ms']} ms "
                      f"({s['requests']} requests, {s['failures']} failures)", flush=True)
            alone, mixed = row["alone"]["p50_ms"], row["mixed"]["p50_ms"]
            row["ratio"] = round(mixed / alone, 2) if alone and mixed else None
            results.append(row)
        finally:
            running.stop()
        time.sleep(1.0)
    lines = [f"single sentences' p50 in the mixed locust traffic ({a.users} users: {', '.join(MIXED)}) vs the "
             f"{singles} single-sentence users alone; target <= {TARGET_RATIO:g}x:"]
    for r in results:
        ok = r["ratio"] is not None and r["ratio"] <= TARGET_RATIO
        lines.append(f"  round {r['round'] + 1} {LABELS[r['target']]:<38} mixed p50 {r['mixed']['p50_ms']} ms, "
                     f"alone {r['alone']['p50_ms']} ms = {r['ratio']}x {'MET' if ok else 'MISSED'}")
    print("\n" + "\n".join(lines))
    (a.out / "mixed.json").write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                  "argv": argv, "rows": results, "summary": lines}, indent=1))
    print(f"\nwrote {a.out / 'mixed.json'}")
    return 0 if all(r["ratio"] is not None for r in results) else 1
