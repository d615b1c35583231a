"""SLO gate for locust: ``--slo-p99-ms`` and ``--slo-max-failure-ratio``.

When either is set, the run's totals are checked as locust quits and ``process_exit_code`` is
3 on a miss (0 when met), so CI and people can gate on ``locust ... --headless``. A run that made no
requests misses the gate: there is nothing to vouch for.
"""

from __future__ import annotations

import logging

from locust import events
from locust.runners import WorkerRunner

MISSED_EXIT_CODE = 3
log = logging.getLogger("snapserve.slo")


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--slo-p99-ms", type=float, default=None, env_var="SNAPSERVE_SLO_P99_MS",
                       help="fail the run (exit 3) when the overall p99 latency exceeds this")
    parser.add_argument("--slo-max-failure-ratio", type=float, default=None,
                       env_var="SNAPSERVE_SLO_MAX_FAILURE_RATIO",
                       help="fail the run (exit 3) when failures/requests exceeds this (0 = none allowed)")


def verdict(total, p99_ms: float | None, max_failure_ratio: float | None) -> list[str]:
    """The reasons the SLO was missed; empty when it was met."""
    misses = []
    if total.num_requests == 0:
        return ["no requests were made"]
    if p99_ms is not None:
        p99 = total.get_response_time_percentile(0.99)
        if p99 > p99_ms:
            misses.append(f"p99 {p99:.0f} ms > {p99_ms:g} ms")
    if max_failure_ratio is not None and total.fail_ratio > max_failure_ratio:
        misses.append(f"failure ratio {total.fail_ratio:.4f} > {max_failure_ratio:g}")
    return misses


@events.quitting.add_listener
def _gate(environment, **_kw) -> None:
    opts = environment.parsed_options
    if opts is None or isinstance(environment.runner, WorkerRunner):
        return
    if opts.slo_p99_ms is None and opts.slo_max_failure_ratio is None:
        return
    total = environment.stats.total
    misses = verdict(total, opts.slo_p99_ms, opts.slo_max_failure_ratio)
    summary = (f"{total.num_requests} requests, p99 {total.get_response_time_percentile(0.99):.0f} ms, "
               f"failure ratio {total.fail_ratio:.4f}")
    if misses:
        log.error("SLO missed: %s (%s)", "; ".join(misses), summary)
        environment.process_exit_code = MISSED_EXIT_CODE
    else:
        log.info("SLO met: %s", summary)
        environment.process_exit_code = 0
