"""Zone matching on wire-format names: is a name at or below one of these zones?"""

from __future__ import annotations


def in_zones(qname: bytes, zones: tuple[bytes, ...]) -> bool:
    """``qname`` and ``zones`` are lowercased wire names; a match must end on a label boundary."""
    return any(z == b"\x00" or qname.endswith(z) and _boundary(qname, len(qname) - len(z)) for z in zones)


def _boundary(name: bytes, at: int) -> bool:
    off = 0
    while off < at:
        off += name[off] + 1
    return off == at
