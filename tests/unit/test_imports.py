"""The import contract: predictor -> snapserve <- transformer; tools -> predictor, snapserve, transformer; loadtest
imports none of them; no import cycle between modules, inside a package or across (lazy imports too);
predictor's two tasks (encoder/, generate/) never import each other.

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
    "predictor": {"transformer", "loadtest", "tools"},
    "loadtest": {"snapserve", "predictor", "transformer", "tools"},
    "tools": {"loadtest"},  # tools/render_flags.py reads both servers' settings declarations (README's flag tables)
}
# sub-package -> sub-packages it must never import (two products over one core)
FORBIDDEN_INSIDE = {
    "predictor/encoder": {"predictor.generate"},
    "predictor/generate": {"predictor.encoder"},
    "transformer/chat": {"transformer.pipeline", "transformer.model", "transformer.routes"},
    "transformer/routes": {"transformer.chat.model"},
    "snapserve/scheduling": {"snapserve.http"},
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


def modules_imported(path: Path) -> set[str]:
    """Every module ``path`` imports, dotted (``from a.b import c`` counts a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_graph() -> dict[str, set[str]]:
    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
             for package in FORBIDDEN for f in (ROOT / package).rglob("*.py")}
    return {name: {m for m in modules_imported(f) if m in files and m != name} for name, f in files.items()}


def test_no_import_cycles_between_modules():
    graph, cycles = module_graph(), []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN_INSIDE))
def test_sub_packages_keep_to_their_side(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(m for m in modules_imported(f)
                                            if any(m == x or m.startswith(x + ".") for x in FORBIDDEN_INSIDE[package]))
           for f in files}
    assert {f: names for f, names in bad.items() if names} == {}


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
    assert "tools/" not in " ".join(copies)
    assert {"snapserve/", "transformer/"} <= set(copies)


def test_tools_never_reach_the_serving_images():
    """The exporters and benches run at build time only (the predictor's snapshot stage), never in a pod."""
    for image in ("predictor", "transformer"):
        lines = (ROOT / image / "Dockerfile").read_text().split("\nFROM ")
        final = lines[-1]  # the serving stage
        assert "tools/" not in final, f"{image}/Dockerfile's serving stage copies tools/"
