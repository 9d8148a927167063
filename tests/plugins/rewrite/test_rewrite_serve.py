"""rewrite end to end: ``nodelocaldns serve`` with cache in front of real upstreams.

What the upstream received is read from unbound's query log (names) or from a recording UDP
server (EDNS options); what the client gets is read with dnspython.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from support.recorder import recording_upstream
from support.server import serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]

ZONES = {
    "cluster.local.": [
        "web.default.svc.cluster.local. 30 IN A 198.18.1.1",
        "web.default.svc.cluster.local. 30 IN A 198.18.1.2",
        "alias.cluster.local. 30 IN CNAME old.target.cluster.local.",
        "old.target.cluster.local. 30 IN A 198.18.1.8",
        "new.target.cluster.local. 30 IN A 198.18.1.9",
        "ptr.cluster.local. 30 IN PTR web.default.svc.cluster.local.",
        "long.cluster.local. 3000 IN A 198.18.1.5",
    ]
}


def block(rules: str, up: str) -> str:
    return f".:{{PORT}} {{\n    bind 127.0.0.1\n    cache 30\n{rules}\n    forward . {up}\n}}\n"


def answers(m: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rr in m.answer)


def test_name_rewrite_reaches_upstream_and_the_cache_keeps_the_clients_question(
    make_unbound: MakeUnbound,
) -> None:
    up = make_unbound(ZONES)
    rules = "    rewrite name suffix .svc.example.org. .svc.cluster.local. answer auto"
    with serve(block(rules, up.address)) as s:
        for _ in range(3):
            r = s.query("WEB.default.svc.example.org.")
            assert r.rcode() == dns.rcode.NOERROR
            assert r.question[0].name.to_text() == "WEB.default.svc.example.org."
            assert {rr.name.to_text().lower() for rr in r.answer} == {"web.default.svc.example.org."}
            assert sorted(a.address for rrs in r.answer for a in rrs) == ["198.18.1.1", "198.18.1.2"]
        # The upstream saw the rewritten name once: the other two were cache hits of the reverted reply.
        assert up.query_count("web.default.svc.cluster.local.", "A") == 1
        assert up.query_count("web.default.svc.example.org.") == 0


def test_without_answer_rules_the_owner_names_stay_rewritten(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    rules = """    rewrite name exact red.example. web.default.svc.cluster.local.
    rewrite name substring .blue. .svc."""
    with serve(block(rules, up.address)) as s:
        r = s.query("web.default.blue.cluster.local.")
        assert r.question[0].name.to_text() == "web.default.blue.cluster.local."
        assert {rr.name.to_text() for rr in r.answer} == {"web.default.svc.cluster.local."}
        # An exact rule reverts the owner names as if it said ``answer auto`` (CoreDNS).
        r = s.query("red.example.")
        assert {rr.name.to_text() for rr in r.answer} == {"red.example."}


def test_answer_name_and_value_rules(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    rules = """    rewrite stop {
        name regex (.*)\\.example\\.net\\. {1}.cluster.local.
        answer name (.*)\\.cluster\\.local\\. {1}.example.net.
        answer value (.*)\\.svc\\.cluster\\.local\\. {1}.svc.example.net.
    }"""
    with serve(block(rules, up.address)) as s:
        r = s.query("ptr.example.net.", "PTR")
        assert [rr.to_text() for rr in r.answer] == [
            "ptr.example.net. 30 IN PTR web.default.svc.example.net."
        ]


def test_type_ttl_and_rcode_rules(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    rules = """    rewrite continue ttl exact long.cluster.local. 10-20
    rewrite continue rcode exact nothere.cluster.local. NXDOMAIN NOERROR
    rewrite type MX A"""
    with serve(block(rules, up.address)) as s:
        r = s.query("long.cluster.local.")
        assert [rr.ttl for rr in r.answer] == [20]  # 3000 clamped by the rule, below the cache cap of 30
        assert s.query("nothere.cluster.local.").rcode() == dns.rcode.NOERROR
        r = s.query("web.default.svc.cluster.local.", "MX")
        assert r.question[0].rdtype == dns.rdatatype.MX  # reverted: the client's own question
        assert sorted(a.address for rrs in r.answer for a in rrs) == ["198.18.1.1", "198.18.1.2"]
        assert up.query_count("web.default.svc.cluster.local.", "MX") == 0


def test_cname_rule_resolves_the_new_target_through_the_chain(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    rules = "    rewrite cname exact old.target.cluster.local. new.target.cluster.local."
    with serve(block(rules, up.address)) as s:
        r = s.query("alias.cluster.local.")
        got = [rr.to_text() for rr in r.answer]
        assert got == [
            "alias.cluster.local. 30 IN CNAME new.target.cluster.local.",
            "new.target.cluster.local. 30 IN A 198.18.1.9",
        ], got
        assert up.query_count("new.target.cluster.local.", "A") == 1


def _option(m: dns.message.Message, code: int) -> bytes | None:
    for o in m.options:
        if int(o.otype) == code:
            return o.to_wire()
    return None


def test_edns0_local_nsid_and_subnet_change_what_the_upstream_receives() -> None:
    with recording_upstream() as rec:
        rules = """    rewrite continue edns0 local set 0xffee 0x61626364
    rewrite continue edns0 nsid set
    rewrite edns0 subnet set 24 56"""
        with serve(block(rules, rec.hostport)) as s:
            r = s.query("edns.example.", use_edns=0)
            assert [a.address for rrs in r.answer for a in rrs] == [rec.address]
            assert _option(r, 0xFFEE) is None  # nothing of the rewrite comes back to the client
            (seen,) = [m for m in rec.received if m.question[0].name.to_text() == "edns.example."]
            assert _option(seen, 0xFFEE) == b"abcd"
            assert _option(seen, 3) == b""
            assert _option(seen, 8) == bytes.fromhex("0001 1800 7f0000")  # 127.0.0.1/24, family 1


def test_edns0_rule_gives_a_query_without_opt_one(make_unbound: MakeUnbound) -> None:
    with recording_upstream() as rec:
        with serve(block("    rewrite edns0 local set 0xffee {client_ip}", rec.hostport)) as s:
            r = s.query("plain.example.")  # no OPT from the client
            assert r.edns < 0  # and none in its reply
            (seen,) = [m for m in rec.received if m.question[0].name.to_text() == "plain.example."]
            assert seen.edns == 0 and seen.payload == 4096 and _option(seen, 0xFFEE) == bytes([127, 0, 0, 1])


def test_invalid_name_after_rewrite_is_servfail(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    with serve(block("    rewrite name regex (.*)\\.bad\\. {1}..invalid.", up.address)) as s:
        assert s.query("x.bad.").rcode() == dns.rcode.SERVFAIL
