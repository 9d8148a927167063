"""The prometheus endpoint of a real server: every family, its labels, and counters that move as they should.

Scrapes are parsed with prometheus_client's own text parser, so the exposition format is checked too.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import dns.message
import dns.query
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodelocaldns.core.qtypes import MONITORED, qtype_label, rcode_label
from nodelocaldns.metrics.catalog import (
    FAMILIES,
    MONITORED_QTYPES,
    SIZE_BUCKETS,
    TIME_BUCKETS,
    exported_names,
)
from nodelocaldns.plugins.hosts import metrics as hosts_metrics
from nodelocaldns.plugins.template import metrics as template_metrics
from support.inproc import inproc
from support.ports import free_port
from support.server import Served, serve
from support.upstreams import UpstreamServer, closed_port

MakeUnbound = Callable[..., UpstreamServer]
Samples = list[tuple[str, dict[str, str], float]]
ZONES = {
    "cluster.local.": [
        "web.default.svc.cluster.local. 30 IN A 198.18.1.1",
        "web.default.svc.cluster.local. 30 IN AAAA fd00::1",
    ],
    "18.198.in-addr.arpa.": ["1.1.18.198.in-addr.arpa. 30 IN PTR web.default.svc.cluster.local."],
}
# node-cache's own registry lives on its -metrics-listen-address, not on the Corefile's prometheus.
NOT_FROM_SERVE = {"coredns_nodecache_setup_errors_total"}


def scrape(port: int) -> tuple[Samples, str]:
    deadline = time.monotonic() + 3
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = r.read().decode()
                break
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return [
        (s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
    ], text


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))


def corefile(up: UpstreamServer, mport: int, dead_port: int) -> str:
    return f"""
