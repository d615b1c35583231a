"""Benchmark: the same load against the usual patterns and snapserve, side by side, with ratios.

    python -m loadtest.bench                      # full sweep: A, B, snapserve, stack; c = 1..256; 1 and 64 sentences
    python -m loadtest.bench --quick              # CI size: A, B, snapserve; c = 1, 32 (batches of 64: c = 8)
    python -m loadtest.bench --quick --rounds 2   # the same twice, interleaved: A, B, snapserve, A, B, snapserve
    python -m loadtest.bench --compare-batching   # issue 2's first version: 32 clients, batching off vs on
    python -m loadtest.bench --device cuda        # passed through to every server and to the limit
    python -m loadtest.bench --generate [--quick] # text generation: 1 / 8 / 32 chat clients (bench_generate.py)
    python -m loadtest.bench --mixed [--rounds 2] # single sentences' p50 in the mixed locust traffic vs alone (mixed.py)

Targets run one after another on the same machine and model (never at once: they would share the
cores). Every run also sends client batches of 64 sentences, and (unless --no-engines) fills the
engines table: each engine x dtype in-process (python -m tools.bench_engines, a subprocess:
loadtest imports none of our packages) and through the servers (the engine-* targets), same run.
Writes OUT/bench.json and OUT/bench.png; server logs under OUT/logs/.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from loadtest.bench import load as bench_load, report as bench_report
from loadtest.bench.procs import REPO_ROOT, python
from loadtest.bench.targets import ENGINES, GPU_ENGINES, LABELS, Settings, start

DRAIN_IDLE_CORES = 0.3
EFFICIENCY_POINT = bench_report.EFFICIENCY_POINT  # (sentences per request, clients)
PEAK_SHAPES = {"cpu": "16x16,32x16,64x16", "cuda": "256x16,1024x16"}  # batch x tokens
DRAIN_MAX_S = 180.0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="CI size: targets a,b,snapserve; c=1,32; 5 s windows")
    p.add_argument("--compare-batching", action="store_true",
                   help="snapserve with batching off (--max_batch_size 1) vs on: 32 clients, single sentences")
    p.add_argument("--targets", help=f"comma list of {', '.join(LABELS)}")
    p.add_argument("--concurrency", help="comma list of concurrent clients (default 1,8,32,64,256)")
    p.add_argument("--sentences", help="sentences per request, comma list (default 1,64)")
    p.add_argument("--batch_concurrency", help="concurrent clients for requests of more than one sentence "
                   "(default: --concurrency; --quick and --compare-batching: 8)")
    p.add_argument("--rounds", type=int, default=1, help="run every target this many times, interleaved")
    p.add_argument("--engines", action=argparse.BooleanOptionalAction, default=None,
                   help="the engines table: each engine x dtype in-process and through the servers "
                        "(default: on unless --targets or --compare-batching is given)")
    p.add_argument("--duration", type=float, help="seconds measured per point (default 10)")
    p.add_argument("--warmup", type=float, help="seconds of load before measuring (default 3)")
    p.add_argument("--processes", type=int, default=None,
                   help=f"load-generator processes (default {bench_load.default_processes()})")
    p.add_argument("--no-limit", dest="limit", action="store_false", help="skip the in-process forward-pass limit")
    p.add_argument("--no-peak", dest="peak", action="store_false",
                   help="skip the engine's in-process peak (the efficiency line: snapserve's sentences/s at "
                        f"{EFFICIENCY_POINT[1]} clients x {EFFICIENCY_POINT[0]} sentences as a share of it)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--model_dir", default=str(REPO_ROOT / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--model_name", default="snap")
    p.add_argument("--predictor_args", default="", help="extra flags for python -m predictor (quoted string)")
    p.add_argument("--transformer_args", default="", help="extra flags for python -m transformer")
    p.add_argument("--stack_args", default="--transformers 1 --predictors 1",
                   help="flags for python -m loadtest.stack (default one replica each, like the direct path)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "bench", help="folder for bench.json, bench.png, logs")
    a = p.parse_args(argv)
    if a.engines is None:
        a.engines = not a.targets and not a.compare_batching
    if a.compare_batching:
        defaults = ("snapserve-nobatch,snapserve", "32", "1,64", 10.0, 3.0, "8")
        a.limit = a.engines = a.peak = False
    elif a.quick:
        defaults = ("a,b,snapserve", "1,32", "1,64", 5.0, 2.0, "8")
    else:
        full = "a,b,snapserve,stack" if (REPO_ROOT / "loadtest" / "stack" / "__main__.py").exists() else "a,b,snapserve"
        defaults = (full, "1,8,32,64,256", "1,64", 10.0, 3.0, None)
    a.targets = [t.strip() for t in (a.targets or defaults[0]).split(",") if t.strip()]
    a.concurrency = _ints(a.concurrency or defaults[1])
    a.batch_concurrency = _ints(a.batch_concurrency or defaults[5] or ",".join(map(str, a.concurrency)))
    a.sentences = _ints(a.sentences or defaults[2])
    a.duration = a.duration or defaults[3]
    a.warmup = a.warmup if a.warmup is not None else defaults[4]
    a.added_engines = []
    if a.engines:  # each engine x dtype through the servers, after the main targets of each round
        extra = {**ENGINES, **(GPU_ENGINES if a.device != "cpu" else {})}
        a.added_engines = [t for t in extra if t not in a.targets]
        a.targets += a.added_engines
    for t in a.targets:
        if t not in LABELS:
            p.error(f"unknown target {t!r}; choose from {', '.join(LABELS)}")
    a.peak = a.peak and (EFFICIENCY_POINT[0] in a.sentences and EFFICIENCY_POINT[1] in a.batch_concurrency
                         and any(t in ("snapserve", "stack") for t in a.targets))
    if not (Path(a.model_dir) / "config.json").is_file():
        p.error(f"--model_dir {a.model_dir} has no config.json; run `make setup` to export the default model")
    return a


def measure_limit(a: argparse.Namespace) -> dict:
    seconds = "2" if a.quick else "5"
    sizes = "64,256" if a.quick else "64,256,512" if a.device == "cpu" else "256,1024,4096"
    r = subprocess.run(python("-m", "loadtest.bench.limit", "--model_dir", a.model_dir, "--device", a.device,
                              "--seconds", seconds, "--batch_sizes", sizes),
                       cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure_peak(a: argparse.Namespace) -> dict:
    """The engine's in-process peak: every engine x dtype's forward pass on 16-token sentences (the bench's
    texts are 9-14 tokens) at a few batch sizes, in a subprocess (tools.bench_engines); the best of them."""
    seconds = "1" if a.quick or a.duration < 5 else "2"
    shapes = PEAK_SHAPES["cpu" if a.device == "cpu" else "cuda"]
    device = "cuda" if a.device == "cuda" else "cpu"
    r = subprocess.run(python("-m", "tools.bench_engines", "--model_dir", a.model_dir, "--device", device,
                              "--seconds", seconds, "--shapes", shapes),
                       cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"tools.bench_engines failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return bench_report.peak_of(json.loads(r.stdout.strip().splitlines()[-1]))


def drain(pids: list[int]) -> float:
    """Wait until the servers stop working off requests the last point left queued (cut-off clients)."""
    started = time.time()
    while time.time() - started < DRAIN_MAX_S:
        before = bench_load._cpu_seconds(pids)
        time.sleep(1.0)
        if bench_load._cpu_seconds(pids) - before < DRAIN_IDLE_CORES:
            break
    return time.time() - started


def measure_engines(a: argparse.Namespace) -> dict:
    seconds = "1" if a.quick else "3"
    device = "cuda" if a.device == "cuda" else "cpu"
    r = subprocess.run(python("-m", "tools.bench_engines", "--model_dir", a.model_dir, "--device", device,
                              "--seconds", seconds),
                       cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"tools.bench_engines failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def patterns(a: argparse.Namespace, name: str) -> list[tuple[int, int]]:
    """(sentences, clients) points for target ``name``; an engine target the engines table added (not
    named in --targets) gets only the points the issue's targets use, to keep the run short."""
    points = [(s, c) for s in a.sentences for c in (a.concurrency if s == 1 else a.batch_concurrency)]
    if name in a.added_engines:
        wanted = {(1, 1), (1, 32), (64, 8)}
        points = [p for p in points if p in wanted] or points[:2]
    return points


