"""Keeps one process running the way a kubelet keeps a container running: restart it whenever it
exits, waiting longer after each quick crash (CrashLoopBackOff), and stop it with SIGTERM then a
grace period then SIGKILL."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("snapserve.stack")


@dataclass(frozen=True)
class Backoff:
    """The first exit after a good run restarts at once (as a pod's first restart does); every further
    exit that comes quickly waits first_s, 2*first_s, ... up to max_s; a run of reset_after_s clears it."""

    first_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 30.0

    def delay(self, quick_exits: int) -> float:
        """Seconds to wait after the (quick_exits + 1)-th exit in a row."""
        return 0.0 if quick_exits == 0 else min(self.max_s, self.first_s * 2 ** (quick_exits - 1))


class Supervised:
    """One named process, restarted on exit until stop() is called. Runs on its own thread, which is
    also the thread that forks the child (so the child's PDEATHSIG tracks a thread that lives as long
    as the supervision does)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None,
                 stop_signal: int = signal.SIGTERM, grace_s: float = 30.0, backoff: Backoff = Backoff(),
                 on_start: Callable[[Supervised], None] | None = None):
        self.name, self.argv, self.log_path, self.env, self.cwd = name, argv, log_path, env, cwd
        self.stop_signal, self.grace_s, self.backoff, self.on_start = stop_signal, grace_s, backoff, on_start
        self.restarts = 0
        self.started_at = 0.0
        self.started_wall = 0.0  # time.time() of the last (re)start, for state.json readers in other processes
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._spawned = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"supervise-{name}", daemon=True)

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    def alive(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        self._thread.start()
        self._spawned.wait()

    def _spawn(self) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            with open(self.log_path, "ab") as out:
                self._proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                              env=self.env, cwd=self.cwd,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
            self.started_at, self.started_wall = time.monotonic(), time.time()
        log.info("%s: started pid %d", self.name, self._proc.pid)
        if self.on_start:
            self.on_start(self)
        return True

    def _run(self) -> None:
        quick_exits = 0
        try:
            while self._spawn():
                self._spawned.set()
                rc = self._proc.wait()
                if self._stopping.is_set():
                    return
                if time.monotonic() - self.started_at >= self.backoff.reset_after_s:
                    quick_exits = 0
                delay = self.backoff.delay(quick_exits)
                quick_exits += 1
                log.warning("%s: exited with %s; restart %d in %.1f s (log: %s)",
                            self.name, rc, self.restarts + 1, delay, self.log_path)
                if self._stopping.wait(delay):
                    return
                self.restarts += 1
        except Exception:  # e.g. the binary is missing: say so instead of a silent dead thread
            log.exception("%s: cannot supervise", self.name)
        finally:
            self._spawned.set()

    def send(self, sig: int) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.send_signal(sig)

    def stop(self) -> None:
        """Begin stopping: no more restarts, send the stop signal. Pair with wait()."""
        with self._lock:
            self._stopping.set()
        self.send(self.stop_signal)

    def wait(self) -> int | None:
        """Wait out the grace period, then SIGKILL; returns the exit code."""
        p = self._proc
        if p is None:
            return None
        try:
            rc = p.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s: still running %.0f s after stop; killing", self.name, self.grace_s)
            p.kill()
            rc = p.wait()
        self._thread.join(5)
        return rc
