"""Settings declared once (pure Python: the transformer image has no torch).

As TEI's ``#[clap(long, env)]``: one dataclass field gives the flag ``--name``, the environment variable
``NAME``, type, default, help, which snapshot tasks it applies to and the chart value that sets it::

    max_texts: int = setting(2048, "most texts in one request (more: 413)", tasks=ENCODER,
                             chart="transformer.limits.maxTexts")

``parser(cls, ...)`` builds the argparse parser from the fields (kserve's parser as the parent: its flags
are never redeclared; fields that come from them are declared with ``kserve(...)``) and ``build(cls, args)``
builds the dataclass from the parsed arguments. An explicit flag wins over the variable, the variable
over the default. ``refuse_inapplicable`` refuses a flag set explicitly (argv or env) for a task it does
not apply to. Validation stays in each dataclass's ``__post_init__``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

from snapserve import metadata

ENCODER = frozenset({metadata.EMBEDDING, metadata.CLASSIFICATION, metadata.RERANK})
GENERATE = frozenset({metadata.GENERATE})
ALL_TASKS = ENCODER | GENERATE

# The largest request body each server takes. The transformer gets texts; the predictor gets them as
# binary INT64 tensors, input_ids + attention_mask = 16 bytes a token, so the transformer's largest
# request (2,048 texts x 256 tokens) is 8 MiB plus the JSON header there.
MAX_BODY_BYTES = {"predictor": 32 * 1024 * 1024, "transformer": 8 * 1024 * 1024}
# Under the 30 s a Gateway API route usually allows; the predictor's is longer, since the transformer
# forwards what is left of each request's own deadline.
REQUEST_TIMEOUT_MS = {"predictor": 30_000.0, "transformer": 25_000.0}

KEY = "snapserve"  # the dataclass field metadata key
UNSET = object()  # argparse's default for our flags: "not on the command line"


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


def int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class Flag:
    """One declared setting; ``name`` is the flag (and the argparse dest), ``env`` its variable."""

    name: str
    field: str
    default: Any
    help: str
    convert: Callable[[str], Any]
    choices: tuple | None
    tasks: frozenset
    chart: str | None  # the values.yaml key that sets it (None: the chart leaves it at its default)
    after: Callable | None  # (value, args) -> the field's value, for what needs other flags to resolve

    @property
    def env(self) -> str:
        return self.name.upper()

    def from_env(self, environ=os.environ) -> Any:
        """The variable's value converted, or UNSET when it is missing or empty."""
        raw = environ.get(self.env)
        if raw in (None, ""):
            return UNSET
        try:
            value = self.convert(raw)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ValueError(f"env {self.env}={raw!r}: {exc or 'invalid value'}; fix or unset it") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"env {self.env}={raw!r}: choose from {', '.join(map(str, self.choices))}")
        return value


@dataclasses.dataclass(frozen=True)
class FromArg:
    """A field read from an argument declared elsewhere (kserve's parser, or another field's flag)."""

    arg: str
    convert: Callable | None  # (value, args) -> the field's value


def _convert_for(default) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return strtobool
    if isinstance(default, (int, float)):
        return type(default)
    return str


