"""A UDP datagram too large for the receive buffer is answered FORMERR with the client's ID."""

from __future__ import annotations

import socket

import dns.message
import dns.rcode

from support.server import serve

COREFILE = """
.:{PORT} {
    bind 127.0.0.1
    errors
}
"""


def test_oversized_udp_query_gets_formerr_and_the_server_keeps_serving() -> None:
    with serve(COREFILE) as s:
        q = dns.message.make_query("big.example.", "TXT")
        q.id = 0x1234
        wire = q.to_wire() + b"\x00" * 5000  # far past the 4096-byte receive buffer
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.sendto(wire, ("127.0.0.1", s.port))
            reply = dns.message.from_wire(c.recvfrom(4096)[0])
        assert reply.id == 0x1234
        assert reply.rcode() == dns.rcode.FORMERR
        # A normal query still gets an answer: SERVFAIL, "no next plugin found" after errors, as in CoreDNS.
        assert s.query("ok.example.").rcode() == dns.rcode.SERVFAIL
