"""Template rendering: files under templates/, placeholders written @{name} (nginx owns `$`)."""

from __future__ import annotations

import string
from pathlib import Path

TEMPLATES = Path(__file__).with_name("templates")


class _At(string.Template):
    delimiter = "@"


def render(template: str, out: Path, **values: object) -> Path:
    text = _At((TEMPLATES / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    out.write_text(text)
    return out
