"""``dns64``: AAAA synthesis from A records for IPv6-only clients (RFC 6147)."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.dns64 import metrics, runtime, setup


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return runtime.DNS64Runtime(cfgs[-1])  # CoreDNS loops over the directives: the last one wins


def collect(host: Host) -> list[Any]:
    fam = metrics.TRANSLATED
    out = CounterMetricFamily(fam.name.removesuffix("_total"), fam.help, labels=list(fam.labels))
    totals: dict[str, float] = {}
    seen: set[int] = set()
    for lst in host.dns_listeners():
        for block in lst.blocks().values():
            for rt in block.runtimes:
                if isinstance(rt, runtime.DNS64Runtime) and id(rt) not in seen:
                    seen.add(id(rt))  # one runtime per block, whatever its listeners and zones
                    for _name, labels, value in rt.counters.samples():
                        totals[labels["server"]] = totals.get(labels["server"], 0.0) + value
    for server, value in sorted(totals.items()):
        out.add_metric([server], value)
    return [out] if totals else []


# Ahead of cache: fast-path safe except for AAAA, which its runtime keeps off the fast path.
PLUGIN = register(Plugin("dns64", setup.parse, _factory, repeatable=True, collector=collect))
