"""The shell commands of a README section, as a user would copy them: so tests run what it documents."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    """The text of ``## title`` up to the next level-2 heading."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README.read_text(), re.M | re.S)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def commands(title: str, start: str) -> list[str]:
    """Each command in the section's ```sh blocks that begins with ``start``, continuation lines joined
    and trailing comments dropped."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", section(title), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith(start):
                found.append(" ".join(line.split()))
    return found


def helm_template_argv(command: str, helm: str, env: dict[str, str]) -> list[str]:
    """A documented ``helm install NAME CHART ...`` as ``helm template`` argv, $VARIABLES expanded from ``env``."""
    expanded = re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env[m.group(1) or m.group(2)], command)
    argv = shlex.split(expanded)
    assert argv[:2] == ["helm", "install"], command
    return [helm, "template", *[a for a in argv[2:] if a != "--create-namespace"]]
