"""The import contract: predictor -> snapserve <- transformer; loadtest imports none of the three.

Read from the source with ``ast`` (every import statement, also those inside functions), so a
forbidden import fails here even on a code path no other test runs; and in a fresh interpreter,
importing the transformer must load neither torch nor the predictor.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> top-level modules it must never import
FORBIDDEN = {
    "snapserve": {"predictor", "transformer", "loadtest", "torch", "transformers"},
    "transformer": {"predictor", "torch", "transformers", "loadtest"},
    "predictor": {"transformer", "loadtest"},
    "loadtest": {"snapserve", "predictor", "transformer"},
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_contract_allows(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    broken = {str(f.relative_to(ROOT)): sorted(imported(f) & FORBIDDEN[package]) for f in files}
    assert {f: names for f, names in broken.items() if names} == {}


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import torch.nn\n    from predictor.encoder.engine import load\n")
    assert imported(module) == {"torch", "predictor"}


def test_importing_the_transformer_loads_neither_torch_nor_the_predictor():
    code = ("import sys, transformer.__main__, transformer.model, transformer.routes.openai, transformer.guard;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'predictor', 'transformers'));"
            "print(','.join(bad))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""


def test_transformer_image_copies_only_the_core_and_itself():
    copies = [line.split()[1] for line in (ROOT / "transformer/Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and "--from" not in line]
    assert "predictor/" not in " ".join(copies)
    assert {"snapserve/", "transformer/"} <= set(copies)
