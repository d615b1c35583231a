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


def add(group, name: str, default, kind=str, help: str = "", **kwargs) -> None:
    """Add ``--name`` whose default comes from env ``NAME`` when set."""
    env = name.upper()
    convert = strtobool if kind is bool else kind
    raw = os.environ.get(env)
    value = convert(raw) if raw not in (None, "") else default
    group.add_argument(f"--{name}", default=value, type=convert, help=f"{help} [env {env}]", **kwargs)


def server_parser(prog: str, description: str):
    """kserve's parser extended with our group and the flags both servers share; returns (parser, group)."""
    parser = argparse.ArgumentParser(prog=prog, parents=[kserve_parser()], description=description)
    group = parser.add_argument_group(f"snapserve {prog.split()[-1]}")
    add(group, "model_dir", "/mnt/models", help="Hugging Face snapshot folder (offline)")
    add(group, "max_length", 0, int, help="truncate texts to this many tokens (0: the model's maximum)")
    add(group, "grace_period", 30, int, help="seconds to finish in-flight work after SIGTERM")
    return parser, group


def kserve_parser() -> argparse.ArgumentParser:
    """kserve's own parser (importing kserve.model_server parses argv once, harmlessly)."""
    from kserve import model_server

    return model_server.parser


SECRET_WORDS = {"key", "token", "password", "secret"}


def describe(settings) -> dict:
    """The effective settings as a dict safe to log once at start (secret-looking values hidden)."""
    values = {k: str(v) for k, v in dataclasses.asdict(settings).items()}
    return {k: ("***" if SECRET_WORDS & set(k.split("_")) and v else v) for k, v in values.items()}
