"""``/metrics``: gather every registered plugin's collector, plus the process collector.

Each plugin names its counters and renders its own families (``Plugin.collector``); this module
only asks them, in plugin.cfg order, at scrape time.
"""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector

from nodelocaldns.core.plugin import Host, registered

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Gather:
    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self) -> list[Metric]:
        fams: list[Metric] = []
        for p in registered():
            if p.collector is not None:
                fams.extend(p.collector(self.host))
        fams.extend(self.host.extra_metrics())
        return fams


_registries: weakref.WeakKeyDictionary[Any, CollectorRegistry] = weakref.WeakKeyDictionary()


def registry_for(host: Host) -> CollectorRegistry:
    reg = _registries.get(host)
    if reg is None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Gather(host))
        ProcessCollector(registry=reg)
        _registries[host] = reg
    return reg


async def render_metrics(host: Host) -> tuple[int, str, bytes]:
    return 200, CONTENT_TYPE, generate_latest(registry_for(host))
