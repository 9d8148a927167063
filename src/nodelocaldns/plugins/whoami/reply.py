"""The whoami answer (CoreDNS plugin/whoami/whoami.go), for every query whatever its type.

An authoritative NOERROR reply (miekg ``SetReply``: RD and CD copied, RA clear) with an empty answer
section and two additional records, TTL 0, in the query's class, owned by the query name as the
client wrote it: an A (IPv4 client, IPv4-mapped included) or AAAA record with the client's address,
and ``_udp.<qname>`` / ``_tcp.<qname>`` SRV 0 0 <client port> ``.`` (``_udp.`` for the root).
"""

from __future__ import annotations

import ipaddress
import struct

from nodelocaldns.dns.message import (
    RR,
    TYPE_A,
    TYPE_AAAA,
    TYPE_SRV,
    Message,
    encode,
    prepend_label,
    reply_flags,
)
from nodelocaldns.dns.wire import HEADER_LEN, Query


def answer(data: bytes, q: Query, remote: tuple[str, int], proto: str) -> bytes:
    """``proto`` is "udp" or "tcp" (TLS counts as tcp, as in CoreDNS ``state.Proto()``)."""
    qname = data[HEADER_LEN : q.question_end - 4]  # as sent: case preserved
    ip = ipaddress.ip_address(remote[0].split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    addr = RR(qname, TYPE_A if ip.version == 4 else TYPE_AAAA, q.qclass, 0, ip.packed)
    srv_rdata = struct.pack("!HHH", 0, 0, remote[1]) + b"\x00"
    srv = RR(prepend_label(b"_" + proto.encode(), qname), TYPE_SRV, q.qclass, 0, srv_rdata)
    flags = reply_flags(struct.unpack_from("!H", data, 2)[0], aa=True)
    return encode(Message(q.id, flags, data[HEADER_LEN : q.question_end], [], [], [addr, srv]))
