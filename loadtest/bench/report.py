"""The benchmark's tables, ratios, targets and PNG chart."""

from __future__ import annotations

from pathlib import Path

from loadtest.bench.targets import LABELS

PATTERN_NAMES = {1: "single sentence", 64: "batch of 64"}
EFFICIENCY_POINT = (64, 8)  # (sentences per request, clients): the efficiency point
EFFICIENCY_TARGET = 0.75  # of the engine's in-process peak, end to end


def _find(rows: list[dict], target: str, sentences: int, concurrency: int, rnd: int = 0) -> dict | None:
    for r in rows:
        if (r["target"], r["sentences_per_request"], r["concurrency"], r.get("round", 0)) == (
                target, sentences, concurrency, rnd):
            return r
    return None


def rounds(rows: list[dict]) -> list[int]:
    return sorted({r.get("round", 0) for r in rows})


def add_ratios(rows: list[dict]) -> None:
    """Each row's throughput and p99 relative to A's and B's at the same pattern and concurrency, and
    its sentences per second of server CPU (comparable across runs on a shared, busy machine). With
    several rounds, each row is compared with the baselines of its own round."""
    for r in rows:
        cores = r.get("server_cpu_cores_used") or 0
        r["sentences_per_server_core_s"] = round(r["sentences_per_s"] / cores, 1) if cores > 0.01 else None
        for base in ("a", "b"):
            ref = _find(rows, base, r["sentences_per_request"], r["concurrency"], r.get("round", 0))
            ok = ref and ref["req_per_s"] > 0
            r[f"x_{base}"] = round(r["req_per_s"] / ref["req_per_s"], 2) if ok else None
            r[f"p99_vs_{base}"] = (round(r["p99_ms"] / ref["p99_ms"], 3)
                                   if ok and r["p99_ms"] and ref["p99_ms"] else None)


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(rows: list[dict]) -> str:
    many = len(rounds(rows)) > 1
    head = (f"{'rnd ' if many else ''}{'target':<38} {'pattern':<15} {'conc':>4} {'req/s':>9} {'sent/s':>9} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'p99 ms':>8} {'errs':>5} {'vs A':>7} {'vs B':>7} {'srv cores':>9} {'sent/core-s':>11}  gen cores/sat  box busy")
    lines = [head, "-" * len(head)]
    for r in rows:
        g = r["generator"]
        lines.append(
            (f"{r.get('round', 0) + 1:<3} " if many else "")
            + f"{LABELS.get(r['target'], r['target']):<38} {PATTERN_NAMES.get(r['sentences_per_request'], ''):<15} "
            f"{r['concurrency']:>4} {r['req_per_s']:>9.1f} {r['sentences_per_s']:>9.1f} {_ms(r['p50_ms']):>8} "
            f"{_ms(r['p95_ms']):>8} {_ms(r['p99_ms']):>8} {r['errors']:>5} {_x(r.get('x_a')):>7} "
            f"{_x(r.get('x_b')):>7} {r['server_cpu_cores_used']:>9.2f} "
            f"{'-' if r.get('sentences_per_server_core_s') is None else r['sentences_per_server_core_s']:>11}  "
            f"{g['cpu_cores_used']:>5.2f}{' SAT' if g['saturated'] else '    '}"
            f"     {r['machine_cpu_cores_busy']:.2f}/{r['machine_cores']}")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "n/a (not measured)" if ok is None else ("MET" if ok else "MISSED")


