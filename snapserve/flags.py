"""Flag helpers shared by predictor and transformer (pure Python: the transformer image has no torch).

Every flag of ours is also an environment variable named as the flag in upper case; an explicit
flag wins over the variable, the variable over the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os


def strtobool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def non_negative(value: str | float) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return number


def add(group, name: str, default, kind=str, help: str = "", **kwargs) -> None:
    """Add ``--name`` whose default comes from env ``NAME`` when set."""
    env = name.upper()
    convert = strtobool if kind is bool else kind
    raw = os.environ.get(env)
    value = convert(raw) if raw not in (None, "") else default
    group.add_argument(f"--{name}", default=value, type=convert, help=f"{help} [env {env}]", **kwargs)


# The largest request body each server takes. The transformer gets texts; the predictor gets them as
# binary INT64 tensors, input_ids + attention_mask = 16 bytes a token, so the transformer's largest
# request (2,048 texts x 256 tokens) is 8 MiB plus the JSON header there.
MAX_BODY_BYTES = {"predictor": 32 * 1024 * 1024, "transformer": 8 * 1024 * 1024}
# Under the 30 s a Gateway API route usually allows; the predictor's is longer, since the transformer
# forwards what is left of each request's own deadline.
REQUEST_TIMEOUT_MS = {"predictor": 30_000.0, "transformer": 25_000.0}


def server_parser(component: str, description: str):
    """kserve's parser extended with our group and the flags both servers share; returns (parser, group)."""
    from snapserve.http import kserve_compat

    parser = argparse.ArgumentParser(prog=f"python -m {component}", parents=[kserve_compat.kserve_parser()],
                                     description=description)
    group = parser.add_argument_group(f"snapserve {component}")
    add(group, "model_dir", "/mnt/models", help="Hugging Face snapshot folder (offline)")
    add(group, "max_length", 0, int, help="truncate texts to this many tokens (0: the model's maximum)")
    add(group, "grace_period", 30, int, help="seconds to finish in-flight work after SIGTERM")
    add(group, "max_body_bytes", MAX_BODY_BYTES[component], int, help="largest request body (more: 413)")
    # One access line per client request at the transformer (the predictor's callers are transformers,
    # whose lines already name the request); probes and scrapes are not logged; kserve's per-request
    # trace lines (kserve.trace) are off.
    # (not --access_log: kserve's parser, which reads argv at import, would take it for --access_log_format)
    add(group, "log_access", component == "transformer", bool, help="one log line per request")
    add(group, "log_probes", False, bool, help="also log health probes and metric scrapes")
    add(group, "trace_logging", False, bool, help="kserve's own per-request timing lines (kserve.trace)")
    add(group, "request_timeout_ms", REQUEST_TIMEOUT_MS[component], float, help="longest a request may take "
        "here (504 past it; a shorter deadline than the queue's estimated wait gets 429 at once); a client's "
        "x-request-timeout-ms / request-timeout may ask for less. Keep it under the route's timeout")
    add(group, "client_timeout_s", 15.0, non_negative, help="a request's headers and body must arrive within this "
        "many seconds of its first byte (or of the connection opening), else 408 and the connection closes "
        "(slow or stalled clients); 0: no limit. Idle keep-alive connections close after --timeout-keep-alive")
    add(group, "drop_abandoned", True, bool, help="drop the queued work of a client that hung up or whose "
        "deadline passed, and refuse at once what the queue cannot serve within the deadline (false: compute "
        "everything accepted to the end and ignore clients' deadlines, as servers usually do; for comparisons)")
    return parser, group


SECRET_WORDS = {"key", "token", "password", "secret"}


def describe(settings) -> dict:
    """The effective settings as a dict safe to log once at start (secret-looking values hidden)."""
    values = {k: str(v) for k, v in dataclasses.asdict(settings).items()}
    return {k: ("***" if SECRET_WORDS & set(k.split("_")) and v else v) for k, v in values.items()}
