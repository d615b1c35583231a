#!/usr/bin/env bash
# The GPU check, in one run of at most 8 minutes, on a machine that has torch but not kserve:
#   bash loadtest/bench/device_check.sh [--device cuda|cpu] [--quick] [--model DIR] [--out DIR]
# On the GPU machine, first build what it needs here: ../shared/tools/device-pack --out .carry (kserve's
# wheels and the fp16 model; this script installs .carry/whl into /tmp/site itself), then carry .carry.
#
# It runs: the engines in-process (torch fp32/bf16/fp16, peak GPU memory), the 256-client point cold (right
# after each server starts), then through the servers
# baseline B, snapserve (defaults: engine, dtype and batch limits auto), fp16, and bf16 compiled
# (--compile; warm-up compiles every length bucket before ready), each at c = 1 / 64 / 256 single
# sentences and client batches of 64, with GPU memory sampled by nvidia-smi all along. --device cpu
# --quick is its dry run (tests/speed/test_device_check.py), small enough for a 2-core box.
#
# Fails loudly, never hangs: every step runs under timeout(1) within what is left of the budget,
# and the first failure prints which step and the tail of its log, and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/../.."

device=cuda quick=0 model="" out=out/device-check budget_s=480
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --model) model=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --budget_s) budget_s=$2; shift 2 ;;
    *) echo "device_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "device_check: --device cuda|cpu" >&2; exit 2 ;; esac
mkdir -p "$out/logs"
started=$(date +%s)
step=setup
sampler=""

