"""The supervisor with small real processes: restart after a crash, back-off, stop with escalation,
and no child outliving a killed stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadtest.stack.supervisor import Backoff, Supervised
from loadtest.stack.unpriv import launch
from tests.stack.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_backoff_restarts_at_once_then_doubles():
    b = Backoff(first_s=1, max_s=8)
    assert [b.delay(n) for n in range(7)] == [0, 1, 2, 4, 8, 8, 8]


def test_quick_crashes_back_off(tmp_path):
    crash = [sys.executable, "-c", "raise SystemExit(3)"]
    p = Supervised("crasher", crash, tmp_path / "crasher.log", backoff=Backoff(first_s=0.5, max_s=60))
    p.start()
    time.sleep(1.5)  # a crash loop: start at once, then 0.5 s, then 1 s, then 2 s -> 3 runs in 1.5 s
    p.stop()
    p.wait()
    assert 1 <= p.restarts <= 3, p.restarts


def test_restarts_a_killed_process_then_stops_it(tmp_path):
    starts = []
    p = Supervised("sleeper", launch(["sleep", "60"]), tmp_path / "sleeper.log",
                   on_start=lambda s: starts.append(s.pid))
    p.start()
    first = wait_for(lambda: p.pid)
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: p.pid not in (None, first) and p.pid)
    assert p.restarts == 1 and starts == [first, second]
    p.stop()
    assert p.wait() == -signal.SIGTERM
    assert gone(second) and p.pid is None
    time.sleep(0.3)
    assert p.pid is None  # no restart after stop()


def test_stop_escalates_to_sigkill_after_the_grace_period(tmp_path):
    ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    stubborn = [sys.executable, "-c", ignore_term]
    p = Supervised("stubborn", stubborn, tmp_path / "stubborn.log", grace_s=0.5)
    p.start()
    wait_for(lambda: p.pid)
    time.sleep(0.3)  # let it install its handler
    p.stop()
    assert p.wait() == -signal.SIGKILL


def test_children_die_with_a_killed_supervisor(tmp_path):
    """Even a SIGKILLed stack leaves no replica behind: children carry PDEATHSIG."""
    code = (
        "import sys, time; from pathlib import Path; from loadtest.stack.supervisor import Supervised;"
        "from loadtest.stack.unpriv import launch;"
        f"p = Supervised('s', launch(['sleep', '60']), Path({str(tmp_path / 's.log')!r})); p.start();"
        "print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    # setpriv sets PDEATHSIG and then execs: wait for the exec, so the setting is in place
    wait_for(lambda: Path(f"/proc/{child}/comm").read_text().strip() == "sleep")
    parent.kill()
    parent.wait()
    wait_for(lambda: gone(child), timeout=5)
