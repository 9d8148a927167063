"""Record reordering on the wire: CoreDNS loadbalance_test.go / weighted_test.go / prefer_test.go facts."""

from __future__ import annotations

import collections
import ipaddress
import itertools
import random

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from nodelocaldns.dns.message import RR, TYPE_A, decode
from nodelocaldns.plugins.loadbalance.setup import LoadBalanceConfig
from nodelocaldns.plugins.loadbalance.shuffle import apply, round_robin, shuffle_in_place, top_index
from nodelocaldns.plugins.loadbalance.weights import parse_weights


def rrset(text: str) -> dns.rrset.RRset:
    name, ttl, cls, typ, *rest = text.split()
    return dns.rrset.from_text(name, int(ttl), cls, typ, " ".join(rest))


def reply(answer: list[str], extra: list[str] = (), qtype: str = "SRV", rcode: int = 0, authority: list[str] = ()) -> bytes:  # type: ignore[assignment]  # fmt: skip
    m = dns.message.make_query("region2.skydns.test.", qtype)
    m.flags |= dns.flags.QR
    m.set_rcode(rcode)
    m.answer = [rrset(a) for a in answer]
    m.authority = [rrset(a) for a in authority]
    m.additional = [rrset(a) for a in extra]
    return m.to_wire()


def kinds(section: list[dns.rrset.RRset]) -> str:
    return "".join(
        {"CNAME": "c", "A": "a", "AAAA": "a", "MX": "m"}.get(dns.rdatatype.to_text(r.rdtype), "o")
        for r in section
    )


def out(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire, one_rr_per_rrset=True)


C = "cname{}.region2.skydns.test. 300 IN CNAME cname{}.region2.skydns.test."
A = "endpoint.region2.skydns.test. 300 IN A 10.240.0.{}"
AAAA = "endpoint.region2.skydns.test. 300 IN AAAA ::{}"
MX = "mx.region2.skydns.test. 300 IN MX 1 mx{}.region2.skydns.test."

RANDOM_CASES = [
    ([C.format(1, 2), C.format(2, 3), C.format(5, 6), C.format(6, 7), A.format(1), MX.format(1), MX.format(2), MX.format(3)], [],
     "ccccammm", ""),
    ([A.format(1), MX.format(1), C.format(1, 2)], [], "cam", ""),
    ([MX.format(1), A.format(1), A.format(2), MX.format(2), C.format(2, 3), A.format(3), MX.format(3)],
     [A.format(1), AAAA.format(1), MX.format(1), C.format(2, 3), MX.format(2), A.format(3), AAAA.format(2), MX.format(3)],
     "caaammm", "caaaammm"),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "extra", "want_answer", "want_extra"), RANDOM_CASES)
@pytest.mark.parametrize("seed", range(5))
def test_round_robin_sorts_cnames_first(answer: list[str], extra: list[str], want_answer: str, want_extra: str, seed: int) -> None:  # fmt: skip
    rng = random.Random(seed)
    m = out(apply(LoadBalanceConfig(), reply(answer, extra), lambda: rng.getrandbits(16)))
    assert kinds(m.answer) == want_answer and kinds(m.additional) == want_extra
    assert sorted(r.to_text() for r in m.answer) == sorted(rrset(a).to_text() for a in answer)


def test_non_noerror_and_xfr_are_untouched() -> None:
    data = reply([A.format(1), A.format(2), A.format(3)], rcode=dns.rcode.NXDOMAIN)
    assert apply(LoadBalanceConfig(), data, lambda: 0) is data
    data = reply([MX.format(1), A.format(1), A.format(2), C.format(2, 3)], qtype="AXFR")
    assert apply(LoadBalanceConfig(), data, lambda: 0) is data


def test_single_records_are_left_as_bytes() -> None:
    data = reply([A.format(1)])
    assert apply(LoadBalanceConfig(), data, lambda: 0) is data


def test_two_records_swap_on_even() -> None:
    recs = [RR(b"\x00", TYPE_A, 1, 1, bytes([10, 0, 0, i])) for i in (1, 2)]
    assert [r.rdata[3] for r in round_robin(recs, lambda: 2)] == [2, 1]
    assert [r.rdata[3] for r in round_robin(recs, lambda: 1)] == [1, 2]
    assert [r.rdata[3] for r in recs] == [1, 2]  # the input list is not modified


def test_shuffle_walk_is_coredns_fisher_yates() -> None:
    seq = iter([1, 0, 0])  # j=0: p=0+1%3=1 (swap 0,1); j=1: p=1+0 (stay); j=2: p=2
    recs = [RR(b"\x00", TYPE_A, 1, 1, bytes([10, 0, 0, i])) for i in (1, 2, 3)]
    shuffle_in_place(recs, lambda: next(seq))
    assert [r.rdata[3] for r in recs] == [2, 1, 3]


