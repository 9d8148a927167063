"""node-cache's own metrics registry: ``coredns_nodecache_setup_errors_total{errortype}``.

node-cache serves it on ``-metrics-listen-address`` (default ``0.0.0.0:9353``), apart from the
CoreDNS ``prometheus`` plugin's :9253. Every label value starts at 0 so rate() and alerts work
before the first error. It is served by the server's own HTTP listener (``server/httpd.py``):
GET /metrics only, text format 0.0.4 (what node-cache's Go client serves and every scraper parses).
"""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from nodelocaldns.core.hostport import listen_address
from nodelocaldns.errors import ConfigError, SetupError
from nodelocaldns.metrics.catalog import BY_NAME, SETUP_ERROR_TYPES
from nodelocaldns.server.httpd import HTTPServer

SETUP_ERRORS = "coredns_nodecache_setup_errors_total"


class SetupMetrics:
    """The setup-error counter in a registry of its own (no process/GC collectors, no _created)."""

    def __init__(self) -> None:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        family = BY_NAME[SETUP_ERRORS]
        self._errors = Counter(
            SETUP_ERRORS.removesuffix("_total"), family.help, family.labels, registry=self.registry
        )
        for kind in SETUP_ERROR_TYPES:
            self._errors.labels(kind)

    def inc(self, kind: str) -> None:
        if kind not in SETUP_ERROR_TYPES:
            raise ValueError(f"unknown setup error type {kind!r}")
        self._errors.labels(kind).inc()

    def count(self, err: SetupError) -> bool:
        """Count ``err`` under its kind if that is one of node-cache's labels; say whether it was."""
        if err.kind not in SETUP_ERROR_TYPES:
            return False
        self.inc(err.kind)
        return True

    def value(self, kind: str) -> float:
        v = self.registry.get_sample_value(SETUP_ERRORS, {"errortype": kind})
        return float(v or 0.0)

    def collect(self) -> list[Any]:
        """The families, for the prometheus plugin's listener too (one registry in node-cache)."""
        return list(self.registry.collect())

    def render(self) -> bytes:
        return generate_latest(self.registry)


def parse_listen_address(addr: str) -> tuple[str | None, int]:
    """Go-style ``host:port`` -> (host or None for "all addresses", port).

    See ``values.hostport.listen_address``.
    """
    try:
        return listen_address(addr)
    except ValueError as exc:
        raise ConfigError(f"invalid metrics listen address {addr!r}: {exc}") from exc


async def serve_setup_metrics(addr: str, metrics: SetupMetrics) -> HTTPServer:
    """Listen on ``addr`` and serve ``/metrics``. Raises ``OSError`` if the address cannot be bound
    (node-cache then logs and runs without these metrics; the caller decides)."""
    host, port = parse_listen_address(addr)

    async def route() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_PLAIN_0_0_4, metrics.render()

    server = HTTPServer(host or "", port)
    server.routes["/metrics"] = route
    await server.start()
    return server
