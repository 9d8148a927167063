"""dns64 setup: CoreDNS plugin/dns64/setup_test.go table, README examples, file:line errors."""

from __future__ import annotations

import pytest

from nodelocaldns.plugins.dns64 import setup as dns64
from support.directives import directive, directives_in, fails

OK = [
    ("dns64", "64:ff9b::/96", False, False),
    ("dns64 64:dead::/96", "64:dead::/96", False, False),
    ("dns64 {\n translate_all\n}", "64:ff9b::/96", True, False),
    ("dns64 {\n prefix 64:ff9b::/96\n}", "64:ff9b::/96", False, False),
    ("dns64 {\n prefix 64:ff9b::/32\n}", "64:ff9b::/32", False, False),
    ("dns64 {\n prefix 2002:ac12:b083::/96\n}", "2002:ac12:b083::/96", False, False),
    ("dns64 {\n prefix 2002:c0a8:a88a::/48\n}", "2002:c0a8:a88a::/48", False, False),
    ("dns64 {\n allow_ipv4\n}", "64:ff9b::/96", False, True),
]


@pytest.mark.parametrize(("text", "prefix", "translate_all", "allow_ipv4"), OK)
def test_parse(text: str, prefix: str, translate_all: bool, allow_ipv4: bool) -> None:
    c = dns64.parse(directive(text))
    assert (str(c.prefix), c.translate_all, c.allow_ipv4, c.warnings) == (
        prefix,
        translate_all,
        allow_ipv4,
        (),
    )


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [
        ("dns64 {\n prefix 64:ff9b::/52\n}", 'invalid prefix length "64:ff9b::/52"', 3),
        ("dns64 {\n prefix 64:ff9b::/104\n}", "invalid prefix length", 3),
        ("dns64 {\n prefix 8.8.8.8/24\n}", 'invalid netmask 32 IPv6 address: "8.8.8.0/24"', 3),
        ("dns64 foobar {\n prefix 64:ff9b::/96\n}", "invalid CIDR address: foobar", 2),
        ("dns64 foobar", "invalid CIDR address: foobar", 2),
        ("dns64 64:ff9b::", "invalid CIDR address", 2),
        ("dns64 {\n foobar\n}", "unknown property 'foobar'", 3),
        ("dns64 {\n prefix\n}", "prefix needs a PREFIX", 3),
        ("dns64 64:ff9b::/96 64:ff9b::/96", "at most one PREFIX", 2),
    ],
)
def test_errors(text: str, match: str, line: int) -> None:
    fails(dns64.parse, text, match, line)


def test_block_after_a_prefix_argument_is_ignored_like_coredns_but_reported() -> None:
    c = dns64.parse(directive("dns64 64:1337::/96 {\n translate_all\n}"))
    assert str(c.prefix) == "64:1337::/96" and not c.translate_all
    assert c.warnings and c.warnings[0].startswith("Corefile:2:")


README = """
. {
    dns64
}
. {
    dns64 64:1337::/96
}
. {
    dns64 {
        prefix 64:1337::/96
    }
}
. {
    dns64 {
        translate_all
    }
}
. {
    dns64 {
        allow_ipv4
    }
}
"""


def test_readme_examples() -> None:
    got = [dns64.parse(d) for d in directives_in(README, "dns64")]
    assert [str(c.prefix) for c in got] == [
        "64:ff9b::/96",
        "64:1337::/96",
        "64:1337::/96",
        "64:ff9b::/96",
        "64:ff9b::/96",
    ]
    assert [c.translate_all for c in got] == [False, False, False, True, False]
    assert [c.allow_ipv4 for c in got] == [False, False, False, False, True]
