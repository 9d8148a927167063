"""``serve_stale_policy prefer_positive`` (CoreDNS HEAD): a cached answer that is fresh or within
the serve_stale window wins over a denial or SERVFAIL cached for the same question.

The upstream is a real unbound that first answers and is then replaced, on the same port, by one
that says NXDOMAIN; the server runs in-process on a fake clock (support.inproc), so the expiry and
the end of the stale window are exact. Each scenario runs with and without the policy: without it
the denial wins, which is CoreDNS's default.
"""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset
import pytest

from nodelocaldns.dns.wire import parse_query as wire_query
from nodelocaldns.plugins.cache import setup
from nodelocaldns.plugins.cache.classify import DENIAL, SUCCESS, classify
from nodelocaldns.plugins.cache.entry import Entry
from nodelocaldns.plugins.cache.setup import CacheConfig
from nodelocaldns.plugins.cache.store import Store
from support.directives import directive, fails
from support.inproc import Harness, answer_ttls, inproc, query
from support.upstreams import UpstreamServer, unbound_server

NAME = "a.cluster.local."
ANSWER = {"cluster.local.": [f"{NAME} 30 IN A 198.18.0.1"]}
GONE: dict[str, list[str]] = {"cluster.local.": []}  # static zone, no record: NXDOMAIN with SOA


def corefile(up: UpstreamServer, stale: str, policy: bool) -> str:
    pol = "\n        serve_stale_policy prefer_positive" if policy else ""
    return (f".:{{PORT}} {{\n    bind 127.0.0.1\n    cache 30 {{\n        serve_stale {stale}{pol}\n    }}\n"
            f"    forward . {up.address}\n}}\n")  # fmt: skip


def rcode(reply: bytes) -> int:
    return dns.message.from_wire(reply).rcode()


def denial_cached(h: Harness) -> bool:
    return h.call(lambda: any(len(k) > 4 for k in h.cache().store.maps[DENIAL]))


@pytest.mark.parametrize("policy", [True, False], ids=["prefer_positive", "default"])
def test_immediate_keeps_serving_the_stale_answer_over_a_fresh_nxdomain(policy: bool) -> None:
    q = query(NAME, 1)
    with unbound_server(ANSWER) as up, inproc(corefile(up, "1h immediate", policy)) as h:
        assert rcode(h.udp(q)) == dns.rcode.NOERROR
        port = up.port
        up.stop()
        with unbound_server(GONE, port=port) as gone:
            h.advance(31)
            # Stale: the answer at TTL 0 at once, the refresh in the background brings NXDOMAIN.
            first = h.udp(q)
            assert rcode(first) == dns.rcode.NOERROR and answer_ttls(first) == [0]
            assert gone.wait_for_queries(1, name=NAME) == 1
            h.wait_until(lambda: denial_cached(h))
            again = [h.udp(q), h.tcp(q), h.slow(q)]
            if policy:
                # The answer is still within serve_stale: it wins over the cached NXDOMAIN.
                assert [rcode(r) for r in again] == [dns.rcode.NOERROR] * 3
                assert [answer_ttls(r) for r in again] == [[0]] * 3
            else:
                assert [rcode(r) for r in again] == [dns.rcode.NXDOMAIN] * 3


@pytest.mark.parametrize("policy", [True, False], ids=["prefer_positive", "default"])
def test_verify_serves_the_stale_answer_when_the_upstream_says_nxdomain(policy: bool) -> None:
    q = query(NAME, 1)
    with unbound_server(ANSWER) as up, inproc(corefile(up, "1h verify", policy)) as h:
        assert rcode(h.udp(q)) == dns.rcode.NOERROR
        port = up.port
        up.stop()
        with unbound_server(GONE, port=port) as gone:
            h.advance(31)
            # verify waits for the upstream; only an answer would replace the stale entry.
            r = h.slow(q)
            assert gone.query_count(NAME) == 1
            if policy:
                assert rcode(r) == dns.rcode.NOERROR and answer_ttls(r) == [0]
                # The NXDOMAIN was cached quietly; the answer keeps winning, without the upstream
                # being asked again while the denial is fresh... and verified again when stale.
                assert denial_cached(h)
                assert rcode(h.udp(q)) == dns.rcode.NOERROR
            else:
                assert rcode(r) == dns.rcode.NXDOMAIN
                assert rcode(h.udp(q)) == dns.rcode.NXDOMAIN


def test_the_answer_is_not_preferred_outside_the_stale_window() -> None:
    q = query(NAME, 1)
    with unbound_server(ANSWER) as up, inproc(corefile(up, "1m immediate", True)) as h:
        t0 = h.clock()
        assert rcode(h.udp(q)) == dns.rcode.NOERROR
        port = up.port
        up.stop()
        with unbound_server(GONE, port=port) as gone:
            h.advance(31)
            assert rcode(h.udp(q)) == dns.rcode.NOERROR
            gone.wait_for_queries(1, name=NAME)
            h.wait_until(lambda: denial_cached(h))
            h.advance(t0 + 89 - h.clock())  # 59 s past expiry: the last second of the window
            assert rcode(h.slow(q)) == dns.rcode.NOERROR
            h.advance(1)  # 60 s past expiry: CoreDNS's -ttl < staleUpTo no longer holds
            r = h.slow(q)
            assert rcode(r) == dns.rcode.NXDOMAIN


