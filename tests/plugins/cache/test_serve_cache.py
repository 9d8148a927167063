"""The cache plugin end to end: ``nodelocaldns serve`` in front of a real unbound, counted at the upstream.

Every option of ``cache`` is exercised against the real server process; what reached the upstream is read
from unbound's own query log, so "served from cache" means "unbound never saw it".
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.cache_e2e import (
    ZONES,
    corefile,
    ttl_of,
)
from support.ports import free_port
from support.server import Served, serve
from support.upstreams import UpstreamServer, closed_port

MakeUnbound = Callable[..., UpstreamServer]

ZONE_TYPES = {"wild.test.": "redirect"}  # every name under wild.test. answers with the apex A


def upstream(make_unbound: MakeUnbound, extra_conf: str = "") -> UpstreamServer:
    return make_unbound(ZONES, zone_types=ZONE_TYPES, extra_conf=extra_conf)


def servfail_conf(*zones: str) -> str:
    """unbound recurses for ``zones`` into a forwarder it is forbidden to query: a real SERVFAIL."""
    dead = closed_port()
    out = [f'local-zone: "{z}" transparent' for z in zones]  # server: options before any clause
    for z in zones:
        out += ["forward-zone:", f'  name: "{z}"', f"  forward-addr: 127.0.0.1@{dead.port}"]
    return "\n".join(out)


def http_get(port: int, path: str) -> str:
    """GET with a short retry: the HTTP endpoints may come up a moment after the DNS listener."""
    deadline = time.monotonic() + 3
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return str(r.read().decode())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = http_get(port, "/metrics")
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def dig(s: Served, *args: str) -> str:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(s.port), "+tries=1", "+timeout=2", *args],
                         capture_output=True, text=True, timeout=10)  # fmt: skip
    return out.stdout


def blast(port: int, names: Iterable[str], rdtype: str = "A", window: int = 64) -> list[dns.message.Message]:
    """Many queries over one UDP socket, ``window`` outstanding at a time (bounded, loopback only)."""
    names = list(names)
    replies: list[dns.message.Message] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect(("127.0.0.1", port))
        for i in range(0, len(names), window):
            batch = names[i : i + window]
            for n in batch:
                s.send(dns.message.make_query(n, rdtype).to_wire())
            for _ in batch:
                replies.append(dns.message.from_wire(s.recv(65535)))
    return replies


# -- the basics -----------------------------------------------------------------------------------


def test_identical_queries_reach_the_upstream_once(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        name = "web.default.svc.cluster.local."
        first = s.query(name)
        assert first.rcode() == dns.rcode.NOERROR and len(first.answer[0]) == 2
        for _ in range(20):
            r = s.query(name)
            assert sorted(str(rr) for rr in r.answer[0]) == ["198.18.1.1", "198.18.1.2"]
            assert r.flags & dns.flags.AA  # CoreDNS sets AA on every cache hit
        for _ in range(3):
            assert "198.18.1.1" in dig(s, name, "A", "+short")
            assert s.query(name, tcp=True).answer
        assert up.query_count(name) == 1


def test_question_case_is_echoed_on_miss_and_hit(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        spellings = ["WeB.DeFaUlT.sVc.ClUsTeR.LoCaL.", "web.default.svc.cluster.local.", "WEB.DEFAULT.SVC.CLUSTER.LOCAL.",
                     "wEb.default.svc.cluster.local."]  # fmt: skip
        for tcp in (False, True):
            for name in spellings:
                r = s.query(name, tcp=tcp)
                assert str(r.question[0].name) == name
                assert r.answer and r.rcode() == dns.rcode.NOERROR
        assert up.query_count("web.default.svc.cluster.local.") == 1
        assert "WeB.DeFaUlT.sVc.ClUsTeR.LoCaL." in dig(
            s, "WeB.DeFaUlT.sVc.ClUsTeR.LoCaL.", "+noall", "+question"
        )


def test_do_and_cd_are_cached_separately(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        name = "api.default.svc.cluster.local."
        for _ in range(3):
            s.query(name)
            s.query(name, use_edns=0, want_dnssec=True)
            s.query(name, flags=dns.flags.RD | dns.flags.CD)
            s.query(name, use_edns=0)  # EDNS without DO shares the plain entry
        assert up.query_count(name) == 3


def test_opt_in_the_reply_only_if_the_query_had_one(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        name = "web.default.svc.cluster.local."
        for tcp in (False, True, False):  # miss, then hits over both transports
            plain = s.query(name, tcp=tcp)
            assert plain.edns == -1 and plain.answer
            edns = s.query(name, tcp=tcp, use_edns=0, payload=1400)
            assert edns.edns == 0 and edns.payload == 1400 and edns.answer
            do = s.query(name, tcp=tcp, use_edns=0, want_dnssec=True)
            assert do.edns == 0 and do.ednsflags & dns.flags.DO
        assert up.query_count(name) == 2  # plain/EDNS share an entry; DO has its own


def test_fast_path_never_answers_one_qtype_with_another(make_unbound: MakeUnbound) -> None:
    # TYPE97 is 0x0061 on the wire, HTTPS 0x0041: they differ only in what lower() does to a byte.
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        for _ in range(2):
            r = s.query("t.cluster.local.", "TYPE97")
            assert r.answer[0].rdtype == 97
        for _ in range(3):
            r = s.query("t.cluster.local.", "HTTPS")
            assert r.answer and r.answer[0].rdtype == dns.rdatatype.HTTPS


# -- TTLs -----------------------------------------------------------------------------------------


def test_cache_ttl_caps_counts_down_and_expires(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 2", up)) as s:
        name = "web.default.svc.cluster.local."
        t0 = time.monotonic()
        assert ttl_of(s.query(name)) == 2  # every record gets the capped item TTL
        time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
        r = s.query(name)
        assert ttl_of(r) == 1 and r.answer[0].ttl == 1
        assert up.query_count(name) == 1
        time.sleep(max(0.0, t0 + 2.3 - time.monotonic()))
        assert ttl_of(s.query(name)) == 2
        assert up.query_count(name) == 2


def test_success_and_denial_ttl_and_minttl(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    cache = "cache {\n success 9984 20 10\n denial 9984 3\n }"
    with serve(corefile(cache, up)) as s:
        assert ttl_of(s.query("short.cluster.local.")) == 10  # 2 s record, MINTTL 10
        assert ttl_of(s.query("long.cluster.local.")) == 20  # 300 s record, TTL cap 20
        assert ttl_of(s.query("web.default.svc.cluster.local.")) == 20
        nx = s.query("missing.cluster.local.")
        assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].ttl == 3  # SOA 30 s, denial cap 3
        nodata = s.query("short.cluster.local.", "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority[0].ttl == 3
        for _ in range(3):
            assert s.query("missing.cluster.local.").rcode() == dns.rcode.NXDOMAIN
            assert ttl_of(s.query("short.cluster.local.")) <= 10
        assert up.query_count("missing.cluster.local.") == 1
        assert up.query_count("short.cluster.local.") == 2  # A and AAAA


def test_keepttl_versus_countdown(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    text = f"""
keep.cluster.local:{{PORT}} {{
    bind 127.0.0.1
    cache 30 {{
        keepttl
    }}
    forward . {up.address}
}}
.:{{PORT}} {{
    bind 127.0.0.1
    cache 30
    forward . {up.address}
}}
"""
    with serve(text) as s:
        t0 = time.monotonic()
        assert ttl_of(s.query("b.keep.cluster.local.")) == 30
        assert ttl_of(s.query("web.default.svc.cluster.local.")) == 30
        time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
        assert ttl_of(s.query("b.keep.cluster.local.")) == 30
        assert ttl_of(s.query("web.default.svc.cluster.local.")) == 29
        assert up.query_count("b.keep.cluster.local.") == 1


# -- what is (not) cached -------------------------------------------------------------------------


def test_disable_success_and_denial_by_zone(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    cache = "cache 30 {\n disable success sub.cluster.local\n disable denial\n }"
    with serve(corefile(cache, up)) as s:
        for _ in range(3):
            assert s.query("a.sub.cluster.local.").answer
            assert s.query("web.default.svc.cluster.local.").answer
            assert s.query("nope.cluster.local.").rcode() == dns.rcode.NXDOMAIN
        assert up.query_count("a.sub.cluster.local.") == 3
        assert up.query_count("web.default.svc.cluster.local.") == 1
        assert up.query_count("nope.cluster.local.") == 3


def test_cache_zones_argument(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30 sub.cluster.local", up)) as s:
        for _ in range(2):
            s.query("a.sub.cluster.local.")
            s.query("web.default.svc.cluster.local.")
        assert up.query_count("a.sub.cluster.local.") == 1
        assert up.query_count("web.default.svc.cluster.local.") == 2


def test_upstream_servfail_is_cached_for_the_servfail_duration(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound, servfail_conf("fail.test.", "nocache.test."))
    text = f"""
