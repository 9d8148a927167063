"""Every bench module imports (a bench script that nothing runs in CI must not rot silently), and
the package has no import circle, not even through TYPE_CHECKING or deferred imports."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import bench
import pytest

MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


def test_the_bench_package_has_modules() -> None:
    assert {"run", "native_micro", "loadgen"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")


def _bench_imports(name: str) -> set[str]:
    """Every bench module ``name`` imports, deferred and TYPE_CHECKING imports included."""
    path = Path(bench.__path__[0]) / f"{name}.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "bench":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
            found.add((node.module or "").split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bench.")}
    return found & set(MODULES) - {name}


def test_the_bench_package_has_no_import_circle() -> None:
    graph = {m: _bench_imports(m) for m in MODULES}
    assert "report" in graph["run"]  # the checker sees edges

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph[a])

    assert sorted(m for m in MODULES if reaches(m, m, {m})) == []
