"""Parse the ``pprof`` directive (CoreDNS plugin/pprof/setup.go): ``pprof [ADDRESS] { block [RATE] }``.

pprof serves Go runtime profiles, which a Python process does not have. The directive is accepted
and validated so a Corefile that has it keeps working; the runtime logs ``UNAVAILABLE`` once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nodelocaldns.core.hostport import split_host_port
from nodelocaldns.corefile.model import Directive

ONCE = True  # CoreDNS plugin.ErrOnce
DEFAULT_ADDRESS = "localhost:6053"
UNAVAILABLE = (
    "pprof: Go runtime profiling is not available in nodelocaldns; the directive is accepted and ignored"
)

_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class PprofConfig:
    address: str = DEFAULT_ADDRESS
    block_rate: int = 0  # 0: block profiling off


def parse(d: Directive) -> PprofConfig:
    address = DEFAULT_ADDRESS
    if len(d.args) > 1:
        raise d.error("pprof takes at most one ADDRESS")
    if d.args:
        address = d.args[0]
        try:
            split_host_port(address)
        except ValueError as e:
            raise d.error(str(e)) from None
    rate = 0
    for sub in d.block:
        if sub.name != "block":
            raise sub.error(f"unknown property '{sub.name}'")
        if len(sub.args) > 1:
            raise sub.error("block takes at most one RATE")
        rate = 1
        if sub.args:
            if not _INT.fullmatch(sub.args[0]):
                raise sub.error(f"property 'block' invalid integer value '{sub.args[0]}'")
            rate = int(sub.args[0])
    return PprofConfig(address, rate)
