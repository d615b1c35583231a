"""How every child is launched: tied to the stack's life, and without root where it needs none."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

UNPRIVILEGED_USER = "nobody"


def is_root() -> bool:
    return os.geteuid() == 0


def launch(argv: list[str], *, unprivileged: bool = False) -> list[str]:
    """Prefix `argv` with setpriv: the child gets SIGTERM if the stack dies (even by SIGKILL), so no
    process outlives it; with `unprivileged`, a root stack runs the child as `nobody`."""
    prefix = ["setpriv", "--pdeathsig", "TERM"]
    if unprivileged and is_root():
        prefix += ["--reuid", UNPRIVILEGED_USER, "--regid", "nogroup", "--clear-groups"]
    return [*prefix, "--", *argv]


def hand_over(path: Path) -> None:
    """Give a folder the stack created to the unprivileged user (no-op when not root)."""
    if not is_root():
        return
    pw = pwd.getpwnam(UNPRIVILEGED_USER)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def check_reachable(path: Path) -> None:
    """nobody must be able to reach `path`: every ancestor needs o+x (a 0700 parent is the usual trap)."""
    if not is_root():
        return
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise RuntimeError(
                f"{parent} is not searchable by {UNPRIVILEGED_USER}, who runs nginx and Prometheus; "
                "choose a --workdir under /tmp or chmod o+x that folder"
            )
