"""Every bench module imports: a bench script that nothing runs in CI must not rot silently."""

from __future__ import annotations

import importlib
import pkgutil

import bench
import pytest

MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


def test_the_bench_package_has_modules() -> None:
    assert {"run", "native_micro", "loadgen"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
