"""Polling helper shared by the stack tests."""

from __future__ import annotations

import time


def wait_for(cond, timeout: float = 10.0, what: str = "the condition", interval: float = 0.05):
    """Call ``cond`` until it returns something truthy (returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
