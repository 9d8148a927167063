"""CoreDNS's ``debug.Hexdump`` text: a DNS message as lines ``text2pcap`` can turn back into a pcap.

debug: 000000 00 0a 01 00 00 01 00 00 00 00 00 01 07 65 78 61
debug: 000010 6d 70 6c 65 05 6c 6f 63 61 6c 00 00 01 00 01 00
debug: 000020 00 29 10 00 00 00 80 00 00 00
debug: 00002a
"""

from __future__ import annotations

PREFIX = "debug: "


def hexdump(data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        lines.append(f"{PREFIX}{i:06x} " + " ".join(f"{b:02x}" for b in data[i : i + 16]))
    lines.append(f"{PREFIX}{len(data):06x}")
    return "\n".join(lines)