nocache.test:{{PORT}} {{
    bind 127.0.0.1
    cache 30 {{
        servfail 0
    }}
    forward . {up.address}
}}
.:{{PORT}} {{
    bind 127.0.0.1
    cache 30 {{
        servfail 2s
    }}
    forward . {up.address}
}}
"""
    with serve(text) as s:
        t0 = time.monotonic()
        for _ in range(3):
            assert s.query("x.fail.test.").rcode() == dns.rcode.SERVFAIL
            assert s.query("x.nocache.test.").rcode() == dns.rcode.SERVFAIL
        assert up.query_count("x.fail.test.") == 1
        assert up.query_count("x.nocache.test.") == 3
        time.sleep(max(0.0, t0 + 2.2 - time.monotonic()))
        assert s.query("x.fail.test.").rcode() == dns.rcode.SERVFAIL
        assert up.query_count("x.fail.test.") == 2


def test_servfail_from_a_failed_upstream_is_not_cached(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        name = "web.default.svc.cluster.local."
        up.stop()
        t0 = time.monotonic()
        assert s.query(name).rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - t0 < 1.5  # port closed: ICMP errors, no timeouts
        up.start()
        r = s.query(name, timeout=5)
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert up.query_count(name) == 1


def test_nxdomain_without_soa_is_not_cached(make_dnsmasq: Callable[..., UpstreamServer]) -> None:
    up = make_dnsmasq([("svc.cluster.local", "A", "198.18.3.1")])
    with serve(corefile("cache 30", up)) as s:
        for _ in range(3):
            assert s.query("gone.cluster.local.").rcode() == dns.rcode.NXDOMAIN
            nodata = s.query("svc.cluster.local.", "TXT")
            assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and not nodata.authority
            assert s.query("svc.cluster.local.").answer
        assert up.query_count("gone.cluster.local.") == 3  # dnsmasq adds no SOA: nothing to cache
        # An empty NOERROR without SOA is Typify's "other NOERROR" (NoError): CoreDNS caches it, 5 s.
        assert up.query_count("svc.cluster.local.", "TXT") == 1
        assert up.query_count("svc.cluster.local.", "A") == 1


def test_a_reply_the_cache_does_not_store_still_gets_its_ttls_capped(make_unbound: MakeUnbound) -> None:
    """CoreDNS rewrites every TTL to the cache's duration before it decides to store (WriteMsg)."""
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        for tcp in (False, True):
            r = s.query("alias.cluster.local.", tcp=tcp)
            assert r.answer and r.answer[0].rdtype == dns.rdatatype.CNAME
            assert r.answer[0].ttl == 30  # unbound said 300
        # A chain that does not end in the query type is not stored: each query reaches unbound.
        assert up.query_count("alias.cluster.local.") == 2


