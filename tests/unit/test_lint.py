"""ruff over the whole tree, so `bash ci/test.sh` gates on what the lint job checks in Python."""

from __future__ import annotations

import subprocess
import sys

from tests import procs


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=procs.ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
