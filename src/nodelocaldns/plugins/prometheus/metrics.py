"""The server-wide families CoreDNS's metrics plugin exports: coredns_dns_*, build info, panics.

The listeners count every answer (slow path: one tuple key; fast path: one packed int, see
metrics/dnsstats.py); this folds both into label sets at scrape time.
"""

from __future__ import annotations

import platform
from collections import defaultdict
from typing import Any

from nodelocaldns import __version__
from nodelocaldns.core.plugin import Host
from nodelocaldns.core.qtypes import qtype_label, rcode_label
from nodelocaldns.metrics.families import (
    SIZE_BOUNDS,
    TIME_BOUNDS,
    buckets,
    counter,
    gauge,
    histogram,
    size_bound,
    time_bound,
)


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

    def add(self, key: tuple[Any, ...], n: float) -> None:
        zone, proto, qtype, do, qlen, rlen, rcode, plugin, bucket = key
        self.req[(zone, proto, qtype_label(qtype))] += n
        if do:
            self.do[zone] += n
        self.resp[(zone, rcode_label(rcode), plugin)] += n
        self.dur[zone][time_bound(bucket)] += n
        self.rs[(zone, proto)][size_bound(qlen)] += n
        self.ws[(zone, proto)][size_bound(rlen)] += n
        self.sum_rs[(zone, proto)] += qlen * n
        self.sum_ws[(zone, proto)] += rlen * n


def collect(host: Host) -> list[Any]:
    build = gauge("coredns_build_info")
    build.add_metric([__version__, "nodelocaldns", f"python{platform.python_version()}"], 1)
    req = counter("coredns_dns_requests_total")
    do_req = counter("coredns_dns_do_requests_total")
    resp = counter("coredns_dns_responses_total")
    dur = histogram("coredns_dns_request_duration_seconds")
    rsize = histogram("coredns_dns_request_size_bytes")
    wsize = histogram("coredns_dns_response_size_bytes")
    enabled = gauge("coredns_plugin_enabled")
    dropped = counter("nodelocaldns_dns_dropped_requests_total")
    refused = counter("nodelocaldns_dns_refused_requests_total")
    overflow = counter("nodelocaldns_dns_receive_queue_drops_total")
    exchanged = counter("nodelocaldns_forward_native_exchanges_total")
    panics = 0
    for lst in host.dns_listeners():
        server = lst.server
        stats = lst.stats
        fam_label = str(lst.family)
        agg = _Agg()
        for key, n in list(stats.counts.items()):
            agg.add(key, n)
        # Fast-path hits all finished within the first duration bucket (slower ones are in counts).
        for k, n in stats.fast_items():
            zone, proto, qtype, rcode, _kind, do, qlen, rlen = stats.decode_fast(k)
            agg.add((zone, proto, qtype, do, qlen, rlen, rcode, "cache", 0), n)
        dsum = dict(stats.duration_sum)
        for zone, acc in list(stats.zones.items()):
            dsum[zone] = dsum.get(zone, 0.0) + acc[1] + acc[2]
        for zone, seconds in stats.native_seconds().items():
            dsum[zone] = dsum.get(zone, 0.0) + seconds
        for (zone, proto, t), v in agg.req.items():
            req.add_metric([server, zone, "", proto, fam_label, t], v)
        for zone, v in agg.do.items():
            do_req.add_metric([server, zone, ""], v)
        for (zone, rc, plugin), v in agg.resp.items():
            resp.add_metric([server, zone, "", rc, plugin], v)
        for zone, counts in agg.dur.items():
            dur.add_metric([server, zone, ""], buckets(counts, TIME_BOUNDS), dsum.get(zone, 0.0))
        for (zone, proto), counts in agg.rs.items():
            rsize.add_metric(
                [server, zone, "", proto], buckets(counts, SIZE_BOUNDS), agg.sum_rs[(zone, proto)]
            )
        for (zone, proto), counts in agg.ws.items():
            wsize.add_metric(
                [server, zone, "", proto], buckets(counts, SIZE_BOUNDS), agg.sum_ws[(zone, proto)]
            )
        for zone, block in lst.blocks().items():
            names = {h.name for rt in block.runtimes for h in rt.handlers}
            names.update(rt.name for rt in block.runtimes if rt.name == "prometheus")
            for name in sorted(names):
                enabled.add_metric([server, zone, "", name], 1)
        panics += lst.panics
        for proto, n in lst.dropped().items():
            dropped.add_metric([server, proto], n)
        for proto, n in lst.refused().items():
            refused.add_metric([server, proto], n)
        for proto, n in lst.queue_drops().items():
            overflow.add_metric([server, proto], n)
        for result, n in lst.native_exchanges().items():
            exchanged.add_metric([server, result], n)
    total = counter("coredns_panics_total")
    total.add_metric([], panics)
    return [
        build,
        req,
        do_req,
        resp,
        dur,
        rsize,
        wsize,
        enabled,
        total,
        dropped,
        refused,
        overflow,
        exchanged,
    ]
