"""rewrite_query/Reverter on real dnspython messages: CoreDNS's rewrite_test/ttl_test/cname_target_test."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from nodelocaldns.plugins.rewrite.engine import RewriteFailed, rewrite_query
from nodelocaldns.plugins.rewrite.rules import Peer
from nodelocaldns.plugins.rewrite.setup import RewriteConfig, new_rule


def rules(*lines: str) -> RewriteConfig:
    return RewriteConfig(tuple(new_rule(line.split()) for line in lines))


def printer(query_wire: bytes, answer: list[str] | None = None, rcode: int = 0) -> bytes:
    """CoreDNS's msgPrinter: the query echoed as a reply with 'QNAME 5 IN A 10.0.0.1' if no answer."""
    q = dns.message.from_wire(query_wire)
    reply = echo(q)
    reply.set_rcode(rcode)
    if answer is None:
        answer = [f"{q.question[0].name} 5 IN A 10.0.0.1"]
    for text in answer:
        reply.answer.append(dns.rrset.from_text(*_split(text)))
    return reply.to_wire()


def echo(query: dns.message.Message) -> dns.message.Message:
    """A reply that echoes the query's EDNS flags and options, as an option-echoing upstream does."""
    reply = dns.message.make_response(query)
    if query.edns >= 0:
        reply.use_edns(0, query.ednsflags, 1232, options=query.options)
    return reply


def _split(text: str) -> list[str]:
    name, ttl, cls, typ, *rdata = text.split()
    return [name, ttl, cls, typ, " ".join(rdata)]


def q(name: str, rdtype: str | int = "A", rdclass: str | int = "IN", **kw: object) -> bytes:
    return dns.message.make_query(name, rdtype, rdclass, **kw).to_wire()  # type: ignore[arg-type]


COREDNS_RULES = rules(
    "stop name from.nl. to.nl.",
    "stop name regex (core)\\.(dns)\\.(rocks)\\.(nl) {2}.{1}.{3}.{4} answer name (dns)\\.(core)\\.(rocks)\\.(nl) {2}.{1}.{3}.{4}",
    "stop name exact from.exact.nl. to.nl.",
    "stop name prefix prefix to",
    "stop name suffix .suffix. .nl.",
    "stop name substring from.substring to",
    "stop name regex (f.*m)\\.regex\\.(nl) to.{2}",
    "continue name regex consul\\.(rocks) core.dns.{1}",
    "stop name core.dns.rocks to.nl.",
    "continue class HS CH",
    "stop class CH IN",
    "stop type ANY HINFO",
)


@pytest.mark.parametrize(
    ("frm", "ftype", "fclass", "to", "ttype", "tclass"),
    [
        ("from.nl.", "A", "IN", "to.nl.", "A", "IN"),
        ("a.nl.", "A", "IN", "a.nl.", "A", "IN"),
        ("a.nl.", "A", "CH", "a.nl.", "A", "IN"),
        ("a.nl.", "ANY", "IN", "a.nl.", "HINFO", "IN"),
        ("from.nl.", "ANY", "IN", "to.nl.", "ANY", "IN"),  # name is rewritten, type is not
        ("from.exact.nl.", "A", "IN", "to.nl.", "A", "IN"),
        ("prefix.nl.", "A", "IN", "to.nl.", "A", "IN"),
        ("to.suffix.", "A", "IN", "to.nl.", "A", "IN"),
        ("from.substring.nl.", "A", "IN", "to.nl.", "A", "IN"),
        ("from.regex.nl.", "A", "IN", "to.nl.", "A", "IN"),
        ("consul.rocks.", "A", "IN", "to.nl.", "A", "IN"),  # continue, then the stop rule after it
        ("a.nl.", "ANY", "CH", "a.nl.", "ANY", "IN"),  # class is the earlier rule and stops
        ("a.nl.", "ANY", "HS", "a.nl.", "ANY", "IN"),  # HS->CH (continue), CH->IN (stop)
        ("core.dns.rocks.nl.", "A", "IN", "dns.core.rocks.nl.", "A", "IN"),
    ],
)
def test_coredns_rewrite_table_forwarded_query(
    frm: str, ftype: str, fclass: str, to: str, ttype: str, tclass: str
) -> None:
    out, _ = rewrite_query(COREDNS_RULES, q(frm, ftype, fclass))
    (question,) = dns.message.from_wire(out).question
    assert (question.name.to_text(), question.rdtype, question.rdclass) == (
        to,
        dns.rdatatype.from_text(ttype),
        dns.rdataclass.from_text(tclass),
    )