def sweep(a: argparse.Namespace, settings: Settings, limit: dict | None) -> list[dict]:
    rows: list[dict] = []
    partial = a.out / "bench.partial.json"  # so a cut-short run still leaves its points behind
    for rnd, name in ((k, t) for k in range(a.rounds) for t in a.targets):
        print(f"== {LABELS[name]}: starting" + (f" (round {rnd + 1})" if a.rounds > 1 else ""), flush=True)
        t = time.time()
        running = start(name, settings)
        print(f"   ready in {time.time() - t:.1f}s at {running.url}", flush=True)
        try:
            for sentences, conc in patterns(a, name):
                load = bench_load.Load(url=running.url, sentences=sentences, concurrency=conc,
                                       duration_s=a.duration, warmup_s=a.warmup)
                r = bench_load.run(load, a.processes, server_pids=running.pids)
                r["target"], r["round"] = name, rnd
                r["drain_s"] = round(drain(running.pids), 1)
                rows.append(r)
                partial.write_text(json.dumps({"limit": limit, "rows": rows}, indent=1))
                print(f"   x{sentences:<3} c={conc:<4} {r['req_per_s']:9.1f} req/s {r['sentences_per_s']:9.1f} sent/s "
                      f"p50 {bench_report._ms(r['p50_ms'])} p99 {bench_report._ms(r['p99_ms'])} ms "
                      f"errors {r['errors']} gen {r['generator']['cpu_cores_used']:.2f} cores"
                      f"{' SATURATED' if r['generator']['saturated'] else ''}", flush=True)
        finally:
            running.stop()
    return rows


