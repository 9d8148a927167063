"""Zone matching: is a name at or below one of these zones? Wire-format names (the query path)
and text names (plugins that match on presentation form), the one home of both."""

from __future__ import annotations

from collections.abc import Iterable


def in_zones(qname: bytes, zones: tuple[bytes, ...]) -> bool:
    """``qname`` and ``zones`` are lowercased wire names; a match must end on a label boundary."""
    for z in zones:  # a loop, not any(<generator>): this runs several times per miss
        if z == b"\x00" or qname.endswith(z) and _boundary(qname, len(qname) - len(z)):
            return True
    return False


def _boundary(name: bytes, at: int) -> bool:
    off = 0
    while off < at:
        off += name[off] + 1
    return off == at


def is_subdomain(zone: str, name: str) -> bool:
    """True if ``name`` is ``zone`` or below it; both lowercased, fully qualified text."""
    if zone == ".":
        return True
    return name == zone or name.endswith("." + zone)


def zone_match(zones: Iterable[str], name: str) -> str:
    """CoreDNS ``plugin.Zones.Matches``: the longest zone that ``name`` is in, or ""."""
    best = ""
    for zone in zones:
        if is_subdomain(zone, name) and len(zone) > len(best):
            best = zone
    return best