@pytest.mark.parametrize(
    ("frm", "answer_name"),
    [
        ("prefix.nl.", "to.nl."),
        ("to.suffix.", "to.nl."),
        ("from.substring.nl.", "to.nl."),
        ("from.regex.nl.", "to.nl."),
    ],
)
def test_default_revert_restores_question_only(frm: str, answer_name: str) -> None:
    cfg = rules(
        "stop name prefix prefix to",
        "stop name suffix .suffix. .nl.",
        "stop name substring from.substring to",
        "stop name regex (f.*m)\\.regex\\.(nl) to.{2}",
    )
    query = q(frm)
    out, rev = rewrite_query(cfg, query)
    reply = dns.message.from_wire(rev.revert(printer(out)))
    assert reply.question[0].name.to_text() == frm
    assert reply.answer[0].name.to_text() == answer_name  # no answer rule: answers keep the new name


def test_exact_rule_reverts_answers_and_keeps_client_case() -> None:
    query = q("RED.example.")
    out, rev = rewrite_query(rules("name exact red.example. blue.example."), query)
    assert dns.message.from_wire(out).question[0].name.to_text() == "blue.example."
    reply_wire = rev.revert(printer(out))
    reply = dns.message.from_wire(reply_wire)
    assert reply.question[0].name.to_text() == "RED.example."  # the client's own question, byte for byte
    assert reply_wire[12 : 12 + len(b"\x03RED\x07example\x00")] == b"\x03RED\x07example\x00"
    assert reply.answer[0].to_text() == "red.example. 5 IN A 10.0.0.1"  # auto: the lowercased original


def test_readme_regex_with_answer_name() -> None:
    cfg = rules(
        "stop name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul "
        "answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.coredns.rocks"
    )
    out, rev = rewrite_query(cfg, q("ftp-us-west-1.coredns.rocks."))
    assert dns.message.from_wire(out).question[0].name.to_text() == "ftp.service.us-west-1.consul."
    answers = [f"ftp.service.us-west-1.consul. 0 IN A 10.{i}0.{i}0.{i}0" for i in (1, 2, 3)]
    reply = dns.message.from_wire(rev.revert(printer(out, answers)))
    assert [rr.name.to_text() for rr in reply.answer] == ["ftp-us-west-1.coredns.rocks."]
    assert len(reply.answer[0]) == 3


def test_readme_ptr_value_rewrite() -> None:
    cfg = RewriteConfig(
        (
            new_rule(
                "stop name suffix .arpa .arpa answer name auto answer value (.*)\\.service\\.consul\\. {1}.coredns.rocks.".split()
            ),
        )
    )
    # "answer name auto" is not valid CoreDNS syntax for auto ("auto" alone is); the README's block has it.
    assert cfg.rules


def test_suffix_answer_auto_reverses_names_and_values() -> None:
    out, rev = rewrite_query(
        rules("stop name suffix .coredns.rocks .service.consul answer auto"), q("web.coredns.rocks.", "SRV")
    )
    assert dns.message.from_wire(out).question[0].name.to_text() == "web.service.consul."
    reply = rev.revert(printer(out, ["web.service.consul. 5 IN SRV 0 0 80 node1.service.consul."]))
    assert (
        dns.message.from_wire(reply).answer[0].to_text()
        == "web.coredns.rocks. 5 IN SRV 0 0 80 node1.coredns.rocks."
    )


def test_invalid_name_after_rewrite_is_servfail() -> None:
    with pytest.raises(RewriteFailed) as e:
        rewrite_query(rules("name regex (.*) {1}..x"), q("a.example."))
    assert e.value.rcode == 2


def test_no_match_returns_the_same_bytes_and_passes_reply_through() -> None:
    query = q("other.example.")
    out, rev = rewrite_query(COREDNS_RULES, query)
    assert out is query and not rev.active
    reply = printer(query)
    assert rev.revert(reply) is reply


def test_continue_rule_alone_does_not_revert_question() -> None:
    # CoreDNS passes its original writer on when no stop rule matched and no response rule exists.
    out, rev = rewrite_query(rules("continue type A AAAA"), q("a.example."))
    assert not rev.active
    assert dns.message.from_wire(rev.revert(printer(out))).question[0].rdtype == dns.rdatatype.AAAA
    out, rev = rewrite_query(rules("stop type A AAAA"), q("a.example."))
    assert dns.message.from_wire(rev.revert(printer(out))).question[0].rdtype == dns.rdatatype.A


