"""PNG of throughput and p50/p99 latency against users, from locust's CSV stats history.

    python -m loadtest.locust.report out/locust_stats_history.csv --out out/locust.png

Run locust with ``--csv PREFIX --csv-full-history``: then each
history row holds the percentiles of the last few seconds rather than of the whole run so far.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


def by_users(history_csv: Path) -> list[dict]:
    """One row per user count: mean req/s, median p50 and p99 (ms) of the 'Aggregated' rows."""
    groups: dict[int, list[dict]] = defaultdict(list)
    with history_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") != "Aggregated" or row.get("50%") in (None, "", "N/A"):
                continue
            users = int(row["User Count"])
            if users > 0 and float(row["Requests/s"]) > 0:
                groups[users].append(row)
    points = []
    for users, rows in sorted(groups.items()):
        points.append({
            "users": users,
            "rps": statistics.mean(float(r["Requests/s"]) for r in rows),
            "p50_ms": statistics.median(float(r["50%"]) for r in rows),
            "p99_ms": statistics.median(float(r["99%"]) for r in rows),
            "samples": len(rows),
        })
    return points


def plot(points: list[dict], out: Path, title: str = "snapserve under locust") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [p["users"] for p in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(users, [p["rps"] for p in points], marker="o")
    ax1.set_xlabel("users")
    ax1.set_ylabel("requests/s")
    ax1.set_title("throughput")
    ax2.plot(users, [p["p50_ms"] for p in points], marker="o", label="p50")
    ax2.plot(users, [p["p99_ms"] for p in points], marker="o", label="p99")
    ax2.set_xlabel("users")
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("latency")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("history_csv", type=Path, help="PREFIX_stats_history.csv written by locust --csv")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: beside the CSV)")
    parser.add_argument("--title", default="snapserve under locust")
    args = parser.parse_args(argv)
    points = by_users(args.history_csv)
    if not points:
        parser.error(f"{args.history_csv}: no 'Aggregated' rows with traffic; was locust run with --csv?")
    out = args.out or args.history_csv.with_suffix(".png")
    plot(points, out, args.title)
    for p in points:
        print(f"users {p['users']:>5}  {p['rps']:>9.1f} req/s  p50 {p['p50_ms']:>7.0f} ms  p99 {p['p99_ms']:>7.0f} ms")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
