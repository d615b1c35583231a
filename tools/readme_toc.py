"""The README's table of contents, generated from its ``##`` and ``###`` headings.

    python -m tools.readme_toc          # rewrite the list between the toc markers of README.md
    python -m tools.readme_toc --check  # exit 1 when it is stale (tests/unit/test_readme.py runs this)

Anchors are GitHub's: lower case, punctuation other than ``-`` and ``_`` dropped, spaces as ``-``,
a repeated heading suffixed ``-1``, ``-2``. Headings inside fenced code blocks are not headings.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- toc:begin -->", "<!-- toc:end -->"
HEADING = re.compile(r"^(#{1,6}) +(.+?) *#* *$")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every heading outside fenced code, in order."""
    found, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            mark = stripped[:3]
            fence = None if fence == mark else (fence or mark)
            continue
        m = None if fence else HEADING.match(line)
        if m:
            found.append((len(m.group(1)), m.group(2)))
    return found


def anchors(text: str) -> list[str]:
    """GitHub's anchor for each heading of ``text``, in order."""
    seen: dict[str, int] = {}
    out = []
    for _, title in headings(text):
        base = re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}-{n}")
    return out


def toc(text: str, levels: tuple[int, ...] = (2, 3)) -> str:
    """The list: one line per ``##`` heading after the markers, its ``###`` headings indented beneath."""
    before = len(headings(text[: text.find(END)])) if END in text else 0  # the title and "Contents" itself
    lines = []
    for (level, title), anchor in list(zip(headings(text), anchors(text), strict=True))[before:]:
        if level in levels:
            lines.append(f"{'  ' * (level - levels[0])}- [{title.replace('`', '')}](#{anchor})")
    return "\n".join(lines)


def render(text: str) -> str:
    """``text`` with the list between the markers regenerated."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN} ... {END} markers: put them where the contents go")
    return text[: start + len(BEGIN)] + "\n" + toc(text) + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.readme_toc", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only say whether the table is current (exit 1 if not)")
    p.add_argument("--readme", type=Path, default=README)
    a = p.parse_args(argv)
    text = a.readme.read_text()
    new = render(text)
    if a.check:
        if new != text:
            print(f"readme_toc: the table of contents of {a.readme} is stale: run python -m tools.readme_toc",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        a.readme.write_text(new)
        print(f"readme_toc: wrote the table of contents of {a.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
