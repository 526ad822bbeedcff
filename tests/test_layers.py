"""The package's structure: layers that import only downward, and no import cycle."""

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

PKG = ROOT / "capq_lib"


def module_imports() -> dict[str, set[str]]:
    """capq_lib module -> the capq_lib modules it imports (anywhere in its body)."""
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PKG.rglob("*.py")}
    out = {}
    for mod, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "capq_lib"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in names else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("capq_lib")}
        out[mod] = {m for m in found if m in names and m != mod}
    return out


def test_import_linter_layers_contract_holds():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_no_import_cycle_among_modules():
    graph = module_imports()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if n.endswith("__init__") or n in ("capq_lib",):
                continue
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_import_inside_a_function():
    """Imports are at the top of each module, where the layers contract sees them."""
    found = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found += [f"{p.relative_to(ROOT)}:{sub.lineno}" for sub in ast.walk(node)
                          if isinstance(sub, ast.Import | ast.ImportFrom)]
    assert not found, found
