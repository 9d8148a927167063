"""bufsize: CoreDNS setup_test.go / bufsize_test.go facts; the query's OPT checked with dnspython."""

from __future__ import annotations

import dns.message
import pytest

from nodelocaldns.dns.wire import parse_query
from nodelocaldns.plugins.bufsize import setup
from nodelocaldns.plugins.bufsize.clamp import clamp
from support.directives import directive, directives_in, fails


@pytest.mark.parametrize(
    ("text", "size"),
    [("bufsize", 1232), ('bufsize "1220"', 1220), ("bufsize 512", 512), ("bufsize 4096", 4096)],
)
def test_parse(text: str, size: int) -> None:
    assert setup.parse(directive(text)) == size


@pytest.mark.parametrize(
    ("text", "match"),
    [('bufsize "5000"', "within 512-4096"), ('bufsize "512 512"', "integer"), ('bufsize "511"', "within 512-4096"),
     ('bufsize "abc123"', "integer"), ("bufsize 512 512", "one SIZE"), ("bufsize {\n 1\n}", "no block")],
)  # fmt: skip
def test_errors(text: str, match: str) -> None:
    fails(setup.parse, text, match)


def run(payload: int | None, size: int = 1024) -> tuple[bytes, dns.message.Message, int]:
    q = dns.message.make_query(
        ".",
        "A",
        use_edns=0 if payload is not None else False,
        payload=payload or 512,
        want_dnssec=payload is not None,
    )
    data = q.to_wire()
    out, pq = clamp(data, parse_query(data), size)
    return out, dns.message.from_wire(out), pq.udp_size


def test_limits_a_larger_size() -> None:
    data, m, udp = run(1024 + 128)
    assert m.payload == 1024 and udp == 1024 and m.flags & 0 == 0 and m.ednsflags & 0x8000  # DO kept


def test_does_not_raise_a_smaller_size() -> None:
    data, m, udp = run(1024 - 128)
    assert m.payload == 896 and udp == 896
    data, m, udp = run(100)
    assert m.payload == 100 and udp == 512


def test_adds_no_opt() -> None:
    data, m, udp = run(None)
    assert m.edns == -1 and udp == 512


def test_readme_examples() -> None:
    readme = ". {\n    bufsize 1100\n    forward . 172.31.0.10\n    log\n}\n. {\n    bufsize 1220\n    file db.example.org\n    log\n}\n"
    assert [setup.parse(d) for d in directives_in(readme, "bufsize")] == [1100, 1220]
