"""The README for users: its table of contents matches its headings, the two set-up commands stay two,
the sections keep the house order, and every in-repo link and anchor resolves."""

from __future__ import annotations

import re
from pathlib import Path

from tools import readme_toc

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def test_table_of_contents_matches_the_headings():
    assert readme_toc.render(README) == README, "stale table of contents: run python -m tools.readme_toc"


def test_toc_anchors_follow_github():
    text = "# T\n<!-- toc:begin -->\n<!-- toc:end -->\n## Run it `locally`\n```sh\n## not a heading\n```\n" \
           "### A, b (c)\n## Run it locally\n"
    assert readme_toc.toc(text) == ("- [Run it locally](#run-it-locally)\n  - [A, b (c)](#a-b-c)\n"
                                    "- [Run it locally](#run-it-locally-1)")


def test_exactly_two_setup_commands_for_a_fresh_box():
    blocks = [re.findall(r"```sh\n(.*?)```", section(README, t), re.S) for t in ("Run it locally", "Test")]
    assert [b[0].strip() for b in blocks] == ["bash ci/run-local.sh", "bash ci/test.sh"]


def test_sections_keep_the_house_order():
    order = ["Run it locally", "Test", "Deploy with Helm", "Call it", "API", "Operations", "Configuration", "Layout"]
    found = [title for level, title in readme_toc.headings(README) if level == 2 and title in order]
    assert found == order


def test_links_and_anchors_resolve():
    own = set(readme_toc.anchors(README))
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        doc = ROOT / path if path else ROOT / "README.md"
        assert doc.is_file(), f"README links to {path}, which does not exist"
        if anchor:
            anchors = own if not path else set(readme_toc.anchors(doc.read_text()))
            assert anchor in anchors, f"README links to {target}: no such heading"
