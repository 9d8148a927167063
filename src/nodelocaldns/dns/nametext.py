"""Domain names between wire form and the presentation form CoreDNS logs and matches."""

from __future__ import annotations

from nodelocaldns.errors import WireError

# miekg/dns isDomainNameLabelSpecial: the bytes it prints as backslash + byte ($ is not one).
_SPECIAL = frozenset(b".'@;()\"\\ ")
_LABEL_TEXT = tuple(
    "\\" + chr(b) if b in _SPECIAL else (chr(b) if 0x20 < b < 0x7F else f"\\{b:03d}") for b in range(256)
)


def name_to_text(wire_name: bytes) -> str:
    """Presentation form of an uncompressed wire name as miekg/dns prints it ("." for the root).

    CoreDNS logs and matches names in this form: ``sp\\ ace`` for a space, ``\\DDD`` for bytes
    outside printable ASCII.
    """
    labels = []
    off = 0
    while wire_name[off]:
        length = wire_name[off]
        labels.append("".join([_LABEL_TEXT[b] for b in wire_name[off + 1 : off + 1 + length]]))
        off += 1 + length
    return ".".join(labels) + "." if labels else "."


def text_to_wire(name: str) -> bytes:
    """Wire form of a plain (no escapes) domain name, lowercased."""
    name = name.lower().rstrip(".")
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("ascii")
        if not raw or len(raw) > 63:
            raise WireError(f"bad label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)
