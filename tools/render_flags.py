"""README's flag tables, generated from the settings declarations (``snapserve.settings.setting``).

    python -m tools.render_flags          # rewrite the tables between the flags markers of README.md
    python -m tools.render_flags --check  # exit 1 when they are stale (tests/unit/test_settings.py runs this)

Only the text between ``<!-- flags:begin -->`` and ``<!-- flags:end -->`` is replaced; the rest of README
is left as it is on disk.
"""

from __future__ import annotations

import sys

from tools import readme_section

README = readme_section.README
BEGIN, END = "<!-- flags:begin -->", "<!-- flags:end -->"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(title: str, note: str, cls) -> str:
    from snapserve import settings as S

    rows = [f"**{title}** ({note})", "", "| flag | env | default | applies to | help |", "|---|---|---|---|---|"]
    for f in S.flags(cls):
        default = S.shown(f.default)
        choices = f" (one of {', '.join(map(str, f.choices))})" if f.choices else ""
        rows.append(f"| `--{f.name}` | `{f.env}` | {f'`{default}`' if default else '(empty)'} | "
                    f"{S.tasks_text(f.tasks)} | {cell(f.help + choices)} |")
    return "\n".join(rows)


def tables() -> str:
    from predictor import config as pconfig
    from transformer import config as tconfig

    return "\n\n".join([
        table("Predictor", "`python -m predictor`, beside kserve's own flags", pconfig.Settings),
        table("Transformer", "`python -m transformer`, beside kserve's own flags, of which it reads `--predictor_host`, "
              "`--predictor_protocol v2|grpc-v2`, `--predictor_request_timeout_seconds`, `--predictor_use_ssl`",
              tconfig.Settings),
    ])


def render(text: str) -> str:
    """``text`` with the tables between the flags markers regenerated."""
    return readme_section.replace(text, BEGIN, END, tables())


def main(argv: list[str] | None = None) -> int:
    return readme_section.main("tools.render_flags", "flag tables", render, argv)


if __name__ == "__main__":
    sys.exit(main())
