"""whoami: CoreDNS whoami_test.go / setup_test.go facts, checked on the wire with dnspython."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdatatype
import pytest

from nodelocaldns.dns.message import decode
from nodelocaldns.dns.wire import parse_query
from nodelocaldns.plugins.whoami import setup
from nodelocaldns.plugins.whoami.reply import answer
from support.directives import directive, directives_in, fails


def ask(qname: str, remote: tuple[str, int], proto: str = "udp", qtype: str = "A", rdclass: str = "IN") -> dns.message.Message:  # fmt: skip
    q = dns.message.make_query(qname, qtype, rdclass=rdclass)
    data = q.to_wire()
    out = dns.message.from_wire(answer(data, parse_query(data), remote, proto))
    assert out.id == q.id and out.question == q.question
    return out


@pytest.mark.parametrize(
    ("qname", "remote", "owners", "rtype"),
    [("example.org", ("10.240.0.1", 40212), ["example.org.", "_udp.example.org."], "A"),
     ("Example.ORG", ("10.240.0.1", 40212), ["Example.ORG.", "_udp.Example.ORG."], "A"),
     ("example.org", ("2003::1", 40212), ["example.org.", "_udp.example.org."], "AAAA"),
     ("Example.ORG", ("2003::1", 53), ["Example.ORG.", "_udp.Example.ORG."], "AAAA"),
     (".", ("::ffff:10.0.0.1", 1), [".", "_udp."], "A")],
)  # fmt: skip
def test_whoami(qname: str, remote: tuple[str, int], owners: list[str], rtype: str) -> None:
    out = ask(qname, remote)
    assert out.rcode() == 0 and out.answer == [] and out.authority == []
    assert out.flags & dns.flags.AA and out.flags & dns.flags.RD and not out.flags & dns.flags.RA
    assert [r.name.to_text() for r in out.additional] == owners
    addr, srv = out.additional
    assert dns.rdatatype.to_text(addr.rdtype) == rtype and addr.ttl == 0 and srv.ttl == 0
    assert addr[0].address == remote[0].removeprefix("::ffff:")
    assert (srv[0].priority, srv[0].weight, srv[0].port, srv[0].target.to_text()) == (0, 0, remote[1], ".")


def test_tcp_and_any_type() -> None:
    out = ask("example.org", ("127.0.0.1", 5353), proto="tcp", qtype="MX")
    assert out.additional[1].name.to_text() == "_tcp.example.org."


def test_records_take_the_query_class() -> None:
    # dnspython reads a CH-class A record as Chaosnet data, so look at the records with our decoder.
    data = dns.message.make_query("example.org", "TXT", rdclass="CH").to_wire()
    m = decode(answer(data, parse_query(data), ("127.0.0.1", 5353), "udp"))
    assert [(r.rtype, r.rclass, r.rdata) for r in m.additional] == [
        (1, 3, bytes([127, 0, 0, 1])),
        (33, 3, bytes([0, 0, 0, 0, 0x14, 0xE9, 0])),
    ]


def test_setup() -> None:
    assert setup.parse(directive("whoami")) is None
    fails(setup.parse, "whoami example.org", "no arguments")
    fails(setup.parse, "whoami {\n x\n}", "no arguments")
    assert len(directives_in("example.org {\n    whoami\n}\n", "whoami")) == 1
