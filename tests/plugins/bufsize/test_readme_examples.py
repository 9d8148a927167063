"""Every Corefile in CoreDNS's bufsize README parses; the forward one runs (upstream on loopback)."""

from __future__ import annotations

import dns.message
import dns.query

from nodelocaldns.plugins.bufsize import setup
from support.directives import directives_in
from support.recorder import recording_upstream
from support.server import serve

FORWARD = ". {\n    bufsize 1100\n    forward . 172.31.0.10\n    log\n}\n"
FILE = ". {\n    bufsize 1220\n    file db.example.org\n    log\n}\n"


def test_every_example_parses() -> None:
    assert [setup.parse(d) for d in directives_in(FORWARD, "bufsize")] == [1100]
    assert [setup.parse(d) for d in directives_in(FILE, "bufsize")] == [1220]


def test_forward_example_runs() -> None:
    with recording_upstream() as rec:
        text = FORWARD.replace(". {", ".:{PORT} {\n    bind 127.0.0.1", 1).replace(
            "172.31.0.10", rec.hostport
        )
        with serve(text) as s:
            q = dns.message.make_query("x.example.org.", "A", use_edns=0, payload=4096)
            r = dns.query.udp(q, "127.0.0.1", port=s.port, timeout=3)
            assert r.payload == 1100 and rec.received[-1].payload == 1100
