"""Turn the plain counters of a running Instance into CoreDNS metric families at scrape time."""

from __future__ import annotations

import platform
from collections import defaultdict
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from nodelocaldns import __version__
from nodelocaldns.dns.wire import RCODE_NAMES
from nodelocaldns.metrics.catalog import BY_NAME, MONITORED_QTYPES, SIZE_BUCKETS, TIME_BUCKETS
from nodelocaldns.plugins.cache.entry import STATS_BY_ID
from nodelocaldns.plugins.forward.metrics import COUNTERS as FORWARD
from nodelocaldns.server.stats import SIZE_SHIFT, STAT_SHIFT, ZONE_SHIFT, ServerStats

if TYPE_CHECKING:
    from nodelocaldns.server.instance import Instance

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_QTYPE_CODES = {
    1: "A", 28: "AAAA", 5: "CNAME", 48: "DNSKEY", 43: "DS", 15: "MX", 50: "NSEC3", 47: "NSEC", 2: "NS", 12: "PTR",
    46: "RRSIG", 6: "SOA", 33: "SRV", 16: "TXT", 65: "HTTPS", 64: "SVCB", 251: "IXFR", 252: "AXFR", 255: "ANY",
}  # fmt: skip
assert set(_QTYPE_CODES.values()) == set(MONITORED_QTYPES)


def qtype_label(t: int) -> str:
    return _QTYPE_CODES.get(t, "other")


def rcode_label(rc: int) -> str:
    return RCODE_NAMES.get(rc, str(rc))


def _counter(name: str) -> CounterMetricFamily:
    f = BY_NAME[name]
    return CounterMetricFamily(name.removesuffix("_total"), f.help, labels=list(f.labels))


def _gauge(name: str) -> GaugeMetricFamily:
    f = BY_NAME[name]
    return GaugeMetricFamily(name, f.help, labels=list(f.labels))


def _hist(name: str) -> HistogramMetricFamily:
    f = BY_NAME[name]
    return HistogramMetricFamily(name, f.help, labels=list(f.labels))