TTL_RULES = rules(
    "stop ttl srv1.coredns.rocks 1",
    "stop ttl exact srv15.coredns.rocks 15",
    "stop ttl prefix srv30 30",
    "stop ttl suffix 45.coredns.rocks 45",
    "stop ttl substring rv50 50",
    "stop ttl regex (srv10)\\.(coredns)\\.(rocks) 10",
    "stop ttl regex (srv20)\\.(coredns)\\.(rocks) 20",
    "stop ttl range.example.com. 30-300",
    "stop ttl ceil.example.com. -11",
    "stop ttl floor.example.com. 5-",
)


@pytest.mark.parametrize(
    ("name", "rdtype", "answer", "ttl"),
    [
        ("srv1.coredns.rocks.", "A", ["srv1.coredns.rocks. 5 IN A 10.0.0.1"], 1),
        ("srv15.coredns.rocks.", "A", ["srv15.coredns.rocks. 5 IN A 10.0.0.15"], 15),
        ("srv30.coredns.rocks.", "A", ["srv30.coredns.rocks. 5 IN A 10.0.0.30"], 30),
        ("srv45.coredns.rocks.", "A", ["srv45.coredns.rocks. 5 IN A 10.0.0.45"], 45),
        ("srv50.coredns.rocks.", "A", ["srv50.coredns.rocks. 5 IN A 10.0.0.50"], 50),
        ("srv10.coredns.rocks.", "A", ["srv10.coredns.rocks. 5 IN A 10.0.0.10"], 10),
        ("xmpp.coredns.rocks.", "SRV", ["xmpp.coredns.rocks. 5 IN SRV 0 100 100 srvxmpp.coredns.rocks."], 5),
        ("srv15.coredns.rocks.", "HINFO", ['srv15.coredns.rocks. 5 IN HINFO INTEL-64 "RHEL 7.5"'], 15),
        (
            "srv20.coredns.rocks.",
            "A",
            ["srv20.coredns.rocks. 5 IN A 10.0.0.22", "srv20.coredns.rocks. 5 IN A 10.0.0.23"],
            20,
        ),
        ("range.example.com.", "A", ["range.example.com. 5 IN A 10.0.0.1"], 30),
        ("range.example.com.", "A", ["range.example.com. 55 IN A 10.0.0.1"], 55),
        ("range.example.com.", "A", ["range.example.com. 500 IN A 10.0.0.1"], 300),
        ("ceil.example.com.", "A", ["ceil.example.com. 5 IN A 10.0.0.1"], 5),
        ("ceil.example.com.", "A", ["ceil.example.com. 15 IN A 10.0.0.1"], 11),
        ("floor.example.com.", "A", ["floor.example.com. 0 IN A 10.0.0.1"], 5),
        ("floor.example.com.", "A", ["floor.example.com. 30 IN A 10.0.0.1"], 30),
    ],
)
def test_coredns_ttl_table(name: str, rdtype: str, answer: list[str], ttl: int) -> None:
    out, rev = rewrite_query(TTL_RULES, q(name, rdtype))
    reply = dns.message.from_wire(rev.revert(printer(out, answer)))
    assert {rr.ttl for rr in reply.answer} == {ttl}


def test_ttl_rule_leaves_edns_flags_alone() -> None:
    out, rev = rewrite_query(rules("ttl a.example. 30-300"), q("a.example.", use_edns=0, want_dnssec=True))
    reply = dns.message.from_wire(rev.revert(printer(out)))
    assert reply.answer[0].ttl == 30 and reply.ednsflags & dns.flags.DO


@pytest.mark.parametrize(
    ("rcode", "want"), [(dns.rcode.SERVFAIL, dns.rcode.NOERROR), (dns.rcode.NXDOMAIN, dns.rcode.NXDOMAIN)]
)
def test_rcode_rule_also_without_records(rcode: int, want: int) -> None:
    out, rev = rewrite_query(
        rules("continue rcode regex (.*)\\.coredns\\.rocks SERVFAIL NOERROR"), q("a.coredns.rocks.")
    )
    reply = dns.message.from_wire(rev.revert(printer(out, [], rcode)))
    assert reply.rcode() == want


