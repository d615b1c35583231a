"""Body checks for the generation routes, shared by the locust classes and their test (no locust import here:
its gevent patching must not reach pytest). Each returns None when right, else a short reason."""

from __future__ import annotations


def check_stream(text: list[str], finish, usage, max_tokens: int) -> str | None:
    """The content pieces, last finish_reason and usage read off a chat stream."""
    if not text:
        return "stream carried no content"
    if finish not in ("stop", "length"):
        return f"finish_reason {finish!r}, expected 'stop' or 'length'"
    if not usage or not 0 < usage.get("completion_tokens", 0) <= max_tokens:
        return f"usage {usage!r}: completion_tokens must be 1..{max_tokens}"
    return None


def check_completion(body, max_tokens: int) -> str | None:
    """None when ``body`` is a right /completions answer, else the reason."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != 1:
        return "expected one choice"
    if not isinstance(choices[0].get("text"), str) or not choices[0]["text"]:
        return "choice has no text"
    if choices[0].get("finish_reason") not in ("stop", "length"):
        return f"finish_reason {choices[0].get('finish_reason')!r}"
    tokens = (body.get("usage") or {}).get("completion_tokens", 0)
    if not 0 < tokens <= max_tokens:
        return f"completion_tokens {tokens}, expected 1..{max_tokens}"
    return None
