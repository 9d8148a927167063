"""``reload [INTERVAL] [JITTER]``: re-read the Corefile and apply it live when its parsed form changes.

The hash is SHA-512 over the parsed server blocks (``corefile.model.corefile_hash``), so comment and
whitespace edits do not reload.
A file that fails to parse or set up keeps the running config and counts a failure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.model import Directive


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    interval: float = 30.0
    jitter: float = 15.0

    def next_delay(self, rng: random.Random) -> float:
        """INTERVAL + U[-JITTER/2, +JITTER/2), as CoreDNS computes it."""
        if self.jitter <= 0:
            return self.interval
        return self.interval + rng.uniform(-self.jitter / 2, self.jitter / 2)


def parse(d: Directive) -> ReloadConfig:
    if len(d.args) > 2 or d.block:
        raise d.error("reload takes [INTERVAL] [JITTER]")
    vals = []
    for a in d.args:
        try:
            vals.append(parse_duration(a))
        except ValueError:
            raise d.error(f"invalid duration {a!r}") from None
    interval = vals[0] if vals else 30.0
    jitter = vals[1] if len(vals) > 1 else 15.0
    if interval < 2:
        raise d.error("interval value must be greater or equal to 2s")
    if jitter != 0 and jitter < 1:
        raise d.error("jitter value must be greater or equal to 1s")
    jitter = min(jitter, interval / 2)
    return ReloadConfig(interval, jitter)
