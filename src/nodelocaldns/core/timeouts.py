"""A listener's TCP timeouts: what the ``timeouts`` directive sets and every listener applies.

CoreDNS keeps these in ``dnsserver.Config`` (ReadTimeout, WriteTimeout, IdleTimeout, MaxTCPQueries):
a plugin sets them, the server reads them. Here a ``Runtime.listener_timeouts`` carries a block's
settings and the listener merges them, so the server needs no word of the ``timeouts`` plugin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# CoreDNS core/dnsserver NewServer defaults.
DEFAULT_READ = 3.0
DEFAULT_WRITE = 5.0
DEFAULT_IDLE = 10.0
UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """What one block sets; None: not set here (the server default or another block's value)."""

    read: float | None = None
    write: float | None = None
    idle: float | None = None
    max_tcp_queries: int | None = None


@dataclass(frozen=True, slots=True)
class ServerTimeouts:
    read: float = DEFAULT_READ
    write: float = DEFAULT_WRITE
    idle: float = DEFAULT_IDLE
    max_tcp_queries: int = UNLIMITED


def for_listener(blocks: Iterable[TimeoutsConfig]) -> ServerTimeouts:
    """One listener's values from the blocks it serves, in Corefile order: each set value overrides
    (CoreDNS ``NewServer`` walks the server blocks sharing an address the same way)."""
    out = ServerTimeouts()
    kw = {"read": out.read, "write": out.write, "idle": out.idle, "max_tcp_queries": out.max_tcp_queries}
    for b in blocks:
        for k in kw:
            v = getattr(b, k)
            if v is not None:
                kw[k] = v
    return ServerTimeouts(**kw)  # type: ignore[arg-type]
