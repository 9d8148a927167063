"""The forward end-to-end tests' shared pieces: cluster zones, a served Corefile with its readiness-probe block, metric scrapes."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from support.server import Served
from support.server import serve as _serve

BIG = [f'big.cluster.local. 30 IN TXT "{i:03d}{"y" * 100}"' for i in range(40)]


ZONES: dict[str, list[str]] = {
    "cluster.local.": [
        "web.default.svc.cluster.local. 30 IN A 198.18.1.1",
        "api.default.svc.cluster.local. 30 IN A 198.18.1.3",
        *BIG,
    ],
    "18.198.in-addr.arpa.": ["1.1.18.198.in-addr.arpa. 30 IN PTR web.default.svc.cluster.local."],
}


# support.server.serve waits for an answer to "probe.invalid."; this block answers it at once so
# the probe never reaches (and never occupies) a slow or dead upstream.
PROBE_BLOCK = "invalid:{PORT} {\n    bind 127.0.0.1\n}\n"


@contextlib.contextmanager
def serve(text: str) -> Iterator[Served]:
    """support.server.serve with a local zone that answers its readiness probe."""
    with _serve(text + PROBE_BLOCK) as s:
        yield s


def block(zone: str, forward: str, extra: str = "") -> str:
    return f"{zone}:{{PORT}} {{\n    bind 127.0.0.1\n    {extra}\n    forward {forward}\n}}\n"


def http_get(port: int, path: str) -> str:
    """GET with a short retry: the HTTP endpoints may come up a moment after the DNS listener."""
    deadline = time.monotonic() + 3
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return str(r.read().decode())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = http_get(port, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def metric(port: int, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in scrape(port).items() if n == name and set(labels.items()) <= set(ls))


def wait_metric(port: int, name: str, at_least: float, timeout: float = 5.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while (v := metric(port, name, **labels)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return v
