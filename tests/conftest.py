"""Suite-wide fixtures: real upstream servers (support.fixtures), the root-test gate, and the split
of the suite into a parallel pass and a serial pass (``make unit``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["support.fixtures"]

# Test files that may share the machine with other tests: ``make unit`` runs them under pytest-xdist.
# Everything else -- any file not listed, so a new one too, and any test marked slow or serial -- runs
# in the serial pass, alone: it measures time or rates, floods, or holds a machine-wide resource.
PARALLEL_LIST = Path(__file__).with_name("parallel-safe.txt")


def _parallel_files() -> frozenset[str]:
    lines = (line.split("#", 1)[0].strip() for line in PARALLEL_LIST.read_text().splitlines())
    return frozenset(line for line in lines if line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    parallel = _parallel_files()
    root = Path(config.rootpath)
    serial = pytest.mark.serial
    for item in items:
        rel = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else str(item.path)
        if rel not in parallel or any(m in item.keywords for m in ("slow", "serial")):
            item.add_marker(serial)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, netfilter)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
