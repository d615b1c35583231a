"""Batch limits that fit the device: time the forward pass at a few batch shapes during warm-up and
keep the limits that give the most throughput within a latency budget.

A batch of 512 is right for a GPU and twice too slow per sentence on a small CPU, so fixed defaults
are wrong somewhere. ``measure(timing, ...)`` runs any ``timing(batch, length) -> seconds`` over a
grid (growing each length's batch until it passes the budget, which also warms every shape traffic
will use); ``choose(table, budget)`` is arithmetic over that table. Both are pure: the tests drive
them with synthetic timings. ``tune`` is the glue that ``SnapshotModel.load`` calls.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("snapserve.predictor")

AUTO = "auto"
BUDGET_MS = {"cpu": 50.0, "cuda": 20.0}
# Limits when nothing is measured (--warmup false): what measured well on each kind of device.
FALLBACK = {"cpu": (64, 4096), "cuda": (512, 32768)}
BATCHES = {"cpu": (1, 2, 4, 8, 16, 32, 64, 128, 256), "cuda": (1, 8, 32, 64, 128, 256, 512, 1024)}
LENGTHS = (16, 64, 256)  # a short sentence, a paragraph, a long text (capped at the model's maximum)
NEAR_BEST = 0.97  # within this share of the best throughput, the smaller batch wins (less latency, noise)
# While several API keys send work, batches fit this share of the budget: the forward a light key's
# request waits behind is short (tests/resilience/test_fairness.py)
SHARED_SHARE = 0.2
MAX_MEASURE_S = 30.0  # a restart must stay quick: stop measuring after this long

Timing = Callable[[int, int], float]


@dataclasses.dataclass(frozen=True)
class Point:
    batch: int
    length: int
    seconds: float

    @property
    def tokens(self) -> int:
        return self.batch * self.length

    @property
    def sequences_per_s(self) -> float:
        return self.batch / self.seconds if self.seconds > 0 else float("inf")


@dataclasses.dataclass(frozen=True)
class Choice:
    max_batch_size: int
    max_batch_tokens: int
    budget_ms: float
    table: tuple[Point, ...]

    def lines(self) -> list[str]:
        """The measured table, one line per shape, marking what fits the budget."""
        out = [f"{'batch':>6} x {'tokens':<6} {'ms':>8} {'seq/s':>9}  fits {self.budget_ms:g} ms"]
        for p in self.table:
            out.append(f"{p.batch:>6} x {p.length:<6} {p.seconds * 1e3:>8.1f} {p.sequences_per_s:>9.0f}  "
                       f"{'yes' if p.seconds * 1e3 <= self.budget_ms else 'no'}")
        return out


def kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def budget_ms(value, device: str) -> float:
    return BUDGET_MS[kind(device)] if value in (None, AUTO) else float(value)


def grid(device: str, max_length: int, max_batch_size: int | None = None) -> tuple[list[int], list[int]]:
    """The batch sizes and lengths to try: at most ``max_batch_size`` sequences, ``max_length`` tokens."""
    batches = [b for b in BATCHES[kind(device)] if max_batch_size is None or b <= max_batch_size]
    if max_batch_size is not None and max_batch_size not in batches:
        batches.append(max_batch_size)
    lengths = sorted({min(length, max_length) for length in LENGTHS if max_length > 0} or {16})
    return sorted(batches), lengths


def measure(timing: Timing, batches: Sequence[int], lengths: Sequence[int], budget_s: float, repeats: int = 3,
            max_seconds: float = MAX_MEASURE_S, clock: Callable[[], float] = time.monotonic) -> list[Point]:
    """The fastest of ``repeats`` timings per shape (other load only ever adds time), after one untimed
    call (allocations, kernel choice).

    Each length's batches grow until one passes the budget: that one is kept (the log shows where the
    budget ends), larger ones are not tried since a forward pass does not get faster with more work."""
    table: list[Point] = []
    started = clock()
    for length in lengths:
        for batch in batches:
            if clock() - started > max_seconds:
                log.warning("batch tuning stopped after %.0f s; the limits come from what was measured", max_seconds)
                return table
            timing(batch, length)
            point = Point(batch, length, min(timing(batch, length) for _ in range(repeats)))
            table.append(point)
            if point.seconds > budget_s:
                break
    return table


def _best_batch(points: list[Point]) -> Point | None:
    if not points:
        return None
    best = max(p.sequences_per_s for p in points)
    return min((p for p in points if p.sequences_per_s >= NEAR_BEST * best), key=lambda p: p.batch)


def choose(table: Sequence[Point], budget: float, max_batch_size: int | None = None,
           max_batch_tokens: int | None = None) -> Choice:
    """Limits from a measured ``table`` and a ``budget`` in ms; an explicit limit is kept as given.

    ``max_batch_size`` is the batch with the most sequences/s at the shortest length among those within
    the budget. ``max_batch_tokens`` is, over every length, the padded tokens of that length's best batch
    within the budget, and the largest of them: the smallest would hold short sentences (most traffic)
    to the batches that fit long texts, whose attention costs more per token; a batch of long texts
    under the largest may pass the budget by that difference. A budget nothing fits leaves batches of one."""
    points = list(table)
    lengths = sorted({p.length for p in points})
    fits = [p for p in points if p.seconds * 1e3 <= budget]
    size = max_batch_size
    if size is None:
        best = _best_batch([p for p in fits if p.length == lengths[0]]) if lengths else None
        size = best.batch if best else 1
    tokens = max_batch_tokens
    if tokens is None:
        per_length = [_best_batch([p for p in fits if p.length == length]) for length in lengths]
        per_length = [p for p in per_length if p is not None]
        tokens = max((p.tokens for p in per_length), default=lengths[-1] if lengths else 512)
        tokens = max(tokens, lengths[0] if lengths else 1)
    return Choice(size, tokens, budget, tuple(points))


def cached_table(cache, budget: float) -> list[Point] | None:
    """The table an earlier start measured under the same fingerprint and budget, if any."""
    entry = cache.get("batch_table") if cache is not None else None
    try:
        if entry and entry["budget_ms"] == budget:
            return [Point(int(b), int(n), float(t)) for b, n, t in entry["points"]] or None
    except (KeyError, TypeError, ValueError):
        pass
    return None


def replay(table: Sequence[Point], timing: Timing) -> None:
    """Run each shape of ``table`` once (warms another instance on the shapes instance 0 measured)."""
    for p in table:
        timing(p.batch, p.length)


# -- glue: the engine and the batcher ------------------------------------------------------------
def engine_timing(engine, instance: int, token: int = 100) -> Timing:
    """Seconds for ``engine.execute`` of a ``batch x length`` batch (prepared beforehand, as the batcher
    prepares the next batch while one runs; ``execute`` returns host arrays, so GPU work is finished)."""
    import numpy as np

    def timing(batch: int, length: int) -> float:
        prepared = engine.prepare([np.full(length, token, dtype=np.int64)] * batch)
        started = time.perf_counter()
        engine.execute(prepared, instance)
        return time.perf_counter() - started

    return timing


def int_or_auto(value) -> int | str:
    """A flag value: ``auto`` or a whole number (argparse ``type=``)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    return int(value)


