"""hosts setup: CoreDNS plugin/hosts/setup_test.go tables, README examples, file:line errors."""

from __future__ import annotations

import pytest

from nodelocaldns.plugins.hosts import setup as hosts
from support.directives import directive, directives_in, fails


def test_defaults() -> None:
    c = hosts.parse(directive("hosts"))
    assert (c.path, c.zones, c.ttl, c.reload, c.auto_reverse) == ("/etc/hosts", (), 3600, 5.0, True)
    assert (c.fallthrough, c.fallthrough_unsupported, c.inline) == ((), False, ())


@pytest.mark.parametrize(
    ("text", "path", "zones", "fall"),
    [
        ("hosts", "/etc/hosts", (), ()),
        ("hosts /tmp", "/tmp", (), ()),
        ("hosts /etc/hosts miek.nl.", "/etc/hosts", ("miek.nl.",), ()),
        ("hosts /etc/hosts miek.nl. pun.gent.", "/etc/hosts", ("miek.nl.", "pun.gent."), ()),
        ("hosts {\n fallthrough\n}", "/etc/hosts", (), (".",)),
        ("hosts /tmp {\n fallthrough\n}", "/tmp", (), (".",)),
        ("hosts /etc/hosts miek.nl. {\n fallthrough\n}", "/etc/hosts", ("miek.nl.",), (".",)),
        (
            "hosts /etc/hosts miek.nl 10.0.0.9/8 {\n fallthrough\n}",
            "/etc/hosts",
            ("miek.nl.", "10.in-addr.arpa."),
            (".",),
        ),
    ],
)
def test_parse_table(text: str, path: str, zones: tuple[str, ...], fall: tuple[str, ...]) -> None:
    c = hosts.parse(directive(text))
    assert (c.path, c.zones, c.fallthrough) == (path, zones, fall)


def test_a_directory_or_missing_file_is_a_warning_not_an_error() -> None:
    assert hosts.parse(directive("hosts /tmp")).warnings == ('Hosts file "/tmp" is a directory',)
    c = hosts.parse(directive("hosts /nonexistent/hosts"))
    assert c.warnings == ("File does not exist: /nonexistent/hosts",)


def test_inline_lines_before_fallthrough() -> None:
    c = hosts.parse(
        directive(
            "hosts highly_unlikely_to_exist_hosts_file example.org {\n 10.0.0.1 example.org\n fallthrough\n}"
        )
    )
    assert c.inline == ("10.0.0.1 example.org",) and c.fallthrough == (".",)
    c = hosts.parse(
        directive("hosts highly_unlikely_to_exist_hosts_file example.org {\n 10.0.0.1 example.org\n}")
    )
    assert c.inline == ("10.0.0.1 example.org",) and c.fallthrough == ()


def test_inline_after_fallthrough_is_an_error_on_its_line() -> None:
    fails(
        hosts.parse,
        "hosts f example.org {\n fallthrough\n 10.0.0.1 example.org\n}",
        "unknown property '10.0.0.1'",
        4,
    )


def test_options() -> None:
    c = hosts.parse(
        directive("hosts {\n ttl 60\n no_reverse\n reload 1m30s\n fallthrough in-addr.arpa ip6.arpa\n}")
    )
    assert (c.ttl, c.auto_reverse, c.reload) == (60, False, 90.0)
    assert c.fallthrough == ("in-addr.arpa.", "ip6.arpa.")
    assert hosts.parse(directive("hosts {\n reload 0\n}")).reload == 0.0


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ("ttl", "ttl needs a time in second"),
        ("ttl abc", "ttl needs a number of second"),
        ("ttl 0", "ttl provided is invalid"),
        ("ttl 65536", "ttl provided is invalid"),
        ("ttl -5", "ttl provided is invalid"),
        ("reload", "reload needs a duration"),
        ("reload 1s 2s", "reload needs a duration"),
        ("reload soon", "invalid duration for reload 'soon'"),
        ("reload -5s", "invalid negative duration for reload '-5s'"),
        ("fallthrough_unsupported example.org", "takes no arguments"),
    ],
)
def test_block_errors_name_their_line(block: str, match: str) -> None:
    fails(hosts.parse, "hosts {\n fallthrough\n " + block + "\n}", match, 4)


def test_fallthrough_unsupported_needs_fallthrough() -> None:
    c = hosts.parse(directive("hosts {\n fallthrough\n fallthrough_unsupported\n}"))
    assert c.fallthrough_unsupported
    c = hosts.parse(directive("hosts {\n fallthrough_unsupported\n fallthrough example.org\n}"))
    assert c.fallthrough_unsupported and c.fallthrough == ("example.org.",)
    fails(hosts.parse, "hosts {\n fallthrough_unsupported\n}", "requires fallthrough")


def test_bad_zone_argument() -> None:
    fails(hosts.parse, "hosts /etc/hosts exa{mple.org", "zone")


README = """
. {
    hosts
}
. {
    hosts example.hosts
}
. {
    hosts example.hosts example.org example.net {
        fallthrough
    }
}
example.hosts example.org {
    hosts {
        10.0.0.1 example.org
        fallthrough
    }
    whoami
}
. {
    hosts example.hosts example.com {
        192.168.1.10 *.example.com
        192.168.1.11 www.example.com
        fallthrough example.com
    }
    forward . 8.8.8.8
}
"""


def test_readme_examples() -> None:
    got = [hosts.parse(d) for d in directives_in(README, "hosts")]
    assert len(got) == 5
    assert got[0].path == "/etc/hosts" and got[1].path == "example.hosts"
    assert got[2].zones == ("example.org.", "example.net.") and got[2].fallthrough == (".",)
    assert got[3].inline == ("10.0.0.1 example.org",)
    assert got[4].inline == ("192.168.1.10 *.example.com", "192.168.1.11 www.example.com")
    assert got[4].fallthrough == ("example.com.",)