cluster.local:{{PORT}} {{
    bind 127.0.0.1
    errors
    reload 10s
    cache 30
    forward . {up.address} {{
        max_concurrent 100
    }}
    prometheus 127.0.0.1:{mport}
}}
in-addr.arpa:{{PORT}} {{
    bind 127.0.0.1
    cache 30
    forward . 127.0.0.1:{dead_port}
    prometheus 127.0.0.1:{mport}
}}
.:{{PORT}} {{
    bind 127.0.0.1
    forward . {up.address}
    prometheus 127.0.0.1:{mport}
}}
"""


@pytest.fixture
def traffic(make_unbound: MakeUnbound) -> Iterator[tuple[Served, int, Samples, str]]:
    """A server with three blocks sharing one listener and one metrics address, after known traffic."""
    up = make_unbound(ZONES)
    mport = free_port("tcp")
    dead = closed_port()
    with serve(corefile(up, mport, dead.port)) as s:
        name = "web.default.svc.cluster.local."
        for _ in range(5):
            s.query(name)  # 1 miss + 4 hits
        s.query(name, "AAAA", tcp=True)
        s.query(name, "AAAA", tcp=True)
        s.query(name, use_edns=0, want_dnssec=True)  # DO: its own cache entry
        s.query("gone.cluster.local.", "SRV")  # NXDOMAIN, cached (denial)
        s.query("gone.cluster.local.", "SRV")
        s.query("x.cluster.local.", "NAPTR", tcp=True)  # "other" qtype; reuses the pooled TCP conn
        s.query("1.1.18.198.in-addr.arpa.", "PTR")  # dead upstream: SERVFAIL
        s.query("example.org.", "A", rdclass="CH")  # forwarded (CoreDNS EnableChaos): zone "."
        time.sleep(0.3)  # let the health check of the dead upstream fail at least once
        samples, text = scrape(mport)
        yield s, mport, samples, text


# CoreDNS plugin/metrics/vars/vars.go as of v1.8.4 and later (v1.10 added "view"). Its README still
# lists "type" on the duration histogram, but coredns/coredns#4534 took it out of the code to bound the
# histogram's cardinality; dashboards built against real CoreDNS therefore cannot split latency by type.
COREDNS_SERVER_HISTOGRAM_LABELS = {
    "coredns_dns_request_duration_seconds": {"server", "zone", "view"},
    "coredns_dns_request_size_bytes": {"server", "zone", "view", "proto"},
    "coredns_dns_response_size_bytes": {"server", "zone", "view", "proto"},
}


def test_server_histograms_carry_exactly_coredns_labels(traffic: tuple[Served, int, Samples, str]) -> None:
    _s, _mport, samples, _text = traffic
    for fam, want in COREDNS_SERVER_HISTOGRAM_LABELS.items():
        seen = [ls for n, ls, _v in samples if n.startswith(fam + "_")]
        assert seen, fam
        for ls in seen:
            assert set(ls) - {"le"} == want, (fam, ls)
    # Both the fast path (UDP and TCP cache hits) and the chain land in the same series.
    z = [ls for n, ls, _v in samples if n == "coredns_dns_request_size_bytes_count"]
    assert {ls["proto"] for ls in z} == {"udp", "tcp"}


def test_every_family_is_exported_with_its_labels(traffic: tuple[Served, int, Samples, str]) -> None:
    s, _mport, samples, text = traffic
    names = {n for n, _l, _v in samples}
    for fam in FAMILIES:
        if fam.name in NOT_FROM_SERVE:
            continue
        present = [
            (n, ls)
            for n, ls, _v in samples
            if n in (fam.name, f"{fam.name}_bucket", f"{fam.name}_sum", f"{fam.name}_count")
        ]
        assert present, f"{fam.name} missing"
        for n, ls in present:
            want = set(fam.labels) | ({"le"} if n.endswith("_bucket") else set())
            assert set(ls) == want, (n, ls)
        assert (
            f"# TYPE {fam.name} {fam.kind}" in text
            or f"# TYPE {fam.name.removesuffix('_total')} {fam.kind}" in text
        )
    # Families a plugin defines in its own folder (exported whenever that plugin is registered).
    own = {f.name for f in (*hosts_metrics.FAMILIES, *template_metrics.FAMILIES)}
    unexpected = {n for n in names if n.startswith("coredns_")} - exported_names() - own
    assert not unexpected
    assert "process_resident_memory_bytes" in names  # the process collector, as CoreDNS has
    server = f"dns://127.0.0.1:{s.port}"
    for n, ls, _v in samples:
        if "server" in ls:
            assert ls["server"] == server  # one listener for three blocks
        if "zone" in ls:
            assert ls["zone"] in {"cluster.local.", "in-addr.arpa.", ".", "dropped"}
        if "zones" in ls:
            assert ls["zones"] in {"cluster.local.", "in-addr.arpa."}
        if "view" in ls:
            assert ls["view"] == ""
        if "type" in ls and n.startswith("coredns_dns_"):
            assert ls["type"] in set(MONITORED_QTYPES) | {"other"}
        if "type" in ls and n.startswith("coredns_cache_"):
            assert ls["type"] in {"success", "denial"}
        if "proto" in ls:
            assert ls["proto"] in {"udp", "tcp"}
        if "family" in ls:
            assert ls["family"] == "1"
        if "rcode" in ls:
            assert ls["rcode"] in {"NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED"}
        if "plugin" in ls:
            assert ls["plugin"] in {"cache", "forward", ""}
        if n == "coredns_build_info":
            assert ls["version"] and ls["goversion"]


def test_request_and_response_counters(traffic: tuple[Served, int, Samples, str]) -> None:
    _s, _m, samples, _t = traffic
    z = "cluster.local."
    assert value(samples, "coredns_dns_requests_total", zone=z, proto="udp", type="A") == 6
    assert value(samples, "coredns_dns_requests_total", zone=z, proto="tcp", type="AAAA") == 2
    assert value(samples, "coredns_proxy_conn_cache_misses_total", proto="tcp") == 1
    assert value(samples, "coredns_proxy_conn_cache_hits_total", proto="tcp") == 1
    assert value(samples, "coredns_dns_requests_total", zone=z, type="SRV") == 2
    assert value(samples, "coredns_dns_requests_total", zone=z, type="other") == 1
    assert value(samples, "coredns_dns_do_requests_total", zone=z) == 1
    assert value(samples, "coredns_dns_responses_total", zone=z, rcode="NOERROR") == 8
    assert value(samples, "coredns_dns_responses_total", zone=z, rcode="NXDOMAIN") == 3
    assert (
        value(samples, "coredns_dns_responses_total", zone="in-addr.arpa.", rcode="SERVFAIL", plugin="") == 1
    )
    # The CH query reached the upstream (which refuses it), not a REFUSED written by the server.
    assert value(samples, "coredns_dns_responses_total", zone=".", rcode="REFUSED", plugin="forward") == 1
    assert value(samples, "coredns_dns_responses_total", zone="dropped") == 0
    # Histograms agree with the counters and are cumulative.
    total = value(samples, "coredns_dns_requests_total", zone=z)
    assert value(samples, "coredns_dns_request_duration_seconds_count", zone=z) == total
    assert value(samples, "coredns_dns_request_duration_seconds_bucket", zone=z, le="+Inf") == total
    buckets = [
        value(samples, "coredns_dns_request_duration_seconds_bucket", zone=z, le=repr(b))
        for b in TIME_BUCKETS
    ]
    assert buckets == sorted(buckets) and buckets[-1] <= total
    assert value(samples, "coredns_dns_request_size_bytes_count", zone=z, proto="tcp") == 3
    sizes = [value(samples, "coredns_dns_response_size_bytes_bucket", zone=z, proto="udp", le=f"{float(b)}")
             for b in SIZE_BUCKETS]  # fmt: skip
    assert sizes == sorted(sizes) and sizes[-1] == value(
        samples, "coredns_dns_response_size_bytes_count", zone=z, proto="udp"
    )
    assert value(samples, "coredns_dns_request_size_bytes_sum", zone=z) > 0


def test_cache_counters(traffic: tuple[Served, int, Samples, str]) -> None:
    _s, _m, samples, _t = traffic
    z = "cluster.local."
    assert value(samples, "coredns_cache_requests_total", zones=z) == 11
    assert value(samples, "coredns_cache_hits_total", zones=z, type="success") == 5  # 4 A + 1 AAAA
    assert value(samples, "coredns_cache_hits_total", zones=z, type="denial") == 1
    assert value(samples, "coredns_cache_misses_total", zones=z) == 5
    assert value(samples, "coredns_cache_entries", zones=z, type="success") == 3  # A, AAAA, A+DO
    assert value(samples, "coredns_cache_entries", zones=z, type="denial") == 2  # the two NXDOMAINs
    assert value(samples, "coredns_cache_entries", zones="in-addr.arpa.", type="success") == 0
    assert value(samples, "coredns_cache_evictions_total") == 0
    assert value(samples, "coredns_cache_prefetch_total") == 0


def test_forward_counters(traffic: tuple[Served, int, Samples, str], make_unbound: MakeUnbound) -> None:
    _s, _m, samples, _t = traffic
    assert (
        value(samples, "coredns_proxy_request_duration_seconds_count", proxy_name="forward", rcode="NOERROR")
        >= 3
    )
    assert value(samples, "coredns_proxy_request_duration_seconds_count", rcode="NXDOMAIN") >= 2
    dead = [ls["to"] for n, ls, _v in samples if n == "coredns_proxy_healthcheck_failures_total"]
    assert dead and all(value(samples, "coredns_proxy_healthcheck_failures_total", to=t) >= 1 for t in dead)
    assert value(samples, "coredns_forward_max_concurrent_rejects_total") == 0
    assert value(samples, "coredns_reload_failed_total") == 0
    [(_n, info, v)] = [x for x in samples if x[0] == "coredns_reload_version_info"]
    assert info["hash"] == "sha512" and len(info["value"]) == 128 and v == 1
    enabled = {(ls["zone"], ls["name"]) for n, ls, _v in samples if n == "coredns_plugin_enabled"}
    assert {("cluster.local.", "cache"), ("cluster.local.", "forward"), ("cluster.local.", "errors"),
            ("cluster.local.", "prometheus"), (".", "forward")} <= enabled  # fmt: skip
    assert not {name for _z, name in enabled} & {"bind", "reload"}  # setup-only directives


def test_hits_served_by_the_fast_path_are_counted(make_unbound: MakeUnbound) -> None:
    """Hits the fast path answers never reach the cache plugin, yet the exported families count them.

    In process (support.inproc), so the test can see who answered: the listener's fast-path counters
    move, the cache plugin's own hit counter (which the chain's hits feed) does not.
    """
    up = make_unbound(ZONES)
    mport = free_port("tcp")
    text = f".:{{PORT}} {{\n    bind 127.0.0.1\n    cache 30\n    forward . {up.address}\n    prometheus 127.0.0.1:{mport}\n}}\n"
    with inproc(text) as h:
        before, _ = scrape(mport)
        q = dns.message.make_query("web.default.svc.cluster.local.", "A")
        dns.query.udp(q, "127.0.0.1", port=h.port, timeout=2)
        # The miss's reply can reach the client before the loop has noted the route for the fast
        # path; a query in that instant is a (correct) chain hit. Start the hits once it is noted.
        h.wait_until(lambda: h.call(lambda: len(h.lst.router.memo)) > 0)
        for _ in range(199):
            dns.query.udp(q, "127.0.0.1", port=h.port, timeout=2)
        for _ in range(10):
            dns.query.tcp(q, "127.0.0.1", port=h.port, timeout=2)
        after, _ = scrape(mport)
        counters = h.call(lambda: h.cache().counters.for_server(h.lst.server))
        fast = h.call(lambda: h.lst.stats.fast_hits())
        udp_fast = h.call(lambda: sum(h.lst.stats.fast.values()))
        tcp_fast = h.call(lambda: sum(h.lst.stats.fast_tcp.values()))
        slow_recorded = h.call(lambda: sum(h.lst.stats.hit_kinds.values()))

    # The chain saw one request, the miss; every hit was the fast path's.
    assert (counters.requests, counters.misses, counters.hits) == (1, 1, [0, 0])
    assert fast == {(".", 0): 209}
    # Hits the process was descheduled in are recorded apart (slow_recorded), still by the fast path.
    assert udp_fast + tcp_fast + slow_recorded == 209

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert up.query_count("web.default.svc.cluster.local.") == 1
    assert delta("coredns_cache_hits_total", type="success") == 209
    assert delta("coredns_cache_requests_total") == 210
    assert delta("coredns_cache_misses_total") == 1
    assert delta("coredns_dns_requests_total", type="A", proto="udp") == 200
    assert delta("coredns_dns_requests_total", type="A", proto="tcp") == 10
    assert delta("coredns_dns_responses_total", rcode="NOERROR", plugin="cache") == 209
    assert delta("coredns_dns_request_duration_seconds_count") == 210
    assert delta("coredns_dns_request_size_bytes_sum", proto="udp") == 200 * len(q.to_wire())


def test_ipv6_listener_labels(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    mport = free_port("tcp")
    port = free_port("both", ("::1",))
    text = f".:{port} {{\n    bind ::1\n    forward . {up.address}\n    prometheus 127.0.0.1:{mport}\n}}\n"
    with serve(text, port=port, wait=False) as s:
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    r = dns.query.udp(
                        dns.message.make_query("web.default.svc.cluster.local.", "A"),
                        "::1",
                        port=port,
                        timeout=0.5,
                    )
                    break
                except (OSError, dns.exception.Timeout):
                    assert time.monotonic() < deadline and s.proc.poll() is None
                    time.sleep(0.1)
            assert r.answer
            samples, _ = scrape(mport)
        finally:
            s.stop()
            if s.proc.stderr is not None:
                s.proc.stderr.close()
    assert value(samples, "coredns_dns_requests_total", server=f"dns://[::1]:{port}", family="2") >= 1


def test_label_helpers() -> None:
    assert qtype_label(1) == "A" and qtype_label(65) == "HTTPS" and qtype_label(35) == "other"
    assert rcode_label(3) == "NXDOMAIN" and rcode_label(16) == "BADVERS" and rcode_label(23) == "23"
    assert rcode_label(dns.rcode.REFUSED) == "REFUSED"
    # The type label values are exactly the catalog's monitored set (CoreDNS vars/monitor.go).
    assert set(MONITORED.values()) == set(MONITORED_QTYPES)


def test_health_self_poll_is_timed(make_unbound: MakeUnbound) -> None:
    """The health plugin polls its own /health every second (CoreDNS overloaded.go)."""
    up = make_unbound({}, unknown="nxdomain")
    mport, hport = free_port("tcp"), free_port("tcp")
    text = (
        f".:{{PORT}} {{\n    bind 127.0.0.1\n    health 127.0.0.1:{hport}\n    forward . {up.address}\n"
        f"    prometheus 127.0.0.1:{mport}\n}}\n"
    )
    with serve(text):
        deadline = time.monotonic() + 10
        while True:
            samples, _text = scrape(mport)
            n = value(samples, "coredns_health_request_duration_seconds_count")
            if n >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert n >= 2
        assert value(samples, "coredns_health_request_duration_seconds_bucket", le="+Inf") == n
        assert value(samples, "coredns_health_request_duration_seconds_bucket", le="2.5") == n  # local: fast
        assert value(samples, "coredns_health_request_failures_total") == 0


def test_node_cache_setup_errors_are_on_the_prometheus_listener_too() -> None:
    """node-cache registers its counter in Go's default registry, which CoreDNS's metrics plugin
    serves: the :9253 scrape has it as well as :9353 (node-local-dns cmd/node-cache/app/metrics.go)."""
    import asyncio

    from nodelocaldns.node.setup_metrics import SetupMetrics
    from nodelocaldns.server.server import Server

    port, mport = free_port("both"), free_port("tcp")
    text = f".:{port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{mport}\n}}\n"
    setup = SetupMetrics()
    setup.inc("iptables_lock")

    async def run() -> Samples:
        server = Server(text)
        server.extra_collectors.append(setup.collect)
        await server.start()
        try:
            samples, _text = await asyncio.to_thread(scrape, mport)
        finally:
            await server.shutdown(lameduck=False, drain=0.1)
        return samples

    samples = asyncio.run(run())
    assert value(samples, "coredns_nodecache_setup_errors_total", errortype="iptables_lock") == 1
    assert value(samples, "coredns_nodecache_setup_errors_total", errortype="configmap") == 0
    assert ("coredns_nodecache_setup_errors_total", {"errortype": "iptables"}, 0.0) in samples