def targets(rows: list[dict], device: str, limit: dict | None) -> list[str]:
    """The issue's targets beside what this run measured (per round when there are several)."""
    if len(rounds(rows)) > 1:
        return [f"round {k + 1}: {line}" for k in rounds(rows)
                for line in targets([r for r in rows if r.get("round", 0) == k], device, None)] + _limit(limit)
    out = []

    def at(target, sentences, conc):
        return _find(rows, target, sentences, conc, rows[0].get("round", 0) if rows else 0)

    snap = lambda s, c: at("stack", s, c) or at("snapserve", s, c)
    if device == "cpu":
        s, b = at("snapserve", 1, 32), at("b", 1, 32)
        ok = None if not (s and b and b["req_per_s"]) else s["req_per_s"] >= 3 * b["req_per_s"]
        out.append("CPU: snapserve >= 3x B req/s at 32 clients: "
                   + (f"{s['req_per_s']:.1f} vs {b['req_per_s']:.1f} = {s['req_per_s'] / b['req_per_s']:.2f}x "
                      if ok is not None else "") + _verdict(ok))
        ok = None if not (s and b and s["p99_ms"] and b["p99_ms"]) else s["p99_ms"] < b["p99_ms"]
        out.append("CPU: snapserve p99 < B p99 at 32 clients: "
                   + (f"{s['p99_ms']:.1f} ms vs {b['p99_ms']:.1f} ms " if ok is not None else "") + _verdict(ok))
        s, b = at("snapserve", 64, 8), at("b", 64, 8)
        ok = None if not (s and b and b["sentences_per_s"]) else s["sentences_per_s"] >= 2 * b["sentences_per_s"]
        out.append("CPU: snapserve >= 2x B sentences/s at 8 clients x 64 sentences: "
                   + (f"{s['sentences_per_s']:.1f} vs {b['sentences_per_s']:.1f} = "
                      f"{s['sentences_per_s'] / b['sentences_per_s']:.2f}x " if ok is not None else "") + _verdict(ok))
        s, b = at("snapserve", 1, 1), at("b", 1, 1)
        ok = None if not (s and b and s["p50_ms"] and b["p50_ms"]) else s["p50_ms"] <= b["p50_ms"] + 2
        out.append("CPU: snapserve p50 <= B p50 + 2 ms at 1 client: "
                   + (f"{s['p50_ms']:.1f} ms vs {b['p50_ms']:.1f} ms " if ok is not None else "") + _verdict(ok))
    else:
        s, b = snap(1, 256), at("b", 1, 256)
        ok = None if not s else s["req_per_s"] >= 10_000 and (s["p99_ms"] or 1e9) <= 100 and s["errors"] == 0
        out.append("GPU: >= 10,000 req/s, p99 <= 100 ms, 0 errors at 256 clients (single): "
                   + (f"{s['req_per_s']:.0f} req/s, p99 {_ms(s['p99_ms'])} ms, {s['errors']} errors " if s else "")
                   + _verdict(ok))
        ok = None if not (s and b and b["req_per_s"]) else s["req_per_s"] >= 50 * b["req_per_s"]
        out.append("GPU: >= 50x B at 256 clients: "
                   + (f"{s['req_per_s'] / b['req_per_s']:.1f}x " if ok is not None else "") + _verdict(ok))
        best = max((r for r in rows if r["target"] in ("stack", "snapserve") and r["sentences_per_request"] == 64),
                   key=lambda r: r["sentences_per_s"], default=None)
        ok = None if not best else best["sentences_per_s"] >= 100_000
        out.append("GPU: >= 100,000 sentences/s with 64-sentence requests: "
                   + (f"{best['sentences_per_s']:.0f} " if best else "") + _verdict(ok))
        one = snap(1, 1)
        ok = None if not (one and one["p50_ms"]) else one["p50_ms"] <= 6
        out.append("GPU: p50 <= 6 ms at 1 client: " + (f"{one['p50_ms']:.1f} ms " if ok is not None else "")
                   + _verdict(ok))
    return out + _limit(limit)


def _limit(limit: dict | None) -> list[str]:
    if not limit:
        return []
    return [f"limit: forward pass in-process {limit['best_sentences_per_s']:.0f} sentences/s "
            f"(batch {limit['best_batch_size']}, {limit['device']})"]


def peak_of(inproc: dict) -> dict | None:
    """The best sentences/s of any engine x dtype and shape in a tools.bench_engines result (those its
    quality check refused, or that failed to load, left out)."""
    best = None
    for row in inproc.get("rows", []):
        if "error" in row or row.get("refused"):
            continue
        for shape in row.get("shapes", []):
            if best is None or shape["sentences_per_s"] > best["sentences_per_s"]:
                best = {"variant": row["variant"], "batch": shape["batch"], "tokens": shape["tokens"],
                        "sentences_per_s": shape["sentences_per_s"], "device": inproc.get("device")}
    return best


def efficiency(rows: list[dict], peak: dict | None) -> list[dict]:
    """Per round: snapserve's (or the stack's) end-to-end sentences/s at EFFICIENCY_POINT as a share of
    the engine's in-process peak measured in the same run."""
    if not peak or not peak.get("sentences_per_s"):
        return []
    sentences, clients = EFFICIENCY_POINT
    out = []
    for target in ("snapserve", "stack"):
        for rnd in rounds(rows):
            r = _find(rows, target, sentences, clients, rnd)
            if r:
                out.append({"target": target, "round": rnd, "sentences_per_s": r["sentences_per_s"],
                            "share": round(r["sentences_per_s"] / peak["sentences_per_s"], 3)})
    return out


