"""The prometheus plugin at runtime: serve ``/metrics`` on its address."""

from __future__ import annotations

from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Route, Runtime
from nodelocaldns.metrics.exposition import render_metrics
from nodelocaldns.plugins.prometheus.plugin import PrometheusConfig


class PrometheusRuntime(Runtime):
    def __init__(self, host: Host, cfg: PrometheusConfig) -> None:
        async def metrics() -> tuple[int, str, bytes]:
            return await render_metrics(host)

        self.routes = (Route(cfg.addr, 9153, "/metrics", metrics),)
        self.counts_requests = True


def factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return PrometheusRuntime(host, cfgs[0])
