"""``log`` line fields CoreDNS derives from miekg/dns, and which queries reach the log at all.

CoreDNS prints ``{name}`` as miekg/dns writes a name (``sp\\ ace``, ``\\000``), ``{size}`` as
``Msg.Len()`` of the unpacked request (names expanded), and logs only what reaches a plugin chain:
what miekg/dns or the server answers itself (FORMERR, NOTIMP for UPDATE, BADVERS, REFUSED for an
unserved zone or a non-IN class without ``forward``) is never logged.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass

from support.server import serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]

ZONES = {"cluster.local.": ["web.default.svc.cluster.local. 30 IN A 198.18.1.1"]}
PROBE_BLOCK = "invalid:{PORT} {\n    bind 127.0.0.1\n}\n"
# The quoted request part of the common format; the name may hold escaped spaces.
REQUEST = re.compile(
    r'"(?P<type>\S+) (?P<class>\S+) (?P<name>.+) (?P<proto>udp|tcp) (?P<size>\d+) (true|false) \d+"'
)


def block(body: str, zone: str = ".") -> str:
    return f"{zone}:{{PORT}} {{\n    bind 127.0.0.1\n    {body}\n}}\n"


def corefile(body: str, zone: str = ".") -> str:
    return block(body, zone) + PROBE_BLOCK


def logged(text: str) -> list[re.Match[str]]:
    out = []
    for line in text.splitlines():
        if line.startswith("[INFO] ") and " - " in line:
            m = REQUEST.search(line)
            if m is not None and m["name"] != "probe.invalid.":
                out.append(m)
    return out


def udp(data: bytes, port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(65535)


def test_name_is_escaped_as_miekg_dns_prints_it(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    odd = dns.name.Name(
        [b"sp ace", b"It's", b"a$b", b"\x00\x7f", b'q(u)o"te;@', b"dot.ted", b"cluster", b"local", b""]
    )
    with serve(corefile(f"log\n    forward . {up.address}")) as s:
        dns.query.udp(dns.message.make_query(odd, "A"), "127.0.0.1", port=s.port, timeout=3)
        text = s.stderr()
    [m] = logged(text)
    # miekg/dns escapes . space ' @ ; ( ) " \ with a backslash, bytes outside 0x20-0x7e as \DDD,
    # and nothing else ($ stays); CoreDNS lowercases the result.
    assert m["name"] == "sp\\ ace.it\\'s.a$b.\\000\\127.q\\(u\\)o\\\"te\\;\\@.dot\\.ted.cluster.local."


def test_size_is_the_length_of_the_unpacked_request() -> None:
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    plain = q.to_wire()
    # One additional A record whose owner is a pointer to the question's name: miekg/dns expands
    # it on unpack, so Msg.Len() counts the whole name where the wire had two bytes.
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes([198, 18, 0, 1])
    data = plain[:10] + b"\x00\x01" + plain[12:] + extra
    name_len = len(dns.name.from_text("web.default.svc.cluster.local.").to_wire())
    with serve(corefile("log\n    whoami")) as s:
        assert dns.message.from_wire(udp(data, s.port)).rcode() == dns.rcode.NOERROR
        dns.query.udp(q, "127.0.0.1", port=s.port, timeout=3)
        text = s.stderr()
    compressed, uncompressed = logged(text)
    assert int(compressed["size"]) == len(data) - 2 + name_len
    assert int(uncompressed["size"]) == len(plain)


def test_queries_that_reach_the_chain_are_logged_and_server_rejections_are_not(
    make_unbound: MakeUnbound,
) -> None:
    up = make_unbound(ZONES)
    text = block(f"log\n    forward . {up.address}", zone="cluster.local") + corefile(
        "log", zone="example.org"
    )
    with serve(text) as s:
        # A CH query in a server with forward goes down the chain (CoreDNS's EnableChaos).
        ch = dns.message.make_query("web.default.svc.cluster.local.", "TXT", rdclass=dns.rdataclass.CH)
        dns.query.udp(ch, "127.0.0.1", port=s.port, timeout=3)
        # NOTIFY passes miekg/dns's accept func and reaches the chain.
        notify = dns.message.make_query("web.default.svc.cluster.local.", "SOA")
        notify.set_opcode(dns.opcode.NOTIFY)
        notify.flags &= ~dns.flags.RD
        dns.query.udp(notify, "127.0.0.1", port=s.port, timeout=3)
        # Answered without the chain: a zone nobody serves, UPDATE, BADVERS, FORMERR.
        assert s.query("other.test.", "A").rcode() == dns.rcode.REFUSED
        update = dns.message.make_query("web.default.svc.cluster.local.", "SOA")
        update.set_opcode(dns.opcode.UPDATE)
        assert dns.message.from_wire(udp(update.to_wire(), s.port)).rcode() == dns.rcode.NOTIMP
        badvers = dns.message.make_query("web.default.svc.cluster.local.", "A", use_edns=1)
        assert dns.message.from_wire(udp(badvers.to_wire(), s.port)).rcode() == dns.rcode.BADVERS
        formerr = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire() + b"\x00"
        assert dns.message.from_wire(udp(formerr, s.port)).rcode() == dns.rcode.FORMERR
        text = s.stderr()
    assert [(m["type"], m["class"], m["name"]) for m in logged(text)] == [
        ("TXT", "CH", "web.default.svc.cluster.local."),
        ("SOA", "IN", "web.default.svc.cluster.local."),
    ]
