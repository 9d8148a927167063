"""whoami through a real ``nodelocaldns serve``: the client's own address and source port come back."""

from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode

from support.server import serve
from support.upstreams import UpstreamServer


def test_udp_and_tcp_clients_see_their_address_and_port() -> None:
    with serve(".:{PORT} {\n    bind 127.0.0.1\n    whoami\n}\n") as s:
        for tcp in (False, True):
            kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                q = dns.message.make_query("Example.ORG.", "A")
                if tcp:
                    sock.connect(("127.0.0.1", s.port))
                    r = dns.query.tcp(q, "127.0.0.1", port=s.port, sock=sock, timeout=3)
                else:
                    r = dns.query.udp(q, "127.0.0.1", port=s.port, sock=sock, timeout=3)
            assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.flags & dns.flags.AA
            proto = "_tcp" if tcp else "_udp"
            got = sorted(rs.to_text() for rs in r.additional)
            assert got == sorted(
                ["Example.ORG. 0 IN A 127.0.0.1", f"{proto}.Example.ORG. 0 IN SRV 0 0 {port} ."]
            )


def test_whoami_answers_what_forward_did_not_take(unbound_upstream: UpstreamServer) -> None:
    """whoami is the last plugin: in a block with forward it only sees queries outside forward's FROM."""
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    forward cluster.local {unbound_upstream.address}
    whoami
}}
"""
    with serve(corefile) as s:
        assert [rd.to_text() for rd in s.query("kubernetes.default.svc.cluster.local.", "A").answer[0]] == [
            "198.18.0.1"
        ]
        r = s.query("who.example.", "AAAA")
        assert r.rcode() == dns.rcode.NOERROR and r.additional[0].to_text() == "who.example. 0 IN A 127.0.0.1"
        assert unbound_upstream.query_count("who.example.") == 0
