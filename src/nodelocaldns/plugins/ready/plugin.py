"""``ready [ADDR]``: ``/ready`` is 200 OK once every listener is up, 503 while shutting down."""

from __future__ import annotations

from dataclasses import dataclass

from nodelocaldns.core.hostport import check_addr
from nodelocaldns.corefile.model import Directive


@dataclass(frozen=True, slots=True)
class ReadyConfig:
    addr: str = ":8181"


def parse(d: Directive) -> ReadyConfig:
    if len(d.args) > 1:
        raise d.error("ready takes at most one address")
    for sub in d.block:
        if sub.name != "monitor" or len(sub.args) != 1 or sub.args[0] not in ("until-ready", "continuously"):
            raise sub.error("ready block takes only 'monitor until-ready|continuously'")
    addr = d.args[0] if d.args else ":8181"
    check_addr(d, addr, 8181)
    return ReadyConfig(addr)
