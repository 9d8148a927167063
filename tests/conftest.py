"""Suite-wide fixtures: real upstream servers (support.fixtures) and the root-test gate."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["support.fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, netfilter)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