def float_or_auto(value) -> float | str:
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    return float(value)


def warm_shapes(engine, batcher, device: str, max_batch_size: int, max_batch_tokens: int,
                max_length: int) -> list[tuple[int, int]]:
    """On a GPU, fix the engine's batch shapes to the tuned limits and run every one the batcher can form
    on every instance, before ready (predictor/encoder/shapes.py says why, and why not on a CPU);
    returns the shapes warmed on instance 0 (none where nothing is fixed)."""
    from predictor.encoder import shapes

    if kind(device) != "cuda" or not hasattr(engine, "fix_shapes"):
        return []
    plan = shapes.ShapePlan.for_limits(max_batch_size, max_batch_tokens, max_length)
    # a buffer per shape for each instance's running batch, and one for a batch prepared ahead of a free instance
    plan = engine.fix_shapes(plan, batcher.limits.instances + 1) or plan
    started = time.monotonic()
    done = batcher.on_each_instance(lambda k: shapes.warm(lambda b, n: engine_timing(engine, k)(b, n), plan))
    log.info("warm-up: %d batch shapes on each of %d instances in %.1f s", len(done[0]), len(done),
             time.monotonic() - started)
    return done[0]


def tune(engine, batcher, settings, max_length: int, cache=None):
    """Warm every instance on the shapes traffic will use and, where a limit is ``auto``, pick it from
    instance 0's measurements (or the table an earlier start on this machine measured, from ``cache``);
    returns the BatchLimits to serve with (also exported as gauges)."""
    from snapserve import metrics

    device = engine.describe().get("device", "cpu")
    explicit_size = None if settings.max_batch_size == AUTO else int(settings.max_batch_size)
    explicit_tokens = None if settings.max_batch_tokens == AUTO else int(settings.max_batch_tokens)
    budget = budget_ms(settings.max_batch_latency_ms, device)
    fallback = FALLBACK[kind(device)]
    limits = batcher.limits
    shared_limits = (0, 0)  # none measured: the same limits for every load
    if not settings.warmup:
        size, tokens, source = explicit_size or fallback[0], explicit_tokens or fallback[1], "fallback"
    else:
        batcher.on_each_instance(lambda k: engine.warmup(k, max_length, explicit_size or fallback[0]))
        batches, lengths = grid(device, max_length, explicit_size)
        if explicit_tokens is not None:
            batches = [b for b in batches if b * lengths[0] <= explicit_tokens] or [1]
        started = time.monotonic()
        table = cached_table(cache, budget)
        reused = table is not None
        if not reused:
            table = batcher.on_each_instance(
                lambda k: measure(engine_timing(engine, k), batches, lengths, budget / 1e3) if k == 0 else None)[0]
            if cache is not None:
                cache.put("batch_table", {"budget_ms": budget, "points": [[p.batch, p.length, p.seconds] for p in table]})
            source = "measured"
        else:
            source = f"measured at an earlier start, {cache.path}"
        # the other instances (every one, with a reused table) run each shape once: warm on them too
        batcher.on_each_instance(lambda k: replay(table, engine_timing(engine, k)) if k or reused else None)
        choice = choose(table, budget, explicit_size, explicit_tokens)
        size, tokens = choice.max_batch_size, choice.max_batch_tokens
        log.info("batch tuning on %s (%.1f s, budget %g ms):\n  %s", device, time.monotonic() - started, budget,
                 "\n  ".join(choice.lines()))
        warm_shapes(engine, batcher, device, size, tokens, max_length)
        shared_ms = budget * SHARED_SHARE if settings.shared_batch_latency_ms == AUTO else float(
            settings.shared_batch_latency_ms)
        if shared_ms > 0:
            shared = choose(table, shared_ms)
            shared_limits = min(size, shared.max_batch_size), min(tokens, shared.max_batch_tokens)
            log.info("batch limits while several API keys send work (within %g ms): max_batch_size=%d "
                     "max_batch_tokens=%d", shared_ms, *shared_limits)
    if explicit_size is not None and explicit_tokens is not None:
        source = "flags"
    log.info("batch limits (%s): max_batch_size=%d%s max_batch_tokens=%d%s", source, size,
             "" if explicit_size is None else " (flag)", tokens, "" if explicit_tokens is None else " (flag)")
    metrics.BATCH_LIMIT.labels("max_batch_size").set(size)
    metrics.BATCH_LIMIT.labels("max_batch_tokens").set(tokens)
    metrics.BATCH_LIMIT.labels("max_batch_latency_ms").set(budget)
    metrics.BATCH_LIMIT.labels("shared_batch_size").set(shared_limits[0])
    return dataclasses.replace(limits, max_batch_size=size, max_batch_tokens=tokens,
                               shared_batch_size=shared_limits[0], shared_batch_tokens=shared_limits[1])
