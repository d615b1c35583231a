"""Generated token ids -> text pieces, for streaming: never a split UTF-8 character, and stop
strings matched across token boundaries without ever leaking into the output.

``tokenizers.decoders.DecodeStream`` holds back the bytes of a character (an emoji, a Hangul
syllable) spread over several byte-level tokens until it is whole. ``StopStrings`` holds back the
tail of the text that could still become a stop string. Joined, the pieces equal the whole text
decoded at once (up to the first stop string): the non-streamed answer is built from the same
pieces, so the two can never differ.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class StopStrings:
    """Feed text pieces; get back what is safe to emit, and whether a stop string was met."""

    def __init__(self, stops: list[str] | tuple[str, ...] = ()):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        text = self.pending + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self.pending = True, ""
            return text[:min(hits)]
        keep = self._partial(text)
        self.pending = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """The held-back tail, once generation ended without meeting a stop string."""
        rest, self.pending = self.pending, ""
        return "" if self.stopped else rest

    def _partial(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that begins some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best


class TextStream:
    """Token ids in, safe text pieces out (``step``), ``finish`` at the end."""

    def __init__(self, tokenizer: Tokenizer, stops=(), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.decoder = DecodeStream(skip_special_tokens=skip_special_tokens)
        self.stop = StopStrings(stops)

    @property
    def stopped(self) -> bool:
        return self.stop.stopped

    def step(self, token_ids) -> str:
        out = []
        for token in token_ids:
            piece = self.decoder.step(self.tokenizer, int(token))
            if piece:
                out.append(self.stop.feed(piece))
                if self.stop.stopped:
                    break
        return "".join(out)

    def finish(self) -> str:
        return self.stop.flush()
