"""One checked JSON POST for every locust user class: a non-200, a body that is not JSON, or a body
``check`` finds wrong (it returns the problem, or None) counts as a failure with its reason."""

from __future__ import annotations


def post_checked(client, path: str, name: str, payload: dict, headers: dict, check) -> None:
    with client.post(path, json=payload, name=name, headers=headers, catch_response=True) as resp:
        if resp.status_code != 200:
            # FastHttpUser's responses carry .error; HttpUser's (requests) do not
            resp.failure(f"HTTP {resp.status_code}: {getattr(resp, 'error', None) or (resp.text or '')[:200]}")
            return
        try:
            body = resp.json()
        except ValueError:
            resp.failure("response is not JSON")
            return
        problem = check(body)
        if problem:
            resp.failure(problem)
