"""``health [ADDR] [{ lameduck DUR }]``: ``/health`` answers 200 OK while the process runs."""

from __future__ import annotations

from dataclasses import dataclass

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.core.hostport import check_addr
from nodelocaldns.corefile.model import Directive


@dataclass(frozen=True, slots=True)
class HealthConfig:
    addr: str = ":8080"
    lameduck: float = 0.0


def parse(d: Directive) -> HealthConfig:
    if len(d.args) > 1:
        raise d.error("health takes at most one address")
    lameduck = 0.0
    for sub in d.block:
        if sub.name != "lameduck" or len(sub.args) != 1:
            raise sub.error("health block takes only 'lameduck DURATION'")
        try:
            lameduck = parse_duration(sub.args[0])
        except ValueError:
            raise sub.error(f"invalid duration {sub.args[0]!r}") from None
    addr = d.args[0] if d.args else ":8080"
    check_addr(d, addr, 8080)
    return HealthConfig(addr, lameduck)
