"""debug: CoreDNS debug_test.go / pcap_test.go facts."""

from __future__ import annotations

import dns.message

from nodelocaldns.dns.hexdump import hexdump
from nodelocaldns.plugins.debug import setup
from support.directives import directive, directives_in, fails


def test_parse() -> None:
    assert setup.parse(directive("debug")) is True
    fails(setup.parse, "debug off", "no arguments")
    assert setup.enabled([False, True]) and not setup.enabled([])
    assert len(directives_in(". {\n    debug\n}\n", "debug")) == 1


def test_hexdump_matches_coredns_example() -> None:
    m = dns.message.make_query("example.local.", "A", use_edns=0, payload=4096, want_dnssec=True)
    m.id = 10
    m.flags = 0x0100
    assert hexdump(m.to_wire()) == (
        "debug: 000000 00 0a 01 00 00 01 00 00 00 00 00 01 07 65 78 61\n"
        "debug: 000010 6d 70 6c 65 05 6c 6f 63 61 6c 00 00 01 00 01 00\n"
        "debug: 000020 00 29 10 00 00 00 80 00 00 00\n"
        "debug: 00002a"
    )
