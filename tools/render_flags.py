"""README's flag tables, generated from the settings declarations (``snapserve.settings.setting``).

    python -m tools.render_flags          # rewrite the tables between the flags markers of README.md
    python -m tools.render_flags --check  # exit 1 when they are stale (tests/unit/test_settings.py runs this)

Only the text between ``<!-- flags:begin -->`` and ``<!-- flags:end -->`` is replaced; the rest of README
is left as it is on disk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
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
    """``text`` with the tables between the markers regenerated."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"render_flags: README needs one {BEGIN} line and one {END} line after it")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tables()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.render_flags", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when README's tables are stale")
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"render_flags: the flag tables in {args.readme} are stale; run python -m tools.render_flags",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        # re-read right before writing: README has other editors; only our markers' text changes
        current = args.readme.read_text(encoding="utf-8")
        args.readme.write_text(render(current), encoding="utf-8")
        print(f"render_flags: wrote the flag tables in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
