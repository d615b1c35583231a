"""Chat messages -> the prompt the model was trained on, with the snapshot's own chat template.

The template comes from ``chat_template.jinja`` or ``tokenizer_config.json`` (``chat_template``, a
string or a list of named templates), and is rendered as transformers' ``apply_chat_template``
does: a sandboxed Jinja2 environment (``ImmutableSandboxedEnvironment``: a template cannot reach
Python internals or mutate its inputs), ``trim_blocks`` / ``lstrip_blocks``, ``loopcontrols``, the
``tojson`` filter, ``raise_exception`` and ``strftime_now``, with the snapshot's special tokens.
The rendered prompt is tokenised without adding special tokens (the template already did).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from snapserve.errors import ServingError
from snapserve.metadata import read_json

ROLES = ("system", "user", "assistant", "tool", "developer")
SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def template_source(model_dir: Path) -> str | None:
    jinja = Path(model_dir) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    value = read_json(Path(model_dir) / "tokenizer_config.json").get("chat_template")
    if isinstance(value, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    return value if isinstance(value, str) and value else None


def special_tokens(model_dir: Path) -> dict[str, str]:
    config = read_json(Path(model_dir) / "tokenizer_config.json")
    tokens = {}
    for name in SPECIAL:
        value = config.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            tokens[name] = value
    return tokens


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    def __init__(self, source: str, tokens: dict[str, str]):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        self.template = env.from_string(source)
        self.tokens = tokens

    @classmethod
    def load(cls, model_dir: Path) -> ChatTemplate | None:
        source = template_source(model_dir)
        return cls(source, special_tokens(model_dir)) if source else None

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        tools=None, documents=None, **self.tokens)
        except jinja2.exceptions.TemplateError as exc:  # the template refused these messages
            raise ServingError("validation", f"the model's chat template refused the messages: {exc}") from None


def messages_of(value) -> list[dict]:
    """OpenAI chat messages, checked: a non-empty list of {role, content}; content a string or a
    list of text parts (joined)."""
    if not isinstance(value, list) or not value:
        raise ServingError("validation", "'messages' must be a non-empty list of {role, content} objects")
    checked = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ServingError("validation", f"messages[{i}] must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise ServingError("validation", f"messages[{i}].role must be one of {', '.join(ROLES)} (got {role!r})")
        checked.append({"role": role, "content": _content(message.get("content"), i)})
    return checked


def _content(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ServingError("validation", f"messages[{i}].content parts must be {{type: text, text: string}}; "
                                   "this model takes text only")
            texts.append(part["text"])
        return "".join(texts)
    raise ServingError("validation", f"messages[{i}].content must be a string or a list of text parts")
