"""``health [ADDR] [{ lameduck DUR }]``: ``/health`` answers 200 OK while the process runs."""

from __future__ import annotations

from dataclasses import dataclass

from nodelocaldns.corefile.model import Directive
from nodelocaldns.plugins.cache.setup import parse_duration


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
    _check_addr(d, addr, 8080)
    return HealthConfig(addr, lameduck)


def _check_addr(d: Directive, addr: str, default_port: int) -> None:
    from nodelocaldns.server.httpd import split_hostport

    try:
        _host, port = split_hostport(addr, default_port)
    except ValueError:
        raise d.error(f"invalid address {addr!r}") from None
    if not 0 < port < 65536:
        raise d.error(f"invalid port in {addr!r}")
