"""bufsize end to end: the upstream receives the lowered size, the client's reply echoes it."""

from __future__ import annotations

import subprocess

import dns.message
import dns.query

from support.recorder import recording_upstream
from support.server import serve


def test_upstream_sees_the_lowered_size_and_dig_sees_it_echoed() -> None:
    with recording_upstream() as rec:
        text = f".:{{PORT}} {{\n    bind 127.0.0.1\n    bufsize 1100\n    cache 30\n    forward . {rec.hostport}\n}}\n"
        with serve(text) as s:
            out = subprocess.run(["dig", "@127.0.0.1", "-p", str(s.port), "+bufsize=4096", "big.example.", "A"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
            assert "udp: 1100" in out and rec.address in out
            (seen,) = [m for m in rec.received if m.question[0].name.to_text() == "big.example."]
            assert seen.payload == 1100
            # A smaller size is left alone, and so is a query without EDNS.
            r = dns.query.udp(dns.message.make_query("small.example.", "A", use_edns=0, payload=800),
                              "127.0.0.1", port=s.port, timeout=3)  # fmt: skip
            assert r.payload == 800
            (seen,) = [m for m in rec.received if m.question[0].name.to_text() == "small.example."]
            assert seen.payload == 800
            r = dns.query.udp(
                dns.message.make_query("none.example.", "A"), "127.0.0.1", port=s.port, timeout=3
            )
            assert r.edns < 0
