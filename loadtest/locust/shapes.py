"""Load shapes: a step ramp and a spike. Chosen with ``SNAPSERVE_SHAPE=step|spike`` (unset: none,
locust's own -u/-r/-t apply). Both read the peak from ``-u`` and the length from ``-t``.

- step:  ``SNAPSERVE_STEPS`` (4) equal steps from peak/steps up to the peak, each held run_time/steps.
- spike: a base of peak/``SNAPSERVE_SPIKE_RATIO`` (8) users, the whole peak in the middle fifth of the
  run (spawned as fast as locust can), then the base again: does latency come back?
"""

from __future__ import annotations

import os

from locust import LoadTestShape

DEFAULT_USERS = 64
DEFAULT_RUN_TIME = 120


class _OptionShape(LoadTestShape):
    abstract = True
    use_common_options = True  # -u and -t set the peak and the length

    def _opts(self) -> tuple[int, float, float]:
        opts = self.runner.environment.parsed_options if self.runner else None
        users = (opts.num_users if opts else None) or DEFAULT_USERS
        run_time = (opts.run_time if opts else None) or DEFAULT_RUN_TIME
        rate = (opts.spawn_rate if opts else None) or max(1.0, users / 4)
        return int(users), float(run_time), float(rate)


class StepRampShape(_OptionShape):
    def tick(self):
        users, run_time, rate = self._opts()
        t = self.get_run_time()
        if t >= run_time:
            return None
        steps = max(1, int(os.environ.get("SNAPSERVE_STEPS", "4")))
        step = min(steps - 1, int(t // (run_time / steps)))
        return max(1, users * (step + 1) // steps), rate


class SpikeShape(_OptionShape):
    def tick(self):
        users, run_time, rate = self._opts()
        t = self.get_run_time()
        if t >= run_time:
            return None
        base = max(1, users // max(1, int(os.environ.get("SNAPSERVE_SPIKE_RATIO", "8"))))
        if 0.4 * run_time <= t < 0.6 * run_time:
            return users, float(users)  # all at once
        return base, rate


SHAPES = {"step": StepRampShape, "spike": SpikeShape}


def selected() -> type[LoadTestShape] | None:
    """The shape class ``SNAPSERVE_SHAPE`` names, or None; an unknown name is an error."""
    name = os.environ.get("SNAPSERVE_SHAPE", "").strip().lower()
    if not name or name == "none":
        return None
    if name not in SHAPES:
        raise SystemExit(f"SNAPSERVE_SHAPE={name!r}: choose one of {', '.join(SHAPES)} (or leave it unset)")
    return SHAPES[name]
