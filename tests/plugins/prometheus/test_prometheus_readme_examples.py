"""Every Corefile in CoreDNS's plugin/metrics/README.md (HEAD) parses, and runs as documented."""

from __future__ import annotations

import urllib.request

import pytest

from support.ports import free_port
from support.readme import localize, plans
from support.server import serve

FIXED = """\
. {
    prometheus localhost:9253
}
"""
FROM_ENV = """\
. {
    prometheus localhost:{$PORT}
}
"""


def test_fixed_address_parses() -> None:
    assert plans(FIXED) == 1


def test_the_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9253")
    assert plans(FROM_ENV) == 1


def test_metrics_are_served(monkeypatch: pytest.MonkeyPatch) -> None:
    p = free_port("tcp")
    monkeypatch.setenv("PORT", str(p))
    with serve(localize(FROM_ENV.replace("localhost", "127.0.0.1"))) as s:
        s.query("example.org.")
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=3) as r:
            text = r.read().decode()
    assert "coredns_build_info{" in text and "coredns_dns_requests_total{" in text