def _buckets(counts: dict[float, float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out = []
    acc = 0.0
    for b in bounds:
        acc += counts.get(b, 0)
        out.append((_fmt(b), acc))
    acc += counts.get(float("inf"), 0)
    out.append(("+Inf", acc))
    return out


def _fmt(b: float) -> str:
    return repr(float(b)) if not float(b).is_integer() else f"{b:.1f}"


def _size_bound(n: int) -> float:
    for b in SIZE_BUCKETS:
        if n <= b:
            return float(b)
    return float("inf")


def decode_fast(stats: ServerStats, k: int) -> tuple[str, str, int, int, int, bool, int, int]:
    """Unpack a fast-path counter key: zone, proto, qtype, rcode, kind, do, request and reply size."""
    zone = stats.zone_of(k >> ZONE_SHIFT)
    qtype, rcode, kind, size = STATS_BY_ID[(k >> STAT_SHIFT) & ((1 << (ZONE_SHIFT - STAT_SHIFT)) - 1)]
    qlen = (k >> SIZE_SHIFT) & ((1 << (STAT_SHIFT - SIZE_SHIFT)) - 1)
    edns = bool(k & 1)
    return zone, "tcp" if k & 4 else "udp", qtype, rcode, kind, bool(k & 2), qlen, size + (11 if edns else 0)


def fast_hits(inst: Instance) -> dict[tuple[str, str, int], int]:
    """Cache hits served by the fast path: (server, zone, kind) -> count."""
    out: dict[tuple[str, str, int], int] = defaultdict(int)
    for lst in list(inst.listeners.values()):
        for k, n in [*lst.stats.fast.items(), *lst.stats.fast_tcp.items()]:
            zone, _p, _t, _r, kind, _d, _q, _s = decode_fast(lst.stats, k)
            out[(lst.server, zone, kind)] += n
        for (zone, kind), n in list(lst.stats.hit_kinds.items()):
            out[(lst.server, zone, kind)] += n
    return out


class _Agg:
    """One listener's request counters folded into the label sets of the coredns_dns_* families."""

    def __init__(self) -> None:
        self.req: dict[tuple[str, str, str], float] = defaultdict(float)
        self.do: dict[str, float] = defaultdict(float)
        self.resp: dict[tuple[str, str, str], float] = defaultdict(float)
        self.dur: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        self.rs: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
        self.ws: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
        self.sum_rs: dict[tuple[str, str], float] = defaultdict(float)
        self.sum_ws: dict[tuple[str, str], float] = defaultdict(float)

    def add(self, zone: str, proto: str, qtype: int, do: bool, qlen: int, rlen: int, rcode: int, plugin: str,
            bucket: int, n: float) -> None:  # fmt: skip
        self.req[(zone, proto, qtype_label(qtype))] += n
        if do:
            self.do[zone] += n
        self.resp[(zone, rcode_label(rcode), plugin)] += n
        self.dur[zone][TIME_BUCKETS[bucket] if bucket < len(TIME_BUCKETS) else float("inf")] += n
        self.rs[(zone, proto)][_size_bound(qlen)] += n
        self.ws[(zone, proto)][_size_bound(rlen)] += n
        self.sum_rs[(zone, proto)] += qlen * n
        self.sum_ws[(zone, proto)] += rlen * n


class InstanceCollector:
    def __init__(self, inst: Instance) -> None:
        self.inst = inst

    def collect(self) -> list[Metric]:  # noqa: C901 - one pass per family keeps the scrape readable
        inst = self.inst
        fams: list[Metric] = []

        def counter(name: str) -> CounterMetricFamily:
            m = _counter(name)
            fams.append(m)
            return m

        def gauge(name: str) -> GaugeMetricFamily:
            m = _gauge(name)
            fams.append(m)
            return m

        def hist(name: str) -> HistogramMetricFamily:
            m = _hist(name)
            fams.append(m)
            return m

        build = gauge("coredns_build_info")
        build.add_metric([__version__, "nodelocaldns", f"python{platform.python_version()}"], 1)

        req = counter("coredns_dns_requests_total")
        do_req = counter("coredns_dns_do_requests_total")
        resp = counter("coredns_dns_responses_total")
        dur = hist("coredns_dns_request_duration_seconds")
        rsize = hist("coredns_dns_request_size_bytes")
        wsize = hist("coredns_dns_response_size_bytes")
        enabled = gauge("coredns_plugin_enabled")
        for lst in list(inst.listeners.values()):
            server = lst.server
            fam_label = str(lst.family)
            agg = _Agg()
            for key, n in list(lst.stats.counts.items()):
                agg.add(*key, n)
            # Fast-path hits all finished within the first duration bucket (slower ones are in counts).
            for k, n in [*lst.stats.fast.items(), *lst.stats.fast_tcp.items()]:
                zone, proto, qtype, rcode, _kind, do, qlen, rlen = decode_fast(lst.stats, k)
                agg.add(zone, proto, qtype, do, qlen, rlen, rcode, "cache", 0, n)
            dsum = dict(lst.stats.duration_sum)
            for zone, acc in list(lst.stats.zones.items()):
                dsum[zone] = dsum.get(zone, 0.0) + acc[1] + acc[2]
            for (zone, proto, t), v in agg.req.items():
                req.add_metric([server, zone, "", proto, fam_label, t], v)
            for zone, v in agg.do.items():
                do_req.add_metric([server, zone, ""], v)
            for (zone, rc, plugin), v in agg.resp.items():
                resp.add_metric([server, zone, "", rc, plugin], v)
            for zone, counts in agg.dur.items():
                dur.add_metric([server, zone, ""], _buckets(counts, TIME_BUCKETS), dsum.get(zone, 0.0))
            for (zone, proto), counts in agg.rs.items():
                rsize.add_metric(
                    [server, zone, "", proto],
                    _buckets(counts, tuple(map(float, SIZE_BUCKETS))),
                    agg.sum_rs[(zone, proto)],
                )
            for (zone, proto), counts in agg.ws.items():
                wsize.add_metric(
                    [server, zone, "", proto],
                    _buckets(counts, tuple(map(float, SIZE_BUCKETS))),
                    agg.sum_ws[(zone, proto)],
                )
            for zone, block in lst.router.zones.items():
                names = [getattr(h, "name", "") for h in block.handlers]
                if block.metrics:
                    names.append("prometheus")
                for name in sorted(set(names)):
                    enabled.add_metric([server, zone, "", name], 1)

        entries = gauge("coredns_cache_entries")
        creq = counter("coredns_cache_requests_total")
        hits = counter("coredns_cache_hits_total")
        misses = counter("coredns_cache_misses_total")
        prefetch = counter("coredns_cache_prefetch_total")
        drops = counter("coredns_cache_drops_total")
        stale = counter("coredns_cache_served_stale_total")
        evict = counter("coredns_cache_evictions_total")
        fast = fast_hits(inst)
        for block, cache in inst.caches():
            zones = cache.zone_label
            servers = [lst.server for lst in inst.listeners.values() if block in lst.router.zones.values()]
            s, d = cache.entries()
            es, ed = cache.evictions()
            for server in servers:
                entries.add_metric([server, "success", zones, ""], s)
                entries.add_metric([server, "denial", zones, ""], d)
                c = cache.counters.by_server.get(server, [0] * 7)
                fs: float = sum(fast.get((server, z, 0), 0) for z in block.zones)
                fd: float = sum(fast.get((server, z, 1), 0) for z in block.zones)
                creq.add_metric([server, zones, ""], c[0] + fs + fd)
                hits.add_metric([server, "success", zones, ""], c[1] + fs)
                hits.add_metric([server, "denial", zones, ""], c[2] + fd)
                misses.add_metric([server, zones, ""], c[3])
                prefetch.add_metric([server, zones, ""], c[4])
                drops.add_metric([server, zones, ""], c[5])
                stale.add_metric([server, zones, ""], c[6])
                evict.add_metric([server, "success", zones, ""], es)
                evict.add_metric([server, "denial", zones, ""], ed)

        pd = hist("coredns_proxy_request_duration_seconds")
        for (to, rc), h in list(FORWARD.durations.items()):
            counts = {
                TIME_BUCKETS[i] if i < len(TIME_BUCKETS) else float("inf"): h[i]
                for i in range(len(TIME_BUCKETS) + 1)
            }
            pd.add_metric(["forward", to, rc], _buckets(counts, TIME_BUCKETS), h[-1])
        hf = counter("coredns_proxy_healthcheck_failures_total")
        for to, n in list(FORWARD.healthcheck_failures.items()):
            hf.add_metric(["forward", to], n)
        ch = counter("coredns_proxy_conn_cache_hits_total")
        for (to, proto), n in list(FORWARD.conn_hits.items()):
            ch.add_metric(["forward", to, proto], n)
        cm = counter("coredns_proxy_conn_cache_misses_total")
        for (to, proto), n in list(FORWARD.conn_misses.items()):
            cm.add_metric(["forward", to, proto], n)
        counter("coredns_forward_healthcheck_broken_total").add_metric([], FORWARD.healthcheck_broken)
        counter("coredns_forward_max_concurrent_rejects_total").add_metric([], FORWARD.max_concurrent_rejects)
        counter("coredns_reload_failed_total").add_metric([], inst.reload_state.failed)
        if inst.reload_state.hash:
            gauge("coredns_reload_version_info").add_metric(["sha512", inst.reload_state.hash], 1)
        panics = sum(lst.panics for lst in inst.listeners.values())
        counter("coredns_panics_total").add_metric([], panics)
        return fams


_registries: dict[int, CollectorRegistry] = {}


def registry_for(inst: Instance) -> CollectorRegistry:
    reg = _registries.get(id(inst))
    if reg is None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(InstanceCollector(inst))
        ProcessCollector(registry=reg)
        _registries[id(inst)] = reg
    return reg


async def render_metrics(inst: Instance) -> tuple[int, str, bytes]:
    return 200, CONTENT_TYPE, generate_latest(registry_for(inst))
