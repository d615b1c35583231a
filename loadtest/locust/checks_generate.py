"""Body checks for the generation routes, shared by the locust classes and their test (no locust import here:
its gevent patching must not reach pytest). Each returns None when right, else a short reason."""

from __future__ import annotations


def check_stream(text: list[str], finish, usage, max_tokens: int) -> str | None:
    """The content pieces, last finish_reason and usage read off a chat stream."""
    if finish not in ("stop", "length"):
        return f"finish_reason {finish!r}, expected 'stop' or 'length'"
    if not text and finish != "stop":  # an immediate end of sequence is a right, empty answer
        return "stream carried no content"
    if not usage or not 0 <= usage.get("completion_tokens", -1) <= max_tokens:
        return f"usage {usage!r}: completion_tokens must be 0..{max_tokens}"
    return None


def check_completion(body, max_tokens: int) -> str | None:
    """None when ``body`` is a right /completions answer, else the reason."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != 1:
        return "expected one choice"
    text, finish = choices[0].get("text"), choices[0].get("finish_reason")
    if finish not in ("stop", "length"):
        return f"finish_reason {finish!r}"
    if not isinstance(text, str) or (not text and finish != "stop"):  # empty: only an immediate end of sequence
        return "choice has no text"
    tokens = (body.get("usage") or {}).get("completion_tokens", -1)
    if not 0 <= tokens <= max_tokens:
        return f"completion_tokens {tokens}, expected 0..{max_tokens}"
    return None
