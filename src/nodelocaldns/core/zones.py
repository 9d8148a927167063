"""Zone matching on wire-format names: is a name at or below one of these zones?"""

from __future__ import annotations


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