# -- size and truncation --------------------------------------------------------------------------


@pytest.mark.parametrize("extra", ["", "log", "prefetch_cache"])
def test_reply_opt_echoes_the_clients_udp_size_as_sent(make_unbound: MakeUnbound, extra: str) -> None:
    """CoreDNS SizeAndDo copies the client's OPT size, even below 512, on misses and on hits."""
    up = upstream(make_unbound)
    cache = "cache 30 {\n        prefetch 1\n    }" if extra == "prefetch_cache" else "cache 30"
    text = corefile(cache, up).replace(
        "bind 127.0.0.1", "bind 127.0.0.1\n    log" if extra == "log" else "bind 127.0.0.1"
    )
    with serve(text) as s:
        for size in (100, 1232, 100):
            for tcp in (False, True):
                r = s.query("api.default.svc.cluster.local.", use_edns=0, payload=size, tcp=tcp)
                assert r.answer and r.payload == size, (size, tcp, r.payload)
        nx = s.query("nothing.cluster.local.", use_edns=0, payload=100)
        assert nx.rcode() == dns.rcode.NXDOMAIN and nx.payload == 100


def test_big_answer_is_truncated_for_small_udp_clients_and_whole_over_tcp(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        name = "big.cluster.local."
        for payload in (None, 1232):  # misses: unbound truncates, we pass TC on and cache nothing
            kw = {} if payload is None else {"use_edns": 0, "payload": payload}
            r = s.query(name, "TXT", **kw)  # type: ignore[arg-type]
            assert r.flags & dns.flags.TC and not r.answer
            assert len(r.to_wire()) <= (payload or 512)
        full = s.query(name, "TXT", tcp=True)
        assert not full.flags & dns.flags.TC and len(full.answer[0]) == 40
        assert up.query_count(name) == 3
        # Now cached (from the TCP answer): each UDP client gets what fits its buffer.
        small = s.query(name, "TXT")
        assert small.flags & dns.flags.TC and not small.answer and small.edns == -1
        mid = s.query(name, "TXT", use_edns=0, payload=1232)
        assert mid.flags & dns.flags.TC and mid.edns == 0 and mid.payload == 1232
        huge = s.query(name, "TXT", use_edns=0, payload=65000)
        assert not huge.flags & dns.flags.TC and len(huge.answer[0]) == 40
        assert "flags: qr aa tc rd ra" in dig(s, name, "TXT", "+ignore", "+noedns")
        assert up.query_count(name) == 3


# -- capacity -------------------------------------------------------------------------------------


def test_capacity_rounds_to_1024_and_evicts(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    mport = free_port("tcp")
    with serve(corefile("cache 30 {\n success 1\n }", up, metrics=mport)) as s:
        names = [f"n{i}.wild.test." for i in range(1100)]
        replies = blast(s.port, names)
        assert all(r.answer for r in replies)
        m = scrape(mport)
        server = f"dns://127.0.0.1:{s.port}"
        assert metric(m, "coredns_cache_entries", server=server, type="success") == 1024
        assert metric(m, "coredns_cache_evictions_total", server=server, type="success") == 1100 - 1024
        assert metric(m, "coredns_cache_misses_total", server=server) == 1100 + 1  # +1: startup probe

        # FIFO: the oldest names were evicted, the newest still answer from cache.
        def wild() -> int:
            return sum(1 for q in up.queries() if q.name.endswith(".wild.test."))

        blast(s.port, names[-10:])
        assert wild() == 1100
        blast(s.port, names[:5])
        assert wild() == 1105


# -- prefetch and serve_stale ---------------------------------------------------------------------


def test_prefetch_refreshes_before_expiry(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    mport = free_port("tcp")
    # Item TTL 4, 50%: a hit with <= 2 s left refreshes; AMOUNT 1 hit is enough.
    with serve(corefile("cache 4 {\n prefetch 1 1m 50%\n }", up, metrics=mport)) as s:
        name = "web.default.svc.cluster.local."
        t0 = time.monotonic()
        assert ttl_of(s.query(name)) == 4
        assert ttl_of(s.query(name)) == 4  # too early: no refresh
        time.sleep(0.3)
        assert up.query_count(name) == 1
        time.sleep(max(0.0, t0 + 2.3 - time.monotonic()))
        assert ttl_of(s.query(name)) == 2  # served from the old item, refresh starts
        assert up.wait_for_queries(2, timeout=1.5, name=name) == 2
        assert time.monotonic() - t0 < 4  # the refresh landed before the item would have expired
        assert ttl_of(s.query(name)) == 4
        assert metric(scrape(mport), "coredns_cache_prefetch_total") == 1


def test_serve_stale_immediate_with_the_upstream_down(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    mport = free_port("tcp")
    with serve(corefile("cache 1 {\n serve_stale 1h\n }", up, metrics=mport)) as s:
        name = "web.default.svc.cluster.local."
        assert ttl_of(s.query(name)) == 1
        time.sleep(1.1)
        r = s.query(name)  # upstream up: stale answer now, refresh behind it
        assert r.rcode() == dns.rcode.NOERROR and ttl_of(r) == 0
        assert up.wait_for_queries(2, timeout=2, name=name) == 2
        up.stop()
        time.sleep(1.1)
        t0 = time.monotonic()
        r = s.query(name)
        assert time.monotonic() - t0 < 0.5  # immediate: nobody waits for the dead upstream
        assert r.rcode() == dns.rcode.NOERROR and ttl_of(r) == 0
        assert sorted(str(x) for x in r.answer[0]) == ["198.18.1.1", "198.18.1.2"]
        assert metric(scrape(mport), "coredns_cache_served_stale_total") == 2


def test_serve_stale_verify(make_unbound: MakeUnbound) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 1 {\n serve_stale 1h verify\n }", up)) as s:
        name = "web.default.svc.cluster.local."
        s.query(name)
        time.sleep(1.1)
        assert ttl_of(s.query(name)) == 1  # verify: the upstream answered, so a fresh answer
        assert up.query_count(name) == 2
        up.stop()
        time.sleep(1.1)
        r = s.query(name)
        assert r.rcode() == dns.rcode.NOERROR and ttl_of(r) == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_nxdomain_hit_keeps_rcode_and_soa(make_unbound: MakeUnbound, transport: str) -> None:
    up = upstream(make_unbound)
    with serve(corefile("cache 30", up)) as s:
        for i in range(3):
            r = s.query("nothing.cluster.local.", tcp=transport == "tcp")
            assert r.rcode() == dns.rcode.NXDOMAIN
            assert r.authority and r.authority[0].rdtype == dns.rdatatype.SOA
            assert bool(r.flags & dns.flags.AA) or i == 0
        assert up.query_count("nothing.cluster.local.") == 1
