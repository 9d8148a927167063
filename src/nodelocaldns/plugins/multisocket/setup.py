"""Parse the ``multisocket`` directive (CoreDNS plugin/multisocket): ``multisocket [NUM_SOCKETS]``.

No argument: as many sockets as CPUs the process may use (CoreDNS: GOMAXPROCS, which Go derives
from the affinity mask, and from the cgroup CPU quota since Go 1.25). 1..1024 otherwise.
"""

from __future__ import annotations

import re

from nodelocaldns.corefile.model import Directive

MAX_SOCKETS = 1024  # CoreDNS maxNumSockets

_INT = re.compile(r"[+-]?[0-9]+")


def parse(d: Directive) -> int | None:
    """The socket count, or None for "the usable CPUs"."""
    if d.block or len(d.args) > 1:
        raise d.error("Wrong argument count or unexpected line ending after 'multisocket'")
    if not d.args:
        return None
    text = d.args[0]
    if not _INT.fullmatch(text):
        raise d.error(f"invalid num sockets: strconv.Atoi: parsing {text!r}: invalid syntax")
    n = int(text)
    if n < 1:
        raise d.error(f"num sockets can not be zero or negative: {n}")
    if n > MAX_SOCKETS:
        raise d.error(f"num sockets exceeds maximum ({MAX_SOCKETS}): {n}")
    return n
