"""README's generated sections: the text between a pair of marker lines, rewritten by a generator
(``tools.readme_toc``, ``tools.render_flags``) or checked for drift (``--check``, as CI's tests do)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def replace(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with what lies between the one ``begin`` and the one ``end`` marker replaced by ``body``."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"README needs one {begin} line and one {end} line after it: put them where the section goes")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"


def main(prog: str, what: str, render: Callable[[str], str], argv: list[str] | None = None) -> int:
    """The generator's command line: rewrite ``what`` in README, or ``--check`` that it is current."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=f"README's {what}, generated")
    p.add_argument("--check", action="store_true", help=f"exit 1 when the {what} in README are stale")
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    if args.check:
        if render(text) != text:
            print(f"{prog}: the {what} in {args.readme} are stale; run python -m {prog}", file=sys.stderr)
            return 1
        return 0
    current = args.readme.read_text(encoding="utf-8")  # re-read: only the markers' text changes
    new = render(current)
    if new != current:
        args.readme.write_text(new, encoding="utf-8")
        print(f"{prog}: wrote the {what} in {args.readme}")
    return 0
