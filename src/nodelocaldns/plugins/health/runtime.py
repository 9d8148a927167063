"""The health plugin at runtime: ``/health`` is 200 OK while the process runs; lameduck delays exit.

As CoreDNS (plugin/health/overloaded.go), the runtime polls its own ``/health`` once a second
(3 s timeout) and records how long that took: a slow local poll means an overloaded process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from nodelocaldns.core.hostport import split_hostport
from nodelocaldns.core.plugin import BlockInfo, Host, Route, Runtime
from nodelocaldns.plugins.health.metrics import STATS
from nodelocaldns.plugins.health.plugin import HealthConfig

log = logging.getLogger("nodelocaldns.health")

POLL_EVERY = 1.0
POLL_TIMEOUT = 3.0
SLOW = 1.0  # CoreDNS: "1s is pretty random, but a *local* scrape taking that long isn't good"


async def _ok() -> tuple[int, str, bytes]:
    return 200, "text/plain; charset=utf-8", b"OK"


async def _get(host: str, port: int) -> None:
    """GET /health; raises OSError (or TimeoutError) when it cannot be read."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = await reader.readline()
        if not status.startswith(b"HTTP/1."):
            raise OSError(f"bad status line {status[:40]!r}")
        await reader.read()
    finally:
        writer.close()


class HealthRuntime(Runtime):
    def __init__(self, cfg: HealthConfig) -> None:
        self.cfg = cfg
        self.routes = (Route(cfg.addr, 8080, "/health", _ok),)
        self.lameduck = cfg.lameduck
        self.closed = False

    def start(self, host: Host) -> None:
        h, port = split_hostport(self.cfg.addr, 8080)
        # An empty host is every address: CoreDNS polls "localhost" then.
        host.spawn(self._poll(h or "localhost", port, host))

    async def _poll(self, h: str, port: int, host: Host) -> None:
        uri = f"http://{h}:{port}/health"
        while not self.closed and not host.stopping:
            await asyncio.sleep(POLL_EVERY)
            if self.closed or host.stopping:
                return
            start = time.perf_counter()  # a latency, not a TTL: wall time is what is measured
            try:
                await asyncio.wait_for(_get(h, port), POLL_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                STATS.observe(time.perf_counter() - start)
                STATS.failures += 1
                log.warning(
                    "[WARNING] plugin/health: Local health request to %r failed: %s", uri, exc or "timeout"
                )
                continue
            elapsed = time.perf_counter() - start
            STATS.observe(elapsed)
            if elapsed > SLOW:
                log.warning(
                    "[WARNING] plugin/health: Local health request to %r took more than 1s: %.6fs",
                    uri,
                    elapsed,
                )

    def close(self) -> None:
        self.closed = True


def factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return HealthRuntime(cfgs[0])
