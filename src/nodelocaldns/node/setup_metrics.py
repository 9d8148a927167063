"""node-cache's own metrics registry: ``coredns_nodecache_setup_errors_total{errortype}``.

node-cache serves it on ``-metrics-listen-address`` (default ``0.0.0.0:9353``), apart from the
CoreDNS ``prometheus`` plugin's :9253. Every label value starts at 0 so rate() and alerts work
before the first error. The HTTP side is a deliberately tiny asyncio server: GET /metrics only,
answered as text format 0.0.4 (what node-cache's Go client serves and every scraper parses).
"""

from __future__ import annotations

import asyncio
import contextlib

import prometheus_client
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from nodelocaldns.errors import ConfigError, SetupError
from nodelocaldns.metrics.catalog import BY_NAME, SETUP_ERROR_TYPES

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

    def render(self) -> bytes:
        return generate_latest(self.registry)


def parse_listen_address(addr: str) -> tuple[str | None, int]:
    """Go-style ``host:port`` -> (host or None for "all addresses", port).

    Accepts ``0.0.0.0:9353``, ``[::]:9353``, ``:9353``, ``localhost:9353``. Go's ``[::]`` listener is
    dual-stack while asyncio sets IPV6_V6ONLY, so ``::`` maps to "all addresses" like an empty host.
    """
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"invalid metrics listen address {addr!r}: want host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"invalid metrics listen address {addr!r}: IPv6 hosts need [brackets]")
    return (None if host in ("", "::") else host), int(port_text)


_MAX_REQUEST = 8192


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, metrics: SetupMetrics) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"method not allowed\n", "text/plain"
        elif path != "/metrics":
            status, body, ctype = "404 Not Found", b"404 page not found\n", "text/plain"
        else:
            status, body, ctype = "200 OK", metrics.render(), CONTENT_TYPE_PLAIN_0_0_4
        headers = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(headers.encode("latin-1") + (b"" if method == "HEAD" else body))
        await writer.drain()
    except (
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        TimeoutError,
        ValueError,
        ConnectionError,
    ):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve_setup_metrics(addr: str, metrics: SetupMetrics) -> asyncio.Server:
    """Listen on ``addr`` and serve ``/metrics``. Raises ``OSError`` if the address cannot be bound
    (node-cache then logs and runs without these metrics; the caller decides)."""
    host, port = parse_listen_address(addr)
    return await asyncio.start_server(
        lambda r, w: _handle(r, w, metrics), host=host, port=port, limit=_MAX_REQUEST, reuse_address=True
    )
