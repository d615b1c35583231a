"""The generation engine's estimated wait (``snapserve_estimated_wait_seconds{component="predictor"}``).

How long new work would wait now: the prompt tokens not yet prefilled ÷ the measured prefill rate, plus
the tokens admitted requests may still generate ÷ the measured decode rate (each request's ``max_tokens``
less what it has generated: an upper bound, as a request may stop early at EOS or a stop string).

Both rates come from the engine's own progress, the outputs ``GenerationEngine.generate`` already handles
(a few integer operations per output, none per scrape): tokens per second of busy time (while any request
is held), over windows of ``window_s``, exponentially averaged. Prefill and decode share the engine's
steps, so a window's time is split between them in proportion to their tokens: a window of decode alone
moves only the decode rate, and a mixed one is not counted twice. A prompt's prefill shows only with its
first token, so a window spans several steps. Before a rate rests on ``TRUSTED_TOKENS``, its term is 0.

Everything here runs on the event loop (``generate`` and the ``/metrics`` handler both do); no torch.
"""

from __future__ import annotations

WINDOW_S = 2.0  # busy seconds per measurement: several engine steps (one prefill step took ~1 s on a busy CPU)
ALPHA = 0.5  # weight of a new window in the averages, once they rest on more tokens than it brings
TRUSTED_TOKENS = 32  # a rate is used once it rests on this many tokens (not on the warm-up request's few, cold)


class Rate:
    """Tokens per second of one phase, exponentially averaged over windows. A window weighs at least its
    share of the tokens seen so far: the first values (the cold warm-up request) give way to the first
    real load at once instead of lingering."""

    def __init__(self):
        self.value: float | None = None
        self.tokens = 0

    @property
    def trusted(self) -> bool:
        return self.value is not None and self.tokens >= TRUSTED_TOKENS

    def update(self, rate: float, tokens: int, share: float) -> None:
        """A window's ``rate`` for ``tokens`` of this phase, ``share`` of the window's tokens."""
        if tokens <= 0:
            return
        weight = max(ALPHA * share, tokens / (tokens + self.tokens))
        self.value = rate if self.value is None else (1 - weight) * self.value + weight * rate
        self.tokens += tokens


class WaitEstimate:
    def __init__(self, window_s: float = WINDOW_S):
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
        if self.prefill.trusted and self.prefill.value > 0:
            wait += max(0, self.waiting_prompt) / self.prefill.value
        if self.decode.trusted and self.decode.value > 0:
            wait += max(0, self.remaining_decode) / self.decode.value
        return wait

    def admitted(self, prompt_tokens: int, max_tokens: int, now: float) -> None:
        if self.held == 0:
            self._since = now  # busy from now (idle time is not counted)
        self.held += 1
        self.waiting_prompt += prompt_tokens
        self.remaining_decode += max_tokens

    def progressed(self, prefilled: int, new_tokens: int, now: float) -> None:
        """A request's ``new_tokens``, and ``prefilled`` its prompt when these are its first (the first token
        comes out of the prefill step: it counts as prefill work)."""
        decoded = new_tokens - 1 if prefilled else new_tokens
        self.waiting_prompt -= prefilled
        self.remaining_decode -= new_tokens
        self._prefilled += prefilled
        self._decoded += decoded
        self._tick(now)
        # a window closes after window_s busy seconds, or as soon as it holds enough tokens for a rate still
        # untrusted (the first steps of the first load replace the warm-up's few, cold values at once)
        if (self._busy >= self.window_s or (not self.prefill.trusted and self._prefilled >= TRUSTED_TOKENS)
                or (not self.decode.trusted and self._decoded >= TRUSTED_TOKENS)):
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
