"""Every Corefile in CoreDNS's dns64 README parses as documented; the allow_ipv4 one runs."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import dns.message
import dns.query

from nodelocaldns.plugins.dns64 import setup
from support.directives import directives_in
from support.server import serve
from support.upstreams import UpstreamServer

EXAMPLES = {
    ". {\n    dns64\n}\n": setup.DNS64Config(),
    ". {\n    dns64 64:1337::/96\n}\n": setup.DNS64Config(ipaddress.IPv6Network("64:1337::/96")),
    ". {\n    dns64 {\n        prefix 64:1337::/96\n    }\n}\n": setup.DNS64Config(
        ipaddress.IPv6Network("64:1337::/96")
    ),
    ". {\n    dns64 {\n        translate_all\n    }\n}\n": setup.DNS64Config(translate_all=True),
    ". {\n    dns64 {\n        allow_ipv4\n    }\n}\n": setup.DNS64Config(allow_ipv4=True),
}


def test_every_example_parses_as_documented() -> None:
    for text, want in EXAMPLES.items():
        (got,) = [setup.parse(d) for d in directives_in(text, "dns64")]
        assert got == want, text


def test_allow_ipv4_example_runs(make_unbound: Callable[..., UpstreamServer]) -> None:
    up = make_unbound({"example.org.": ["www.example.org. 30 IN A 198.18.4.1"]})
    text = ". {\n    dns64 {\n        allow_ipv4\n    }\n}\n"
    text = text.replace(". {", ".:{PORT} {\n    bind 127.0.0.1\n    forward . " + up.address, 1)
    with serve(text) as s:
        r = dns.query.udp(
            dns.message.make_query("www.example.org.", "AAAA"), "127.0.0.1", port=s.port, timeout=3
        )
        assert [a.address for rrs in r.answer for a in rrs] == ["64:ff9b::c612:401"]