def setting(default, help: str, *, tasks: frozenset = ALL_TASKS, type: Callable | None = None,
            choices=None, flag: str | None = None, chart: str | None = None, after: Callable | None = None):
    """A field that is also ``--flag`` (the field's name unless ``flag``) and env ``FLAG``.

    ``type`` converts a flag or variable's text (default: from the default's type; bools take
    true/false/1/0/yes/no/on/off); ``tasks``: the snapshot tasks it applies to; ``chart``: the values key
    that sets it in charts/snapserve; ``after(value, args)`` resolves the parsed value (e.g. ``auto``).
    """
    spec = {"default": default, "help": help, "tasks": frozenset(tasks), "type": type or _convert_for(default),
            "choices": tuple(choices) if choices is not None else None, "flag": flag, "chart": chart,
            "after": after}
    if isinstance(default, (list, dict, set)):
        raise TypeError("a setting's default must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata={KEY: spec})


def kserve(arg: str, default, convert: Callable | None = None):
    """A field read from kserve's own flag ``arg`` (never redeclared here); ``convert(value, args)``."""
    return dataclasses.field(default=default, metadata={KEY: FromArg(arg, convert)})


def same_as(arg: str, default):
    """A field of a nested group that reads a flag declared by another field (e.g. --max_body_bytes)."""
    return dataclasses.field(default=default, metadata={KEY: FromArg(arg, None)})


def group(cls):
    """A nested settings dataclass whose own fields are declared the same way."""
    return dataclasses.field(default_factory=cls, metadata={KEY: cls})


def _entries(cls):
    for f in dataclasses.fields(cls):
        yield f, f.metadata.get(KEY)


def flags(cls) -> list[Flag]:
    """Every flag ``cls`` declares, nested groups included, in declaration order."""
    out: list[Flag] = []
    for f, spec in _entries(cls):
        if isinstance(spec, dict):
            out.append(Flag(name=spec["flag"] or f.name, field=f.name, default=spec["default"], help=spec["help"],
                            convert=spec["type"], choices=spec["choices"], tasks=spec["tasks"],
                            chart=spec["chart"], after=spec["after"]))
        elif isinstance(spec, type):
            out.extend(flags(spec))
    names = [fl.name for fl in out]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise TypeError(f"{cls.__name__} declares {sorted(duplicated)} more than once")
    return out


def shown(value) -> str:
    """A default as a user would type it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    return str(value)


def tasks_text(tasks: frozenset) -> str:
    if tasks == ALL_TASKS:
        return "all"
    if tasks == ENCODER:
        return "encoders"
    return ", ".join(sorted(tasks))


def add_flag(group_, flag: Flag) -> None:
    applies = "" if flag.tasks == ALL_TASKS else f"; {tasks_text(flag.tasks)} only"
    default = shown(flag.default)
    group_.add_argument(f"--{flag.name}", dest=flag.name, default=UNSET, type=flag.convert, choices=flag.choices,
                        metavar=None if flag.choices else flag.name.upper(),
                        help=f"{flag.help.replace('%', '%%')} [env {flag.env}; default {default if default else repr(default)}{applies}]")


def parser(cls, component: str, description: str) -> argparse.ArgumentParser:
    """kserve's parser (the parent) extended with one argument per flag ``cls`` declares."""
    from snapserve.http import kserve_compat

    p = argparse.ArgumentParser(prog=f"python -m {component}", parents=[kserve_compat.kserve_parser()],
                                description=description)
    taken = {a.dest for a in p._actions}
    g = p.add_argument_group(f"snapserve {component}",
                             "each flag is also an environment variable, the flag's name in upper case; "
                             "an explicit flag wins over the variable, the variable over the default")
    for flag in flags(cls):
        if flag.name in taken:
            raise TypeError(f"--{flag.name} is kserve's flag: declare the field with kserve({flag.name!r}, ...)")
        add_flag(g, flag)
    return p


def resolve(args: argparse.Namespace, cls, environ=os.environ) -> set[str]:
    """Fill each of our flags' value in ``args`` (flag, else env, else default); returns the names set
    explicitly (on the command line or by a non-empty variable)."""
    explicit = set()
    for flag in flags(cls):
        value = getattr(args, flag.name, UNSET)
        if value is UNSET:
            value = flag.from_env(environ)
        if value is UNSET:
            value = flag.default
        else:
            explicit.add(flag.name)
        setattr(args, flag.name, value)
    return explicit


def build(cls, args: argparse.Namespace):
    """``cls`` from resolved arguments: no hand-written field list."""
    values = {}
    for f, spec in _entries(cls):
        if isinstance(spec, dict):
            value = getattr(args, spec["flag"] or f.name)
            values[f.name] = spec["after"](value, args) if spec["after"] else value
        elif isinstance(spec, FromArg):
            value = getattr(args, spec.arg)
            values[f.name] = spec.convert(value, args) if spec.convert else value
        elif isinstance(spec, type):
            values[f.name] = build(spec, args)
    return cls(**values)


def from_attrs(cls, obj):
    """``cls`` from any object carrying the flags' names as attributes; a missing or empty one: the default."""
    values = {}
    for f, spec in _entries(cls):
        name = spec.arg if isinstance(spec, FromArg) else (spec.get("flag") or f.name) if isinstance(spec, dict) else None
        if name is None:
            continue
        value = getattr(obj, name, None)
        if value in (None, ""):
            continue
        values[f.name] = type(f.default)(value) if isinstance(f.default, (int, float, str)) and not isinstance(
            f.default, bool) else value
    return cls(**values)


def load(cls, p: argparse.ArgumentParser, argv: list[str] | None = None, environ=os.environ):
    """Parse ``argv`` with ``p`` and build ``cls``; returns (settings, names set explicitly)."""
    args = p.parse_args(argv)
    explicit = resolve(args, cls, environ)
    return build(cls, args), explicit


def refuse_inapplicable(cls, explicit: set[str], task: str | None, model_dir) -> None:
    """ValueError when a flag set explicitly does not apply to the snapshot's task (None: unknown)."""
    if task is None:
        return
    wrong = [f for f in flags(cls) if f.name in explicit and task not in f.tasks]
    if wrong:
        names = ", ".join(f"--{f.name} (env {f.env}: {tasks_text(f.tasks)} only)" for f in wrong)
        raise ValueError(f"the snapshot in {model_dir} is for the {task} task; these settings do not apply to it: {names}. "
                         "Remove them from the command line and the environment (for the chart: from extraArgs/env)")


def snapshot_task(model_dir, task: str = "auto") -> str | None:
    """The snapshot's task, or None when it cannot be read here (the server reports that itself)."""
    try:
        return metadata.read(model_dir, task).task
    except (OSError, ValueError, metadata.SnapshotInvalid):
        return None


SECRET_WORDS = {"key", "token", "password", "secret"}


def describe(settings) -> dict:
    """The effective settings as a dict safe to log once at start (secret-looking values hidden)."""
    values = {k: str(v) for k, v in dataclasses.asdict(settings).items()}
    return {k: ("***" if SECRET_WORDS & set(k.split("_")) and v else v) for k, v in values.items()}


def shared(component: str):
    """The settings both servers declare, with this server's defaults (a base class for its Settings)."""
    return _SHARED[component]


def _path(value: str, args) -> Path:
    return Path(value)


def _shared(component: str):
    @dataclasses.dataclass(frozen=True)
    class Shared:
        model_name: str = kserve("model_name", "model")
        http_port: int = kserve("http_port", 8080)
        grpc_port: int = kserve("grpc_port", 8081)
        workers: int = kserve("workers", 1)
        model_dir: Path = setting("/mnt/models", "Hugging Face snapshot folder (offline)", after=_path)  # noqa: RUF009
        max_length: int = setting(0, "truncate texts to this many tokens (0: the model's maximum)",
                                  chart=f"{component}.maxLength")
        grace_period: int = setting(30, "seconds to finish in-flight work after SIGTERM",
                                    chart=f"{component}.drainSeconds")
        max_body_bytes: int = setting(MAX_BODY_BYTES[component], "largest request body (more: 413)",
                                      chart="transformer.limits.maxBodyBytes" if component == "transformer" else None)
        # One access line per client request at the transformer (the predictor's callers are transformers,
        # whose lines already name the request); probes and scrapes are not logged; kserve's per-request
        # trace lines (kserve.trace) are off.
        # (not --access_log: kserve's parser, which reads argv at import, would take it for --access_log_format)
        log_access: bool = setting(component == "transformer", "one log line per request",
                                   chart=f"{component}.logging.accessLog")
        log_probes: bool = setting(False, "also log health probes and metric scrapes",
                                   chart=f"{component}.logging.logProbes")
        trace_logging: bool = setting(False, "kserve's own per-request timing lines (kserve.trace)",
                                      chart=f"{component}.logging.traceLogging")
        request_timeout_ms: float = setting(
            REQUEST_TIMEOUT_MS[component], "longest a request may take here (504 past it; a shorter deadline than "
            "the queue's estimated wait gets 429 at once); a client's x-request-timeout-ms / request-timeout may "
            "ask for less. Keep it under the route's timeout",
            chart="transformer.timeouts.requestMs" if component == "transformer" else None)
        client_timeout_s: float = setting(
            15.0, "a request's headers and body must arrive within this many seconds of its first byte (or of the "
            "connection opening), else 408 and the connection closes (slow or stalled clients); 0: no limit. Idle "
            "keep-alive connections close after --timeout-keep-alive", type=non_negative,
            chart="transformer.timeouts.clientSeconds" if component == "transformer" else None)
        drop_abandoned: bool = setting(
            True, "drop the queued work of a client that hung up or whose deadline passed, and refuse at once what "
            "the queue cannot serve within the deadline (false: compute everything accepted to the end and ignore "
            "clients' deadlines, as servers usually do; for comparisons)")

    Shared.__name__ = Shared.__qualname__ = f"{component.capitalize()}Shared"
    return Shared


_SHARED = {component: _shared(component) for component in ("predictor", "transformer")}
