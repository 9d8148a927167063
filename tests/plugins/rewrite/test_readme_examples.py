"""Every rewrite rule and Corefile in CoreDNS's rewrite README parses (setup); the README's dig
examples run against a real unbound holding the README's data."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nodelocaldns.plugins.rewrite import setup
from support.directives import directive, directives_in
from support.server import serve
from support.upstreams import UpstreamServer

LINES = [
    "rewrite name substring service.us-west-1.example.org service.us-west-1.consul",
    "rewrite name regex (.*)-(us-west-1)\\.example\\.org {1}.service.{2}.consul",
    "rewrite name suffix .schmoogle.com. .google.com.",
    "rewrite name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul",
    "rewrite stop {\n    name suffix .coredns.rocks .service.consul answer auto\n}",
    "rewrite stop {\n    name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul\n"
    "    answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.coredns.rocks\n}",
    "rewrite stop {\n    name suffix .arpa .arpa\n    answer name auto\n"
    "    answer value (.*)\\.service\\.consul\\. {1}.coredns.rocks.\n}",
    "rewrite continue {\n    ttl regex (.*)\\.coredns\\.rocks 15\n}",
    "rewrite ttl example.com. 30-300",
    "rewrite ttl example.com. -30",
    "rewrite ttl example.com. 30-",
    "rewrite ttl example.com. 30",
    "rewrite continue {\n    rcode regex (.*)\\.coredns\\.rocks SERVFAIL NOERROR\n}",
    "rewrite continue {\n    rcode regex (.*)\\.coredns\\.rocks 2 0\n}",
    "rewrite edns0 local set 0xffee 0x61626364",
    "rewrite edns0 local set 0xffee abcd",
    "rewrite edns0 local set 0xffee {client_ip}",
    "rewrite edns0 local unset 0xffee",
    "rewrite edns0 subnet set 24 56",
    "rewrite edns0 subnet unset",
    "rewrite edns0 local set 0xffee abcd revert",
    "rewrite edns0 local replace 0xffee bcde revert",
    "rewrite cname regex (.*).cdn.example.net. {1}.other.cdn.com.",
]


@pytest.mark.parametrize("text", LINES)
def test_every_readme_rule_parses(text: str) -> None:
    assert setup.parse(directive(text)) is not None


def test_two_directive_example_is_one_rule_list() -> None:
    text = ". {\n    rewrite continue {\n        edns0 local set 0xffee abcd\n    }\n\n" \
           "    rewrite edns0 local replace 0xffee bcde revert\n}\n"  # fmt: skip
    assert len(setup.parse_all(directives_in(text, "rewrite")).rules) == 2


README_DATA = {
    "consul.": [
        "ftp.service.us-west-1.consul. 0 IN A 10.10.10.10",
        "ftp.service.us-west-1.consul. 0 IN A 10.20.20.20",
        "ftp.service.us-west-1.consul. 0 IN A 10.30.30.30",
    ],
    "10.in-addr.arpa.": ["30.30.30.10.in-addr.arpa. 60 IN PTR ftp-us-west-1.service.consul."],
}


@pytest.mark.parametrize(
    ("rules", "qname", "qtype", "want"),
    [
        ("    rewrite name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul",
         "ftp-us-west-1.coredns.rocks.", "A", [f"ftp.service.us-west-1.consul. 0 IN A 10.{i}.{i}.{i}" for i in (10, 20, 30)]),
        ("    rewrite stop {\n        name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul\n"
         "        answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.coredns.rocks\n    }",
         "ftp-us-west-1.coredns.rocks.", "A", [f"ftp-us-west-1.coredns.rocks. 0 IN A 10.{i}.{i}.{i}" for i in (10, 20, 30)]),
        ("    rewrite stop {\n        name suffix .arpa .arpa\n        answer name auto\n"
         "        answer value (.*)\\.service\\.consul\\. {1}.coredns.rocks.\n    }",
         "30.30.30.10.in-addr.arpa.", "PTR", ["30.30.30.10.in-addr.arpa. 60 IN PTR ftp-us-west-1.coredns.rocks."]),
    ],
)  # fmt: skip
def test_readme_dig_examples(make_unbound: Callable[..., UpstreamServer], rules: str, qname: str, qtype: str,
                             want: list[str]) -> None:  # fmt: skip
    up = make_unbound(README_DATA)
    # No cache in the block: the README's zero TTLs come back as they are.
    with serve(f".:{{PORT}} {{\n    bind 127.0.0.1\n{rules}\n    forward . {up.address}\n}}\n") as s:
        r = s.query(qname, qtype)
        assert r.question[0].name.to_text() == qname
        assert sorted(line for rrs in r.answer for line in rrs.to_text().splitlines()) == sorted(want)