def efficiency_lines(shares: list[dict], peak: dict | None) -> list[str]:
    if not shares:
        return []
    sentences, clients = EFFICIENCY_POINT
    lines = [f"efficiency: end-to-end sentences/s at {clients} clients x {sentences} sentences as a share of the "
             f"engine's in-process peak, {peak['sentences_per_s']:.0f} sentences/s ({peak['variant']}, "
             f"{peak['batch']} x {peak['tokens']} tokens, same run; target >= {EFFICIENCY_TARGET:.0%}):"]
    for e in shares:
        lines.append(f"  round {e['round'] + 1} {LABELS.get(e['target'], e['target']):<38} "
                     f"{e['sentences_per_s']:8.1f} sent/s = {e['share']:.0%} of the peak "
                     f"{_verdict(e['share'] >= EFFICIENCY_TARGET)}")
    return lines


def engines_table(inproc: dict | None, rows: list[dict]) -> list[str]:
    """Each engine x dtype: its forward pass in-process (sentences/s per batch x tokens, cosine to torch
    fp32) and the same engine through the servers (rows of the engine-* targets, by round)."""
    lines = []
    if inproc:
        shapes = next((r["shapes"] for r in inproc["rows"] if "shapes" in r), [])
        lines.append(f"engines in-process ({inproc['device']}), sentences/s (ms a pass); cosine to torch fp32:")
        lines.append(f"  {'variant':<16}" + "".join(f"{str(sh['batch']) + ' x ' + str(sh['tokens']):>20}"
                                                   for sh in shapes) + f"{'cosine':>10}")
        for r in inproc["rows"]:
            if "error" in r:
                lines.append(f"  {r['variant']:<16} unavailable: {r['error']}")
            elif r.get("refused"):
                lines.append(f"  {r['variant']:<16} refused by the quality check (cosine {r['cosine']:.4f} < 0.999)")
            else:
                lines.append(f"  {r['variant']:<16}" + "".join(
                    f"{str(round(sh['sentences_per_s'])) + '/s (' + format(sh['ms'], '.1f') + ' ms)':>20}"
                    for sh in r["shapes"]) + f"{r['cosine']:>10.5f}")
    served = [r for r in rows if r["target"].startswith("engine-") or r["target"] == "snapserve"]
    if any(r["target"].startswith("engine-") for r in served):
        lines.append("engines through the servers (transformer -> predictor); vs B in the same round:")
        for r in served:
            lines.append(f"  round {r.get('round', 0) + 1} {LABELS.get(r['target'], r['target']):<38} "
                         f"x{r['sentences_per_request']:<3} c={r['concurrency']:<4} {r['sentences_per_s']:>8.1f} sent/s "
                         f"p50 {_ms(r['p50_ms']):>7} ms  vs B {_x(r.get('x_b')):>7}")
    return lines


def saturation_notes(rows: list[dict]) -> list[str]:
    """When the generator, or the machine as a whole, may have been the limit."""
    notes = []
    for r in rows:
        g = r["generator"]
        if g["saturated"]:
            notes.append(f"{r['target']} c={r['concurrency']} x{r['sentences_per_request']}: a load-generator process "
                         f"used {g['busiest_process_core_fraction']:.0%} of a core - the generator may be the limit")
    busy = [r for r in rows if r["machine_cpu_cores_busy"] >= 0.9 * r["machine_cores"]]
    if busy:
        notes.append(f"{len(busy)} of {len(rows)} points ran with the machine's cores >= 90% busy: the servers, the "
                     "generator and any other process shared them; 'srv cores' is what the servers got, "
                     "'sent/core-s' the throughput per server core")
    rejected = [r for r in rows if any(k.startswith("HTTP 429") for k in r.get("error_kinds", {}))]
    for r in rejected:
        notes.append(f"{r['target']} c={r['concurrency']} x{r['sentences_per_request']}: "
                     f"{r['error_kinds']['HTTP 429']} requests rejected with 429 (queue full: overload protection)")
    return notes