def test_round_robin_covers_every_permutation() -> None:
    rng = random.Random(7)
    seen = collections.Counter()
    data = reply([A.format(1), A.format(2), A.format(3)], qtype="A")
    for _ in range(200):
        m = out(apply(LoadBalanceConfig(), data, lambda: rng.getrandbits(16)))
        seen[tuple(r[0].address for r in m.answer)] += 1
    assert set(seen) == set(itertools.permutations(["10.240.0.1", "10.240.0.2", "10.240.0.3"]))


def test_authority_is_shuffled_too() -> None:
    data = reply([], authority=["ns.test. 300 IN A 10.0.0.1", "ns.test. 300 IN A 10.0.0.2"], qtype="A")
    m = out(apply(LoadBalanceConfig(), data, lambda: 0))
    assert [r[0].address for r in m.authority] == ["10.0.0.2", "10.0.0.1"]


WEIGHTS = parse_weights("w1.example.org\n192.168.1.15 10\n192.168.1.14 20\n", "wf")


def weighted_reply(qtype: str = "A") -> bytes:
    m = dns.message.make_query("w1.example.org.", qtype)
    m.flags |= dns.flags.QR
    m.answer = [
        rrset("w1.example.org. 300 IN CNAME w1.example.org."),
        rrset("w1.example.org. 300 IN A 192.168.1.14"),
        rrset("w1.example.org. 300 IN A 192.168.1.15"),
        rrset("w1.example.org. 300 IN A 192.168.1.16"),
    ]
    return m.to_wire()


@pytest.mark.parametrize(("v", "top"), [(0, "192.168.1.14"), (19, "192.168.1.14"), (20, "192.168.1.15"),
                                        (29, "192.168.1.15"), (30, "192.168.1.16")])  # fmt: skip
def test_weighted_top_record(v: int, top: str) -> None:
    limits: list[int] = []

    def randbelow(n: int) -> int:
        limits.append(n)
        return v

    cfg = LoadBalanceConfig(policy="weighted", weight_file="wf")
    m = out(apply(cfg, weighted_reply(), lambda: 0, WEIGHTS, randbelow))
    assert limits == [31]  # 20 + 10 + default 1; additional section has no addresses
    assert m.answer[0].rdtype == dns.rdatatype.CNAME and m.answer[1][0].address == top
    assert len(m.answer) == 4


def test_weighted_ignores_other_qtypes_and_converges() -> None:
    cfg = LoadBalanceConfig(policy="weighted", weight_file="wf")
    data = weighted_reply("MX")
    assert out(apply(cfg, data, lambda: 0, WEIGHTS, lambda n: 0)).answer == out(data).answer
    addrs = [r for r in decode(weighted_reply()).answer if r.rtype == TYPE_A]
    rng = random.Random(3)
    tops = collections.Counter(addrs[top_index(addrs, WEIGHTS, rng.randrange)].rdata[3] for _ in range(3100))
    assert 1700 < tops[14] < 2300 and 800 < tops[15] < 1200 and tops[16] < 200


def test_top_index_default_weight() -> None:
    recs = [RR(b"\x00", TYPE_A, 1, 1, bytes([10, 0, 0, i])) for i in (1, 2)]
    assert top_index(recs, {}, lambda n: n - 1) == 1


def test_prefer_subnets_after_round_robin() -> None:
    cfg = LoadBalanceConfig(
        prefer=(ipaddress.ip_network("10.9.20.0/24"), ipaddress.ip_network("192.168.1.0/24"))
    )
    m = dns.message.make_query("x.test.", "A")
    m.flags |= dns.flags.QR
    m.answer = [rrset(f"x.test. 60 IN A {ip}") for ip in ("1.1.1.1", "192.168.1.5", "8.8.8.8", "10.9.20.7")]
    rng = random.Random(1)
    for _ in range(20):
        got = [r[0].address for r in out(apply(cfg, m.to_wire(), lambda: rng.getrandbits(16))).answer]
        assert got[:2] == ["10.9.20.7", "192.168.1.5"] and set(got[2:]) == {"1.1.1.1", "8.8.8.8"}


def test_reencoded_reply_keeps_opt_and_header() -> None:
    m = dns.message.make_query("x.test.", "A", use_edns=0, payload=1232)
    m.flags |= dns.flags.QR | dns.flags.RA
    m.answer = [rrset(f"x.test. 60 IN A 10.0.0.{i}") for i in range(1, 5)]
    data = m.to_wire()
    got = out(apply(LoadBalanceConfig(), data, lambda: 5))
    assert got.id == m.id and got.flags == m.flags and got.payload == 1232
    assert decode(data).question == decode(apply(LoadBalanceConfig(), data, lambda: 5)).question