MOCK_UPSTREAM = {
    ("xyz.example.com.", 1): ["xyz.example.com. 3600 IN A 3.4.5.6"],
    ("xyz.example.com.", 28): ["xyz.example.com. 3600 IN AAAA 3a01:7e00::f03c:91ff:fe79:234c"],
    ("bard.google.com.cdn.cloudflare.net.", 1): ["bard.google.com.cdn.cloudflare.net. 1800 IN A 9.7.2.1"],
    ("www.hosting.xyz.", 1): ["www.hosting.xyz. 500 IN A 20.30.40.50"],
    ("abcd.zzzz.www.pqrst.", 1): [
        "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.1",
        "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.2",
    ],
    ("orders.webapp.eu.org.", 1): ["orders.webapp.eu.org. 120 IN A 20.0.0.9"],
    ("music.truncated.spotify.com.", 1): ["music.truncated.spotify.com. 120 IN A 10.1.0.9"],
    ("intermediate-2.staging.", 1): [
        "intermediate-2.staging. 200 IN CNAME final.staging.net.",
        "final.staging.net. 120 IN A 5.6.7.8",
    ],
}
CNAME_RULES = rules(
    "continue cname exact def.example.com xyz.example.com",
    "continue cname prefix chat.openai.com bard.google.com",
    "continue cname suffix uvw. xyz.",
    "continue cname substring efgh zzzz.www",
    "continue cname regex (.*)\\.web\\.(.*)\\.site\\. {1}.webapp.{2}.org.",
    "continue cname exact music.truncated.spotify.com. music.truncated.spotify.com.",
    "continue cname suffix prod. staging.",
)


@pytest.mark.parametrize(
    ("name", "rdtype", "answer", "expected", "tc"),
    [
        ("abc.example.com.", "A", ["abc.example.com. 5 IN CNAME def.example.com.", "def.example.com. 5 IN A 1.2.3.4"],
         ["abc.example.com. 5 IN CNAME xyz.example.com.", "xyz.example.com. 3600 IN A 3.4.5.6"], False),
        ("abc.example.com.", "AAAA", ["abc.example.com. 5 IN CNAME def.example.com.", "def.example.com. 5 IN AAAA 2a01:7e00::f03c:91ff:fe79:234c"],
         ["abc.example.com. 5 IN CNAME xyz.example.com.", "xyz.example.com. 3600 IN AAAA 3a01:7e00::f03c:91ff:fe79:234c"], False),
        ("chat.openai.com.", "A", ["chat.openai.com. 20 IN CNAME chat.openai.com.cdn.cloudflare.net.", "chat.openai.com.cdn.cloudflare.net. 30 IN A 23.2.1.2", "chat.openai.com.cdn.cloudflare.net. 30 IN A 24.6.0.8"],
         ["chat.openai.com. 20 IN CNAME bard.google.com.cdn.cloudflare.net.", "bard.google.com.cdn.cloudflare.net. 1800 IN A 9.7.2.1"], False),
        ("coredns.io.", "A", ["coredns.io. 100 IN CNAME www.hosting.uvw.", "www.hosting.uvw. 200 IN A 7.2.3.4"],
         ["coredns.io. 100 IN CNAME www.hosting.xyz.", "www.hosting.xyz. 500 IN A 20.30.40.50"], False),
        ("core.dns.rocks.", "A", ["core.dns.rocks. 200 IN CNAME abcd.efgh.pqrst.", "abcd.efgh.pqrst. 100 IN A 200.30.45.67"],
         ["core.dns.rocks. 200 IN CNAME abcd.zzzz.www.pqrst.", "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.1", "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.2"], False),
        ("order.service.eu.", "A", ["order.service.eu. 200 IN CNAME orders.web.eu.site.", "orders.web.eu.site. 50 IN A 10.10.15.1"],
         ["order.service.eu. 200 IN CNAME orders.webapp.eu.org.", "orders.webapp.eu.org. 120 IN A 20.0.0.9"], False),
        ("music.spotify.com.", "A", ["music.spotify.com. 200 IN CNAME music.truncated.spotify.com."],
         ["music.spotify.com. 200 IN CNAME music.truncated.spotify.com.", "music.truncated.spotify.com. 120 IN A 10.1.0.9"], True),
        ("cname-chain.org.", "A", ["cname-chain.org. 200 IN CNAME intermediate-1.com.", "intermediate-1.com. 200 IN CNAME intermediate-2.prod.", "intermediate-2.prod. 200 IN CNAME final.prod.net.", "final.prod.net. 120 IN A 1.2.3.4"],
         ["cname-chain.org. 200 IN CNAME intermediate-1.com.", "intermediate-1.com. 200 IN CNAME intermediate-2.staging.", "intermediate-2.staging. 200 IN CNAME final.staging.net.", "final.staging.net. 120 IN A 5.6.7.8"], False),
    ],
)  # fmt: skip
def test_coredns_cname_target_table(
    name: str, rdtype: str, answer: list[str], expected: list[str], tc: bool
) -> None:
    out, rev = rewrite_query(CNAME_RULES, q(name, rdtype))
    reply = printer(out, answer)
    lookups = {}
    for key in rev.cname_lookups(reply):
        up = dns.message.make_response(dns.message.make_query(key[0], key[1]))
        for text in MOCK_UPSTREAM.get(key, []):
            up.answer.append(dns.rrset.from_text(*_split(text)))
        if key[0] == "music.truncated.spotify.com.":
            up.flags |= dns.flags.TC
        lookups[key] = up.to_wire()
    got = dns.message.from_wire(rev.revert(reply, lookups))
    assert [rr.to_text() for rs in got.answer for rr in _each(rs)] == expected
    assert bool(got.flags & dns.flags.TC) == tc


