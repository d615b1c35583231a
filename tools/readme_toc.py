"""The README's table of contents, generated from its ``##`` and ``###`` headings.

    python -m tools.readme_toc          # rewrite the list between the toc markers of README.md
    python -m tools.readme_toc --check  # exit 1 when it is stale (tests/unit/test_readme.py runs this)

Anchors are GitHub's: lower case, punctuation other than ``-`` and ``_`` dropped, spaces as ``-``,
a repeated heading suffixed ``-1``, ``-2``. Headings inside fenced code blocks are not headings.
"""

from __future__ import annotations

import re
import sys

from tools import readme_section

README = readme_section.README
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
    return readme_section.replace(text, BEGIN, END, toc(text))


def main(argv: list[str] | None = None) -> int:
    return readme_section.main("tools.readme_toc", "table of contents", render, argv)


if __name__ == "__main__":
    sys.exit(main())
