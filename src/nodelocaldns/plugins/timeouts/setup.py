"""Parse the ``timeouts`` directive (CoreDNS plugin/timeouts/timeouts.go, v1.14.7).

``timeouts { read DURATION  write DURATION  idle DURATION  maxtcpqueries MAXIMUM }``: at least one
option. A duration is a Go duration or a bare integer of seconds, between 1s and 24h. ``maxtcpqueries``
is a positive integer or -1 (unlimited). They apply to the TCP (and TLS) side of the listener: read
bounds receiving a query, write bounds sending a reply, idle bounds a connection with nothing to do.
"""

from __future__ import annotations

import re

from nodelocaldns.core.duration import format_duration, parse_duration
from nodelocaldns.core.timeouts import TimeoutsConfig
from nodelocaldns.corefile.model import Directive

ONCE = False  # every directive's options are applied in order
MIN_TIMEOUT, MAX_TIMEOUT = 1.0, 24 * 3600.0

_INT = re.compile(r"[+-]?[0-9]+")


def parse(d: Directive) -> TimeoutsConfig:
    if d.args:
        raise d.error("timeouts takes no arguments, only a block")
    values: dict[str, float | int] = {}
    for sub in d.block:
        if len(sub.args) != 1:
            raise sub.error(f"Wrong argument count or unexpected line ending after '{sub.name}'")
        arg = sub.args[0]
        if sub.name == "maxtcpqueries":
            if not _INT.fullmatch(arg):
                raise sub.error(f"invalid value for maxtcpqueries '{arg}': not an integer")
            n = int(arg)
            if n == 0 or n < -1:
                raise sub.error(
                    f"maxtcpqueries provided '{n}' needs to be -1 (unlimited) or a positive integer"
                )
            values["max_tcp_queries"] = n
            continue
        text = arg + "s" if _INT.fullmatch(arg) else arg
        try:
            neg = text.startswith("-")
            v = parse_duration(text.lstrip("+-"))
            v = -v if neg else v
        except ValueError:
            raise sub.error(f"failed to parse duration '{text}'") from None
        if not MIN_TIMEOUT <= v <= MAX_TIMEOUT:
            raise sub.error(
                f"timeout provided '{('-' if v < 0 else '') + format_duration(abs(v))}' needs to be between 1 second and 24 hours"
            )
        if sub.name not in ("read", "write", "idle"):
            raise sub.error(f"unknown option: '{sub.name}'")
        values[sub.name] = v
    if not d.block:
        raise d.error("timeouts block with no timeouts specified")
    return TimeoutsConfig(**values)  # type: ignore[arg-type]
