"""The generation engine's estimated wait (``snapserve_estimated_wait_seconds{component="predictor"}``).

How long new work would wait now: the prompt tokens not yet prefilled ÷ the measured prefill rate, plus
the tokens admitted requests may still generate ÷ the measured decode rate (each request's ``max_tokens``
less what it has generated: an upper bound, as a request may stop early at EOS or a stop string).

Both rates come from the engine's own progress, the outputs ``GenerationEngine.generate`` already handles
(a few integer operations per output, none per scrape): tokens per second of busy time (while any request
is held), over windows of ``window_s``, exponentially averaged. Prefill and decode share the engine's
steps, so a window's time is split between them in proportion to their tokens: a window of decode alone
moves only the decode rate, and a mixed one is not counted twice. Before anything was measured: 0.

Everything here runs on the event loop (``generate`` and the ``/metrics`` handler both do); no torch.
"""

from __future__ import annotations

ALPHA = 0.5  # weight of a new window in the averages, once they rest on more tokens than it brings


class Rate:
    """Tokens per second of one phase, exponentially averaged over windows. A window weighs at least its
    share of the tokens seen so far: the first values (the cold warm-up request) give way to the first
    real load at once instead of lingering."""

    def __init__(self):
        self.value: float | None = None
        self.tokens = 0

    def update(self, rate: float, tokens: int, share: float) -> None:
        """A window's ``rate`` for ``tokens`` of this phase, ``share`` of the window's tokens."""
        if tokens <= 0:
            return
        weight = max(ALPHA * share, tokens / (tokens + self.tokens))
        self.value = rate if self.value is None else (1 - weight) * self.value + weight * rate
        self.tokens += tokens


class WaitEstimate:
    def __init__(self, window_s: float = 0.5):
        self.window_s = window_s
        self.prefill = Rate()  # prompt tokens / s
        self.decode = Rate()  # generated tokens / s
        self.waiting_prompt = 0  # prompt tokens of held requests with no token yet
        self.remaining_decode = 0  # tokens held requests may still generate
        self.held = 0
        self._since = 0.0  # busy time counted up to here
        self._busy, self._prefilled, self._decoded = 0.0, 0, 0  # the current window

    def seconds(self) -> float:
        """The estimated wait now (O(1): called per scrape)."""
        wait = 0.0
        if self.prefill.value:
            wait += max(0, self.waiting_prompt) / self.prefill.value
        if self.decode.value:
            wait += max(0, self.remaining_decode) / self.decode.value
        return wait

    def admitted(self, prompt_tokens: int, max_tokens: int, now: float) -> None:
        if self.held == 0:
            self._since = now  # busy from now (idle time is not counted)
        self.held += 1
        self.waiting_prompt += prompt_tokens
        self.remaining_decode += max_tokens

    def progressed(self, prefilled: int, decoded: int, now: float) -> None:
        """A request's new tokens: ``decoded`` of them, and ``prefilled`` its prompt when these are its first."""
        self.waiting_prompt -= prefilled
        self.remaining_decode -= decoded
        self._prefilled += prefilled
        self._decoded += decoded
        self._tick(now)
        if (self._busy >= self.window_s or (prefilled and self.prefill.value is None)
                or (decoded and self.decode.value is None)):
            self._close_window()

    def ended(self, prompt_left: int, decode_left: int, now: float) -> None:
        """A request left (finished, failed or cancelled): what it had not prefilled and not generated."""
        self.waiting_prompt -= prompt_left
        self.remaining_decode -= decode_left
        self._tick(now)
        self.held -= 1

    def _tick(self, now: float) -> None:
        if self.held:
            self._busy += max(0.0, now - self._since)
        self._since = now

    def _close_window(self) -> None:
        total = self._prefilled + self._decoded
        if total and self._busy > 0:
            rate = total / self._busy  # tokens per busy second; each phase gets its share of the time
            self.prefill.update(rate, self._prefilled, self._prefilled / total)
            self.decode.update(rate, self._decoded, self._decoded / total)
        self._busy, self._prefilled, self._decoded = 0.0, 0, 0