fail() {
  echo "DEVICE CHECK FAILED at step '$step' (after $(( $(date +%s) - started )) s): $*" >&2
  if [ -f "$out/logs/$step.log" ]; then tail -n 40 "$out/logs/$step.log" >&2; fi
  exit 1
}
cleanup() { if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

left() { echo $(( budget_s - ( $(date +%s) - started ) )); }

# run STEP MAX_S CMD...: at most MAX_S seconds and never past the budget; output to $out/logs/STEP.log
run() {
  step=$1 cap=$2; shift 2
  local limit
  limit=$(left)
  [ "$limit" -gt "$cap" ] && limit=$cap
  [ "$limit" -lt 10 ] && fail "the ${budget_s}s budget is spent"
  echo "== $step (at most ${limit}s)"
  local rc=0
  timeout -s TERM -k 20 "$limit" "$@" >"$out/logs/$step.log" 2>&1 || rc=$?
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && fail "timed out after ${limit}s"
  [ "$rc" = 0 ] || fail "exit code $rc"
}

PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if [ -d .carry/whl ] && ! "$PY" -c "import kserve" 2>/dev/null; then  # the device image has torch, not kserve
  step=install
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/whl/*.whl \
    >"$out/logs/install.log" 2>&1 || fail "pip install of .carry/whl"
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -z "$model" ]; then
  model=models/all-MiniLM-L6-v2
  [ -d .carry/model ] && model=.carry/model
fi
[ -f "$model/config.json" ] || { step=model; fail "no snapshot at $model"; }

step=preflight
"$PY" - "$device" >"$out/logs/preflight.log" 2>&1 <<'PY' || fail "torch/kserve/device not usable"
import sys, torch, kserve  # noqa: F401
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device visible to torch"
    print("gpu:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
print("torch", torch.__version__, "kserve", kserve.__version__ if hasattr(kserve, "__version__") else "?")
PY
cat "$out/logs/preflight.log"

if [ "$device" = cuda ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits \
    -l 1 >"$out/gpu-memory.csv" 2>/dev/null &
  sampler=$!
fi

if [ "$quick" = 1 ]; then
  seconds=0.3 shapes=1x16,8x24 conc=1 bconc=1 duration=2 warmup=0.5
  targets=b,snapserve,engine-torch-fp32 cold_targets=snapserve cold_conc=4
else
  seconds=1 shapes=1x16,32x24,128x32,1024x32 conc=1,64,256 bconc=1,64,256 duration=4 warmup=1
  targets=b,snapserve,engine-torch-fp16,engine-torch-bf16-compiled cold_targets=b,snapserve cold_conc=256
fi
[ "$device" = cpu ] && [ "$quick" = 0 ] && targets=b,snapserve,engine-torch-fp32,engine-torch-bf16

run engines 150 "$PY" -m tools.bench_engines --model_dir "$model" --device "$device" --seconds "$seconds" \
  --shapes "$shapes"
tail -n 1 "$out/logs/engines.log" >"$out/engines.json"
run generate 180 "$PY" -m tools.bench_generate --device "$device" $([ "$quick" = 1 ] && echo --quick) && grep -E "^(generation|  generate)" "$out/logs/generate.log" || true  # issue 22: tokens/s, TTFT, ITL, peak GPU memory at 1/32/128 requests

# --max_length 128 for every target: fewer length buckets for --compile to warm (texts are short anyway)
# a step that fails or runs out of time still reports the points it measured (bench.partial.json)
servers_failed="" cold_failed=""
# The 256-client point cold: each target freshly started, 256 single-sentence clients at once with no
# load before (--warmup 0). The GPU run of issue 24 collapsed there (27 req/s, servers idle) on shapes
# warm-up had not run; the servers step below measures it again warm, after the 1- and 64-client points.
(run cold 150 "$PY" -m loadtest.bench --device "$device" --model_dir "$model" --targets "$cold_targets" \
  --no-engines --no-limit --no-peak --concurrency "$cold_conc" --sentences 1 --duration "$duration" --warmup 0 \
  --predictor_args "--max_length 128" --out "$out/cold") || cold_failed=1
(run servers $(( $(left) - 15 )) "$PY" -m loadtest.bench --device "$device" --model_dir "$model" --targets "$targets" \
  --no-engines --no-limit --concurrency "$conc" --batch_concurrency "$bconc" --sentences 1,64 \
  --duration "$duration" --warmup "$warmup" --predictor_args "--max_length 128" --out "$out") || servers_failed=1
cleanup
sampler=""

step=report
"$PY" - "$out" <<'PY' || fail "the report"
import csv, json, sys
from pathlib import Path

out = Path(sys.argv[1])
partial = not (out / "bench.json").is_file()
bench = json.loads((out / ("bench.partial.json" if partial else "bench.json")).read_text())
if partial:  # the servers step failed: what it measured before, with the ratios bench.json would have
    from loadtest.bench import report as bench_report

    print("PARTIAL: the servers step did not finish; these are the points it measured")
    bench_report.add_ratios(bench["rows"])
engines = json.loads((out / "engines.json").read_text())
print(f"device check on {engines['device']}")
for r in engines["rows"]:
    if "shapes" in r:
        shapes = "  ".join(f"{s['batch']}x{s['tokens']} {s['sentences_per_s']:.0f}/s ({s['ms']:.2f} ms)" for s in r["shapes"])
        print(f"  in-process {r['variant']:<15} {shapes}  cosine {r['cosine']:.5f}"
              + (f"  peak {r['gpu_peak_mib']} MiB" if "gpu_peak_mib" in r else ""))
    else:
        print(f"  in-process {r['variant']:<15} {r.get('error') or 'refused (quality check)'}")
print(f"  {'target':<38} {'pattern':<8} {'conc':>4} {'req/s':>9} {'sent/s':>9} {'p50':>7} {'p99':>7} {'errs':>5} {'vs B':>6}")
for r in bench["rows"]:
    x = "-" if r.get("x_b") is None else f"{r['x_b']:.2f}x"
    p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.1f}"
    p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}"
    print(f"  {r['target']:<38} x{r['sentences_per_request']:<7} {r['concurrency']:>4} {r['req_per_s']:>9.1f} "
          f"{r['sentences_per_s']:>9.1f} {p50:>7} {p99:>7} {r['errors']:>5} {x:>6}")
cold = out / "cold" / "bench.json"
if cold.is_file():  # the same point warm is the servers step's row at that concurrency
    for r in json.loads(cold.read_text())["rows"]:
        warm = next((w for w in bench["rows"] if (w["target"], w["sentences_per_request"], w["concurrency"]) ==
                     (r["target"], 1, r["concurrency"])), None)
        print(f"  {r['target']:<38} cold: {r['concurrency']} clients right after start {r['req_per_s']:.1f} req/s "
              f"p99 {r['p99_ms'] or 0:.1f} ms, errors {r['errors']}"
              + (f"; warm {warm['req_per_s']:.1f} req/s p99 {warm['p99_ms'] or 0:.1f} ms" if warm else ""))
mem = out / "gpu-memory.csv"
if mem.is_file() and mem.stat().st_size:
    used = [float(row[1]) for row in csv.reader(mem.open()) if len(row) > 2 and row[1].strip()]
    total = next((float(row[2]) for row in csv.reader(mem.open()) if len(row) > 2), 0)
    print(f"  GPU memory (nvidia-smi, whole run): peak {max(used):.0f} MiB of {total:.0f} MiB")
errors = sum(r["errors"] for r in bench["rows"])
empty = [r["target"] for r in bench["rows"] if r["requests"] == 0]
if empty:
    sys.exit(f"no successful request for: {', '.join(sorted(set(empty)))}")
print(f"  errors: {errors}")
PY
[ -z "$servers_failed" ] || { step=servers; fail "see the partial table above"; }
[ -z "$cold_failed" ] || { step=cold; fail "the cold point did not finish"; }
echo "device check done in $(( $(date +%s) - started )) s; logs and bench.json under $out"
