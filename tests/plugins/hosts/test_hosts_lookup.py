"""hosts answers, checked on the wire with dnspython: CoreDNS hosts_test.go cases plus the rcode rules."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from nodelocaldns.dns.wire import SERVFAIL, parse_query
from nodelocaldns.plugins.hosts.hostsfile import HostsTable, parse_hosts
from nodelocaldns.plugins.hosts.lookup import resolve
from nodelocaldns.plugins.hosts.setup import HostsConfig

EXAMPLE = """
127.0.0.1 localhost localhost.domain
::1 localhost localhost.domain
10.0.0.1 example.org
::FFFF:10.0.0.2 example.com
10.0.0.3 fallthrough-example.org
1.2.3.4 aa.example.com
5.6.7.8 *.apps.example.com
reload 5s
timeout 3600
"""


def ask(qname: str, qtype: str, cfg: HostsConfig | None = None, text: str = EXAMPLE,
        zones: tuple[str, ...] = (".",), inline: str = "") -> tuple[dns.message.Message, dns.message.Message | int | None]:  # fmt: skip
    cfg = cfg or HostsConfig()
    table = HostsTable(
        parse_hosts(text, zones, cfg.auto_reverse), parse_hosts(inline, zones, cfg.auto_reverse)
    )
    query = dns.message.make_query(qname, qtype)
    query.flags |= dns.flags.CD
    data = query.to_wire()
    out = resolve(data, parse_query(data), table, cfg, zones)
    return query, dns.message.from_wire(out) if isinstance(out, bytes) else out


CASES = [
    ("example.org.", "A", ["example.org. 3600 IN A 10.0.0.1"]),
    ("example.com.", "A", ["example.com. 3600 IN A 10.0.0.2"]),
    ("localhost.", "AAAA", ["localhost. 3600 IN AAAA ::1"]),
    ("1.0.0.10.in-addr.arpa.", "PTR", ["1.0.0.10.in-addr.arpa. 3600 IN PTR example.org."]),
    ("2.0.0.10.in-addr.arpa.", "PTR", ["2.0.0.10.in-addr.arpa. 3600 IN PTR example.com."]),
    ("1.0.0.127.in-addr.arpa.", "PTR",
     ["1.0.0.127.in-addr.arpa. 3600 IN PTR localhost.", "1.0.0.127.in-addr.arpa. 3600 IN PTR localhost.domain."]),
    ("example.org.", "AAAA", []),
    ("example.org.", "MX", []),
    ("apps.example.com.", "A", []),
    ("x.apps.example.com.", "A", ["x.apps.example.com. 3600 IN A 5.6.7.8"]),
    ("aa.example.com.", "A", ["aa.example.com. 3600 IN A 1.2.3.4"]),
]  # fmt: skip


@pytest.mark.parametrize(("qname", "qtype", "answer"), CASES)
def test_hosts_answers(qname: str, qtype: str, answer: list[str]) -> None:
    query, reply = ask(qname, qtype)
    if qname == "apps.example.com.":  # not in the table at all: no SOA, so SERVFAIL
        assert reply == SERVFAIL
        return
    assert isinstance(reply, dns.message.Message)
    assert reply.id == query.id and reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA and reply.flags & dns.flags.QR and reply.flags & dns.flags.RD
    assert reply.flags & dns.flags.CD and not reply.flags & dns.flags.RA
    assert reply.question == query.question
    got = sorted(line for rrset in reply.answer for line in rrset.to_text().splitlines())
    assert got == sorted(" ".join(a.split()) for a in answer)
    assert reply.authority == [] and reply.additional == []


def test_unknown_name_is_servfail_or_falls_through() -> None:
    assert ask("nothere.example.org.", "A")[1] == SERVFAIL
    assert ask("nothere.example.org.", "A", HostsConfig(fallthrough=(".",)))[1] is None
    assert ask("nothere.example.org.", "A", HostsConfig(fallthrough=("example.net.",)))[1] == SERVFAIL


def test_existing_name_with_other_type_is_nodata_even_with_fallthrough() -> None:
    _, reply = ask("fallthrough-example.org.", "AAAA", HostsConfig(fallthrough=(".",)))
    assert isinstance(reply, dns.message.Message)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == [] and reply.flags & dns.flags.AA


@pytest.mark.parametrize(
    ("qname", "fall", "unsupported", "falls"),
    [("example.org.", (".",), False, False), ("example.org.", (".",), True, True),
     ("example.org.", ("example.net.",), True, False), ("missing.example.org.", (".",), False, True)],
)  # fmt: skip
def test_fallthrough_unsupported_type(
    qname: str, fall: tuple[str, ...], unsupported: bool, falls: bool
) -> None:
    _, reply = ask(qname, "TXT", HostsConfig(fallthrough=fall, fallthrough_unsupported=unsupported))
    if falls:
        assert reply is None
    else:
        assert isinstance(reply, dns.message.Message) and reply.answer == [] and reply.flags & dns.flags.AA


def test_out_of_zone_goes_on_but_ptr_does_not_need_its_zone() -> None:
    assert ask("example.org.", "A", zones=("example.net.",))[1] is None
    _, reply = ask("1.0.0.10.in-addr.arpa.", "PTR", text="10.0.0.1 a.example.net", zones=("example.net.",))
    assert isinstance(reply, dns.message.Message)
    assert [rr.to_text() for rr in reply.answer[0]] == ["a.example.net."]


def test_unknown_ptr_goes_on_whatever_fallthrough_says() -> None:
    assert ask("9.9.9.9.in-addr.arpa.", "PTR")[1] is None
    assert ask("1.0.0.10.in-addr.arpa.", "PTR", HostsConfig(auto_reverse=False))[1] is None


def test_owner_names_are_lowercased_and_question_keeps_case() -> None:
    query, reply = ask("Example.ORG.", "A")
    assert isinstance(reply, dns.message.Message)
    assert reply.question[0].name.to_text() == "Example.ORG."
    assert reply.answer[0].name.to_text() == "example.org."


def test_ttl_and_inline_entries() -> None:
    _, reply = ask("example.org.", "A", HostsConfig(ttl=60), inline="10.0.0.9 example.org")
    assert isinstance(reply, dns.message.Message)
    assert [(r.ttl, [x.to_text() for x in r]) for r in reply.answer] == [(60, ["10.0.0.1", "10.0.0.9"])]


def test_other_classes_are_answered_with_class_in() -> None:
    query = dns.message.make_query("example.org.", "A", rdclass="CH")
    data = query.to_wire()
    cfg = HostsConfig()
    out = resolve(data, parse_query(data), HostsTable(parse_hosts(EXAMPLE, (".",))), cfg, (".",))
    assert isinstance(out, bytes)
    assert dns.message.from_wire(out).answer[0].rdclass == 1
