"""bufsize's effect (CoreDNS plugin/bufsize/bufsize.go): lower the query's EDNS0 UDP size to SIZE.

Only a query with an OPT record whose advertised size is larger than SIZE changes; sizes are never
raised and no OPT is added. CoreDNS edits the request message in place, so everything after it sees
the lower size: the upstream query, and the server's truncation and OPT echo of the reply. So the
runtime replaces both the query bytes and the parsed ``Query`` with what ``clamp`` returns.
"""

from __future__ import annotations

import dataclasses
import struct

from nodelocaldns.dns.wire import HEADER_LEN, TYPE_OPT, Query, skip_name


def _opt_class_offset(data: bytes, q: Query) -> int:
    """Offset of the OPT record's CLASS (the UDP size) field, or -1 without an OPT."""
    an, ns, ar = struct.unpack_from("!HHH", data, 6)
    off = q.question_end
    found = -1
    for i in range(an + ns + ar):
        off = skip_name(data, off)
        rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", data, off)
        if i >= an + ns and rtype == TYPE_OPT:
            found = off + 2  # miekg IsEdns0 takes the last OPT; parse_query allows only one
        off += 10 + rdlen
    return found


def clamp(data: bytes, q: Query, size: int) -> tuple[bytes, Query]:
    """The query bytes and its parsed form with the OPT's UDP size lowered to ``size`` if larger."""
    if not q.edns or len(data) <= HEADER_LEN:
        return data, q
    at = _opt_class_offset(data, q)
    if at < 0 or struct.unpack_from("!H", data, at)[0] <= size:
        return data, q
    out = data[:at] + struct.pack("!H", size) + data[at + 2 :]
    return out, dataclasses.replace(q, udp_size=max(size, 512), opt_size=size)
