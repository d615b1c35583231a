"""Hardening fixtures: servers started with the limits under test (real flags, real default model)."""

from __future__ import annotations

import pytest

from tests import procs

KEYS = ("key-alpha-7f3c2d", "key-beta-91ab0e")


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "api-keys"
    path.write_text(f"# one key per line\n{KEYS[0]}\n\n{KEYS[1]}\n")
    return path


@pytest.fixture(scope="module")
def guarded(servers, keys_file, tmp_path_factory):
    """A transformer with API keys, a tight rate limit and a small body limit, before the session predictor."""
    server, _ = procs.start_transformer(
        servers.predictor_url.removeprefix("http://"), model_dir=servers.model_dir,
        log_dir=tmp_path_factory.mktemp("guard-logs"),
        extra=["--api_keys_file", str(keys_file), "--rate_limit_rps", "5", "--rate_limit_burst", "5",
               "--max_body_bytes", "65536"])
    yield server
    server.stop()