def test_a_new_answer_replaces_the_denial() -> None:
    q = query(NAME, 1)
    with unbound_server(ANSWER) as up, inproc(corefile(up, "1h immediate", True)) as h:
        assert rcode(h.udp(q)) == dns.rcode.NOERROR
        port = up.port
        up.stop()
        with unbound_server(GONE, port=port) as gone:
            h.advance(31)
            h.udp(q)
            gone.wait_for_queries(1, name=NAME)
            h.wait_until(lambda: denial_cached(h))
        with unbound_server(ANSWER, port=port) as back:
            h.advance(31)  # the denial (30 s) is stale too; the stale answer's refresh answers
            assert rcode(h.udp(q)) == dns.rcode.NOERROR
            back.wait_for_queries(1, name=NAME)
            h.wait_until(lambda: not denial_cached(h))
            r = h.udp(q)
            assert rcode(r) == dns.rcode.NOERROR and answer_ttls(r) == [30]


@pytest.mark.parametrize(
    ("body", "error", "line"),
    [
        ("serve_stale_policy prefer_positive", "serve_stale_policy requires serve_stale", 3),
        ("serve_stale\n serve_stale_policy", "serve_stale_policy takes one policy", 4),
        ("serve_stale\n serve_stale_policy prefer_negative", "invalid serve_stale_policy: prefer_negative", 4),
        ("serve_stale\n serve_stale_policy prefer_positive\n serve_stale_policy prefer_positive",
         "serve_stale_policy can only be specified once", 5),
    ],
)  # fmt: skip
def test_bad_policy_arguments_are_file_line_errors(body: str, error: str, line: int) -> None:
    fails(setup.parse, f"cache {{\n {body}\n}}", error, line)


@pytest.mark.parametrize(
    "body",
    ["serve_stale\n serve_stale_policy prefer_positive", "serve_stale_policy PREFER_POSITIVE\n serve_stale"],
)
def test_policy_parses_in_either_order_and_any_case(body: str) -> None:
    assert setup.parse(directive(f"cache {{\n {body}\n}}")).prefer_positive


# -- the store under the policy: last-known-good across replies that do not answer -----------------


def _entry(reply: dns.message.Message, now: float) -> tuple[Entry, bool]:
    data = reply.to_wire()
    q = wire_query(query(NAME, 1))
    verdict = classify(data, q.qname, q.qtype, CacheConfig())
    assert verdict.kind is not None, verdict.reason
    return Entry(data, verdict, now, False, False, 1), bool(reply.answer)


def _reply(kind: str) -> dns.message.Message:
    r = dns.message.make_response(dns.message.make_query(NAME, "A"))
    if kind == "answer":
        r.answer.append(dns.rrset.from_text(NAME, 30, "IN", "A", "198.18.0.1"))
    elif kind == "servfail":
        r.set_rcode(dns.rcode.SERVFAIL)
    elif kind == "nxdomain":
        r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(dns.rrset.from_text("cluster.local.", 30, "IN", "SOA", "ns. h. 1 2 3 4 30"))
    # "empty": NOERROR without records or SOA, which CoreDNS caches as a success that does not answer
    return r


def test_the_last_answer_survives_replies_that_do_not_answer() -> None:
    store, key, now = Store(100, 100), b"k", 1000.0
    answer, _ = _entry(_reply("answer"), now)
    store.put_preferring(key, answer, now, True)
    for i in range(3):  # each refresh brings an empty NOERROR: the answer stays the one served
        empty, answering = _entry(_reply("empty"), now + 10 * i)
        assert not answering
        store.put_preferring(key, empty, now + 10 * i, False)
        assert store.get_preferring(key, now + 10 * i, 3600) is answer
    assert store.sizes() == (1, 0)
    # Past its TTL and the stale window the answer is no longer eligible: the newest reply is.
    assert store.get_preferring(key, now + 30 + 3600, 3600) is None
    late, _ = _entry(_reply("empty"), now + 3620)
    store.put_preferring(key, late, now + 3620, False)
    assert store.get_preferring(key, now + 30 + 3600, 3600) is late
    # An answer replaces the retained one and the non-answer.
    fresh, _ = _entry(_reply("answer"), now + 3625)
    store.put_preferring(key, fresh, now + 3625, True)
    assert store.get_preferring(key, now + 3626, 3600) is fresh and not store.shadow


def test_denials_sit_next_to_the_answer_and_an_answer_removes_them() -> None:
    store, key, now = Store(100, 100), b"k", 1000.0
    answer, _ = _entry(_reply("answer"), now)
    store.put_preferring(key, answer, now, True)
    for kind in ("servfail", "nxdomain"):
        denial, _ = _entry(_reply(kind), now + 1)
        store.put_preferring(key, denial, now + 1, False)
        assert store.maps[DENIAL][key] is denial and store.maps[SUCCESS][key] is answer
        assert store.get_preferring(key, now + 2, 3600) is answer
        # Without the answer, the denial is what the key has.
        assert store.get_preferring(key, now + 31 + 3600, 3600) is None
    again, _ = _entry(_reply("answer"), now + 5)
    store.put_preferring(key, again, now + 5, True)
    assert key not in store.maps[DENIAL]