def batching_summary(rows: list[dict]) -> list[str]:
    off = next((r for r in rows if r["target"] == "snapserve-nobatch"), None)
    on = next((r for r in rows if r["target"] == "snapserve"), None)
    if not (off and on and off["req_per_s"]):
        return []
    lines = [f"batching off vs on, {on['concurrency']} clients, single sentences, through the transformer:"]
    for label, r in (("off (--max_batch_size 1)", off), ("on (defaults)", on)):
        lines.append(f"  {label:<26} {r['req_per_s']:8.1f} req/s  p50 {bench_report._ms(r['p50_ms'])} ms  "
                     f"p99 {bench_report._ms(r['p99_ms'])} ms  errors {r['errors']}")
    lines.append(f"  ratio on/off: {on['req_per_s'] / off['req_per_s']:.2f}x req/s"
                 + (f", p99 {on['p99_ms'] / off['p99_ms']:.2f}x" if on["p99_ms"] and off["p99_ms"] else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    import signal

    # a SIGTERM (timeout(1), a CI cancel) unwinds like Ctrl-C, so every started server is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--generate" in argv:  # the generation rows: their own targets and load (loadtest/bench/generate.py)
        from loadtest.bench import generate as bench_generate

        return bench_generate.main([x for x in argv if x != "--generate"])
    if "--mixed" in argv:  # the mixed-traffic figure: locust's own user classes (loadtest/bench/mixed.py)
        from loadtest.bench import mixed as bench_mixed

        return bench_mixed.main([x for x in argv if x != "--mixed"])
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    settings = Settings(model_dir=a.model_dir, model_name=a.model_name, device=a.device, log_dir=a.out / "logs",
                        predictor_args=tuple(shlex.split(a.predictor_args)),
                        transformer_args=tuple(shlex.split(a.transformer_args)),
                        stack_args=tuple(shlex.split(a.stack_args)))
    limit = None
    if a.limit:
        print("== limit: the forward pass in-process", flush=True)
        limit = measure_limit(a)
        print(f"   {limit['best_sentences_per_s']:.0f} sentences/s at batch {limit['best_batch_size']}", flush=True)
    peak = None
    if a.peak:
        print("== peak: the engine's forward pass in-process, each engine x dtype (tools.bench_engines)", flush=True)
        peak = measure_peak(a)
        if peak:
            print(f"   {peak['sentences_per_s']:.0f} sentences/s: {peak['variant']} at {peak['batch']} x "
                  f"{peak['tokens']} tokens", flush=True)
    engines = None
    if a.engines:
        print("== engines in-process: each engine x dtype's forward pass", flush=True)
        engines = measure_engines(a)
    rows = sweep(a, settings, limit)
    bench_report.add_ratios(rows)
    device = limit["device"] if limit else ("cpu" if a.device == "cpu" else a.device)
    goals = bench_report.targets(rows, "cpu" if device == "cpu" else "cuda", limit)
    efficiency = bench_report.efficiency(rows, peak)
    notes = bench_report.saturation_notes(rows)
    summary = batching_summary(rows)
    result = {
        "meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": a.device,
                 "machine": platform.machine(), "cores": bench_load.psutil_cores(), "python": sys.version.split()[0],
                 "model_dir": a.model_dir, "duration_s": a.duration, "warmup_s": a.warmup,
                 "argv": sys.argv[1:] if argv is None else argv},
        "limit": limit, "peak": peak, "efficiency": efficiency, "engines": engines, "rows": rows, "targets": goals, "notes": notes, "batching": summary,
    }
    (a.out / "bench.json").write_text(json.dumps(result, indent=1))
    (a.out / "bench.partial.json").unlink(missing_ok=True)
    bench_report.plot(rows, a.out / "bench.png", limit)
    print()
    print(bench_report.table(rows))
    for block in (summary, bench_report.engines_table(engines, rows), bench_report.efficiency_lines(efficiency, peak),
                  ["targets:", *("  " + g for g in goals)], ["notes:", *("  " + n for n in notes)] if notes else []):
        if block:
            print()
            print("\n".join(block))
    print(f"\nwrote {a.out / 'bench.json'} and {a.out / 'bench.png'}")
    return 0 if not any(r["requests"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