def _each(rrset: dns.rrset.RRset) -> list[dns.rrset.RRset]:
    return [dns.rrset.from_rdata(rrset.name, rrset.ttl, rd) for rd in rrset]


def test_cname_failed_lookup_leaves_reply() -> None:
    out, rev = rewrite_query(rules("cname exact def.example.com xyz.example.com"), q("abc.example.com."))
    reply = printer(out, ["abc.example.com. 5 IN CNAME def.example.com.", "def.example.com. 5 IN A 1.2.3.4"])
    got = dns.message.from_wire(rev.revert(reply))
    assert [rs.to_text() for rs in got.answer] == [
        "abc.example.com. 5 IN CNAME def.example.com.",
        "def.example.com. 5 IN A 1.2.3.4",
    ]


def _options(wire: bytes) -> list[tuple[int, bytes]]:
    m = dns.message.from_wire(wire)
    return [(int(o.otype), o.to_wire()) for o in m.options]


def test_edns0_local_set_adds_opt_and_revert_removes_it() -> None:
    out, rev = rewrite_query(rules("edns0 local set 0xffee 0x61626364 revert"), q("a.example."))
    m = dns.message.from_wire(out)
    assert m.edns == 0 and m.payload == 4096 and not m.ednsflags & dns.flags.DO
    assert _options(out) == [(0xFFEE, b"abcd")]
    # An upstream that echoes the option: the client does not see it.
    up = echo(m).to_wire()
    assert _options(up) == [(0xFFEE, b"abcd")]
    assert _options(rev.revert(up)) == []


def test_edns0_set_then_replace_revert_restores_previous_value() -> None:
    cfg = rules("continue edns0 local set 0xffee abcd", "edns0 local replace 0xffee bcde revert")
    out, rev = rewrite_query(cfg, q("a.example.", use_edns=0))
    assert _options(out) == [(0xFFEE, b"bcde")]
    echoed = echo(dns.message.from_wire(out)).to_wire()
    assert _options(rev.revert(echoed)) == [(0xFFEE, b"abcd")]


def test_edns0_subnet_and_variables_from_peer() -> None:
    peer = Peer(
        client_ip="192.168.17.42", client_port=5353, server_ip="10.0.0.1", server_port=53, protocol="tcp"
    )
    cfg = rules(
        "continue edns0 subnet set 24 56",
        "continue edns0 local set 0xffe1 {client_ip}",
        "edns0 local append 0xffe2 {protocol}",
    )
    out, _ = rewrite_query(cfg, q("a.example."), peer)
    assert _options(out) == [
        (8, b"\x00\x01\x18\x00\xc0\xa8\x11"),
        (0xFFE1, bytes([192, 168, 17, 42])),
        (0xFFE2, b"tcp"),
    ]
    out, _ = rewrite_query(
        rules("edns0 subnet set 24 56"), q("a.example."), Peer(client_ip="2001:db8:1:2::5")
    )
    assert _options(out) == [(8, b"\x00\x02\x38\x00" + bytes.fromhex("20010db8000100"))]


def test_edns0_nsid_unset_and_metadata_variable() -> None:
    query = q(
        "a.example.",
        use_edns=0,
        options=[dns.edns.GenericOption(3, b"x"), dns.edns.GenericOption(0xFFEE, b"y")],
    )
    out, _ = rewrite_query(rules("continue edns0 nsid replace", "edns0 local unset 0xffee"), query)
    assert _options(out) == [(3, b"")]
    out, rev = rewrite_query(
        rules("edns0 local set 0xffee {some-plugin/some-label}"), q("a.example.", use_edns=0)
    )
    assert _options(out) == [] and not rev.active  # no metadata plugin: ignored
