"""``prometheus [ADDR]``: ``/metrics`` in Prometheus text format; blocks naming one ADDR share it."""

from __future__ import annotations

from dataclasses import dataclass

from nodelocaldns.core.hostport import check_addr
from nodelocaldns.corefile.model import Directive


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    addr: str = "localhost:9153"


def parse(d: Directive) -> PrometheusConfig:
    if len(d.args) > 1:
        raise d.error("prometheus takes at most one address")
    for sub in d.block:
        if sub.name != "runtime_metrics" or sub.args:
            raise sub.error(f"unknown property {sub.name!r} in prometheus")
    addr = d.args[0] if d.args else "localhost:9153"
    check_addr(d, addr, 9153)
    return PrometheusConfig(addr)
