"""``reload [INTERVAL] [JITTER]``: re-read the Corefile and apply it live when its parsed form changes.

The hash is SHA-512 over the parsed server blocks, so comment and whitespace edits do not reload.
A file that fails to parse or set up keeps the running config and counts a failure.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.model import Directive, ServerBlock


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


def corefile_hash(blocks: tuple[ServerBlock, ...]) -> str:
    """SHA-512 of the parsed blocks (ignores comments, whitespace, and file positions)."""

    def strip(o: object) -> object:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("filename", "line", "extra")}
        if isinstance(o, list | tuple):
            return [strip(v) for v in o]
        return o

    data = [strip(asdict(b)) for b in blocks]
    return hashlib.sha512(json.dumps(data, sort_keys=True).encode()).hexdigest()