def plot(rows: list[dict], out: Path, limit: dict | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patterns = sorted({r["sentences_per_request"] for r in rows})
    fig, axes = plt.subplots(len(patterns), 2, figsize=(12, 4 * len(patterns)), squeeze=False)
    for i, sent in enumerate(patterns):
        for target in dict.fromkeys(r["target"] for r in rows):
            pts = sorted((r for r in rows if r["target"] == target and r["sentences_per_request"] == sent
                          and r.get("round", 0) == 0),
                         key=lambda r: r["concurrency"])
            if not pts:
                continue
            xs = [p["concurrency"] for p in pts]
            label = LABELS.get(target, target)
            axes[i][0].plot(xs, [p["sentences_per_s"] for p in pts], marker="o", label=label)
            axes[i][1].plot(xs, [p["p99_ms"] or float("nan") for p in pts], marker="o", label=label)
        if limit:
            axes[i][0].axhline(limit["best_sentences_per_s"], color="grey", ls="--", label="limit (forward pass)")
        axes[i][0].set_title(f"{PATTERN_NAMES.get(sent, sent)}: sentences/s")
        axes[i][1].set_title(f"{PATTERN_NAMES.get(sent, sent)}: p99 latency (ms)")
        for ax in axes[i]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.grid(alpha=0.3)
        if any(y > 0 for line in axes[i][1].get_lines() for y in line.get_ydata()):
            axes[i][1].set_yscale("log")  # (a point with no answers has no latency to log-scale)
        axes[i][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out



# the generation bench's rows (loadtest/bench/generate.py): each target's key and its reference in the ratios
GENERATION_REFS = (("B", "B"), ("L", "llama.cpp F32"), ("Q", "llama.cpp Q4_1"))


def _gen_ref(rows: list[dict], key: str, row: dict) -> dict | None:
    return next((r for r in rows if r["key"] == key and r["clients"] == row["clients"]
                 and r.get("round", 0) == row.get("round", 0)), None)


def _over(a, b) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def generation_table(rows: list[dict]) -> str:
    """One table for every generation target (A, B, snapserve, llama.cpp): tok/s, TTFT, ITL, and tok/s as a
    multiple of B's and of llama.cpp F32's at the same clients and round."""
    many = len(rounds(rows)) > 1
    head = (f"{'rnd ' if many else ''}{'target':<36} {'clients':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
            f"{'ITL p50':>8} {'reqs':>5} {'errs':>5} {'vs B':>6} {'vs F32':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        b, f32 = _gen_ref(rows, "B", r), _gen_ref(rows, "L", r)
        lines.append((f"{r.get('round', 0) + 1:<3} " if many else "")
                     + f"{r['target']:<36} {r['clients']:>7} {r['tok_per_s']:>8.1f} {_ms(r['ttft_p50_ms']):>9} "
                     f"{_ms(r['ttft_p99_ms']):>9} {_ms(r['itl_p50_ms']):>8} {r['requests']:>5} {r['errors']:>5} "
                     f"{_over(r['tok_per_s'], b and b['tok_per_s']):>6} {_over(r['tok_per_s'], f32 and f32['tok_per_s']):>7}")
    return "\n".join(lines)


def generation_ratios(rows: list[dict]) -> list[str]:
    """snapserve's rows (S, R as replicas, F for fp32, and I for int8) over each reference at the same clients and round: tok/s (higher
    is better), TTFT p50 / p99 and ITL p50 (lower is better); int8 is also set against llama.cpp Q4_1."""
    out = []
    for r in rows:
        if r["key"] not in ("S", "R", "I", "F"):
            continue
        for key, name in GENERATION_REFS:
            ref = _gen_ref(rows, key, r)
            if not ref or (key == "Q" and r["key"] != "I"):
                continue
            parts = [f"{_over(r['tok_per_s'], ref['tok_per_s'])} tok/s"]
            if key != "B":  # B does not stream: its TTFT is its latency and it has no ITL
                parts += [f"TTFT p50 {_over(r['ttft_p50_ms'], ref['ttft_p50_ms'])}",
                          f"p99 {_over(r['ttft_p99_ms'], ref['ttft_p99_ms'])}",
                          f"ITL p50 {_over(r['itl_p50_ms'], ref['itl_p50_ms'])}"]
            else:
                parts.append(f"{_over(ref['ttft_p50_ms'], r['ttft_p50_ms'])} lower TTFT p50")
            rnd = f" round {r.get('round', 0) + 1}" if len(rounds(rows)) > 1 else ""
            out.append(f"ratio {r['target']} / {name}  c={r['clients']:<3}{rnd} " + "  ".join(parts))
    return out

def main(argv: list[str] | None = None) -> int:
    """Print the tables of a bench.json again (after a cut-short run: bench.partial.json) and redraw its PNG."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m loadtest.bench.report", description=main.__doc__)
    p.add_argument("json", type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--png", type=Path, default=None)
    a = p.parse_args(argv)
    data = json.loads(a.json.read_text())
    rows, limit = data["rows"], data.get("limit")
    add_ratios(rows)
    print(table(rows))
    shares = efficiency(rows, data.get("peak"))
    if shares:
        print("\n" + "\n".join(efficiency_lines(shares, data["peak"])))
    print("\ntargets:\n" + "\n".join("  " + g for g in targets(rows, a.device, limit)))
    notes = saturation_notes(rows)
    if notes:
        print("\nnotes:\n" + "\n".join("  " + n for n in notes))
    out = plot(rows, a.png or a.json.with_suffix(".png"), limit)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
