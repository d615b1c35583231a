"""Load for the hardening tests: closed-loop (N clients back to back) and open-loop (a fixed arrival
rate, which is how overload really arrives), every answer recorded; RSS sampling from /proc."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import httpx

TEXTS = [f"Sentence number {i} about serving embeddings under load, with a few more words to tokenise."
         for i in range(16)]


@dataclasses.dataclass
class Answer:
    status: int  # 0: no HTTP answer
    seconds: float
    retry_after: str | None = None
    error: str = ""  # transport error class name when status is 0
    connected: bool = True  # False: refused before the request was sent


@dataclasses.dataclass
class Run:
    answers: list[Answer]
    seconds: float

    def count(self, status: int) -> int:
        return sum(a.status == status for a in self.answers)

    def share(self, status: int) -> float:
        return self.count(status) / max(1, len(self.answers))

    @property
    def ok_per_second(self) -> float:
        return self.count(200) / self.seconds

    def p99(self, status: int = 200) -> float:
        values = sorted(a.seconds for a in self.answers if a.status == status)
        return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")

    def statuses(self) -> dict:
        out: dict = {}
        for a in self.answers:
            key = a.status or a.error
            out[key] = out.get(key, 0) + 1
        return out


def body(texts_per_request: int) -> dict:
    return {"instances": TEXTS[:texts_per_request]}


async def _one(client: httpx.AsyncClient, url: str, payload: dict, answers: list[Answer]) -> None:
    started = time.perf_counter()
    try:
        r = await client.post(url, json=payload)
        answers.append(Answer(r.status_code, time.perf_counter() - started, r.headers.get("retry-after")))
        if r.status_code == 200:
            assert len(r.json()["predictions"]) == len(payload["instances"])
    except httpx.ConnectError as exc:
        answers.append(Answer(0, time.perf_counter() - started, error=type(exc).__name__, connected=False))
    except httpx.HTTPError as exc:
        answers.append(Answer(0, time.perf_counter() - started, error=type(exc).__name__))


def client(concurrency: int, timeout: float = 60, keep_alive: bool = True) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency if keep_alive else 0)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


async def closed_loop(url: str, clients: int, seconds: float, texts: int = 8) -> Run:
    """``clients`` callers, each sending its next request when the last one is answered."""
    answers: list[Answer] = []
    deadline = time.perf_counter() + seconds
    async with client(clients) as http:
        async def caller():
            while time.perf_counter() < deadline:
                await _one(http, url, body(texts), answers)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(clients)))
    return Run(answers, time.perf_counter() - started)


async def open_loop(url: str, rate: float, seconds: float, texts: int = 8, max_in_flight: int = 2000) -> Run:
    """Requests start at ``rate`` per second whatever the server does (a paced schedule, no bursts), each on a
    connection of its own, as independent callers arrive. Not a shared keep-alive pool: httpcore 1.0 hands one
    idle connection to every request queued at that moment, the losers queue again, and under overload some
    lost for 2-34 s before their request was even sent (traced: all the wait before send_request_headers, while
    the servers answered each in under 0.7 s), which is what failed the overload tests' p99 intermittently."""
    answers: list[Answer] = []
    tasks = []
    async with client(max_in_flight, keep_alive=False) as http:
        started = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_one(http, url, body(texts), answers)))
        await asyncio.gather(*tasks)
    return Run(answers, time.perf_counter() - started)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Peak resident memory of some processes, sampled every ``period`` seconds on a thread."""

    def __init__(self, pids: list[int], period: float = 0.2):
        self.pids, self.period = pids, period
        self.peak = {pid: rss_bytes(pid) for pid in pids}
        self.last = dict(self.peak)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.period):
            for pid in self.pids:
                try:
                    self.last[pid] = rss_bytes(pid)
                except OSError:
                    continue
                self.peak[pid] = max(self.peak[pid], self.last[pid])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"
