"""Answer a query from the hosts table (CoreDNS plugin/hosts/hosts.go ServeDNS).

``resolve`` returns reply bytes, ``None`` (pass the query to the next plugin) or an rcode for the
server to write (SERVFAIL: the name is unknown and there is no SOA to make an NXDOMAIN with):

* a query outside the zones goes on, except PTR, whose reverse zones need not be listed;
* PTR: the synthesized reverse names, or on to the next plugin when the address is unknown
  (whatever ``fallthrough`` says);
* A / AAAA: the addresses of that family;
* other types: nothing, or on when ``fallthrough_unsupported`` and the name is in the fallthrough zones;
* no answer and the name has no address of either family: on if it is in the fallthrough zones,
  else SERVFAIL; no answer but the name exists: authoritative NOERROR with an empty answer (no SOA).

The reply has AA set, RA clear, the client's question as sent, and owner names lowercased (CoreDNS
answers with ``state.Name()``).
"""

from __future__ import annotations

import struct

from nodelocaldns.core.zones import zone_match
from nodelocaldns.dns.message import RR, TYPE_A, TYPE_AAAA, TYPE_PTR, Message, encode, reply_flags
from nodelocaldns.dns.wire import HEADER_LEN, SERVFAIL, Query, name_to_text, text_to_wire
from nodelocaldns.plugins.hosts.hostsfile import HostsTable, reverse_to_ip
from nodelocaldns.plugins.hosts.setup import HostsConfig

Result = bytes | int | None


def _through(fall: tuple[str, ...], qname: str) -> bool:
    return bool(zone_match(fall, qname))


def resolve(data: bytes, q: Query, table: HostsTable, cfg: HostsConfig, zones: tuple[str, ...]) -> Result:
    """``zones``: the plugin's zones (``cfg.zones`` or, when empty, the server block's)."""
    qname = name_to_text(q.qname)
    qtype = q.qtype
    if not zone_match(zones, qname) and qtype != TYPE_PTR:
        return None
    answers: list[RR] = []
    owner = q.qname
    ttl = cfg.ttl
    if qtype == TYPE_PTR:
        names = table.names_of(reverse_to_ip(qname))
        if not names:
            return None
        answers = [RR(owner, TYPE_PTR, 1, ttl, text_to_wire(n)) for n in names]
    elif qtype == TYPE_A:
        answers = [RR(owner, TYPE_A, 1, ttl, ip) for ip in table.v4(qname)]
    elif qtype == TYPE_AAAA:
        answers = [RR(owner, TYPE_AAAA, 1, ttl, ip) for ip in table.v6(qname)]
    elif cfg.fallthrough_unsupported and _through(cfg.fallthrough, qname):
        return None
    if not answers and not (table.v4(qname) or table.v6(qname)):
        if _through(cfg.fallthrough, qname):
            return None
        return SERVFAIL
    flags = struct.unpack_from("!H", data, 2)[0]
    m = Message(q.id, reply_flags(flags, aa=True), data[HEADER_LEN : q.question_end], answers)
    return encode(m)
