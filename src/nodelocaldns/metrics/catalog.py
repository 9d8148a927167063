"""Every metric family nodelocaldns exports: names, types, labels and help, as data.

Names and label sets match CoreDNS (v1.11+) and node-cache so existing dashboards and alerts work.
The dashboard test and the exposition code both read this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str


# 0.25 ms x 2^n, 16 buckets (CoreDNS plugin.TimeBuckets).
TIME_BUCKETS: tuple[float, ...] = tuple(0.00025 * 2**n for n in range(16))
# 0.25 ms x 10^n, 5 buckets up to 2.5 s (CoreDNS plugin.SlimTimeBuckets).
SLIM_TIME_BUCKETS: tuple[float, ...] = tuple(0.00025 * 10**n for n in range(5))
# CoreDNS plugin.SizeBuckets.
SIZE_BUCKETS: tuple[float, ...] = (
    0,
    100,
    200,
    300,
    400,
    511,
    1023,
    2047,
    4095,
    8291,
    16000,
    32000,
    48000,
    64000,
)

_F = Family
FAMILIES: tuple[Family, ...] = (
    # core/dnsserver via plugin/metrics
    _F(
        "coredns_dns_requests_total",
        "counter",
        ("server", "zone", "view", "proto", "family", "type"),
        "Counter of DNS requests made per zone, protocol and family.",
    ),
    _F(
        "coredns_dns_request_duration_seconds",
        "histogram",
        ("server", "zone", "view"),
        "Histogram of the time (in seconds) each request took per zone.",
    ),
    _F(
        "coredns_dns_request_size_bytes",
        "histogram",
        ("server", "zone", "view", "proto"),
        "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
    ),
    _F(
        "coredns_dns_response_size_bytes",
        "histogram",
        ("server", "zone", "view", "proto"),
        "Size of the returned response in bytes.",
    ),
    _F(
        "coredns_dns_do_requests_total",
        "counter",
        ("server", "zone", "view"),
        "Counter of DNS requests with DO bit set per zone.",
    ),
    _F(
        "coredns_dns_responses_total",
        "counter",
        ("server", "zone", "view", "rcode", "plugin"),
        "Counter of response status codes.",
    ),
    _F("coredns_panics_total", "counter", (), "A metrics that counts the number of panics."),
    _F(
        "coredns_build_info",
        "gauge",
        ("version", "revision", "goversion"),
        "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.",
    ),
    _F(
        "coredns_plugin_enabled",
        "gauge",
        ("server", "zone", "view", "name"),
        "A metric that indicates whether a plugin is enabled on per server and zone basis.",
    ),
    # plugin/cache
    _F(
        "coredns_cache_entries",
        "gauge",
        ("server", "type", "zones", "view"),
        "The number of elements in the cache.",
    ),
    _F(
        "coredns_cache_requests_total", "counter", ("server", "zones", "view"), "The count of cache requests."
    ),
    _F(
        "coredns_cache_hits_total", "counter", ("server", "type", "zones", "view"), "The count of cache hits."
    ),
    _F(
        "coredns_cache_misses_total",
        "counter",
        ("server", "zones", "view"),
        "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
    ),
    _F(
        "coredns_cache_prefetch_total",
        "counter",
        ("server", "zones", "view"),
        "The number of times the cache has prefetched a cached item.",
    ),
    _F(
        "coredns_cache_drops_total",
        "counter",
        ("server", "zones", "view"),
        "The number responses that are not cached, because the reply is malformed.",
    ),
    _F(
        "coredns_cache_served_stale_total",
        "counter",
        ("server", "zones", "view"),
        "The number of requests served from stale cache entries.",
    ),
    _F(
        "nodelocaldns_cache_coalesced_total",
        "counter",
        ("server", "zones"),
        "Counter of cache misses answered from the exchange of the same question already in flight, "
        "instead of asking again.",
    ),
    _F(
        "coredns_cache_evictions_total",
        "counter",
        ("server", "type", "zones", "view"),
        "The count of cache evictions.",
    ),
    # plugin/pkg/proxy and plugin/forward
    _F(
        "coredns_proxy_request_duration_seconds",
        "histogram",
        ("proxy_name", "to", "rcode"),
        "Histogram of the time each request took.",
    ),
    _F(
        "coredns_proxy_healthcheck_failures_total",
        "counter",
        ("proxy_name", "to"),
        "Counter of the number of failed healthchecks.",
    ),
    _F(
        "coredns_proxy_conn_cache_hits_total",
        "counter",
        ("proxy_name", "to", "proto"),
        "Counter of connection cache hits per upstream and protocol.",
    ),
    _F(
        "coredns_proxy_conn_cache_misses_total",
        "counter",
        ("proxy_name", "to", "proto"),
        "Counter of connection cache misses per upstream and protocol.",
    ),
    _F(
        "coredns_forward_healthcheck_broken_total",
        "counter",
        (),
        "Counter of the number of complete failures of the healthchecks.",
    ),
    _F(
        "coredns_forward_max_concurrent_rejects_total",
        "counter",
        (),
        "Counter of the number of queries rejected because the concurrent queries were at maximum.",
    ),
    # plugin/health (process-wide: the self-poll of /health)
    _F(
        "coredns_health_request_duration_seconds",
        "histogram",
        (),
        "Histogram of the time (in seconds) each request took.",
    ),
    _F(
        "coredns_health_request_failures_total", "counter", (), "The number of times the health check failed."
    ),
    # nodelocaldns's own (no CoreDNS equivalent; docs/compatibility.md)
    _F(
        "nodelocaldns_forward_bad_replies_total",
        "counter",
        ("proxy_name", "to"),
        "Counter of upstream replies that did not unpack; each became SERVFAIL and was not cached.",
    ),
    _F(
        "nodelocaldns_forward_resource_errors_total",
        "counter",
        (),
        "Counter of upstream exchanges that failed because this process ran out of descriptors, "
        "buffers or memory.",
    ),
    _F(
        "nodelocaldns_dns_dropped_requests_total",
        "counter",
        ("server", "proto"),
        "Counter of requests dropped unanswered because the listener's slow path was at its in-flight cap.",
    ),
    _F(
        "nodelocaldns_dns_refused_requests_total",
        "counter",
        ("server", "proto"),
        "Counter of requests answered REFUSED at once because the listener's slow path was at its in-flight cap.",
    ),
    _F(
        "nodelocaldns_forward_native_exchanges_total",
        "counter",
        ("server", "result"),
        "Counter of cache misses the native UDP workers sent upstream themselves, by result "
        "(sent, replies, timeouts, errors, mismatched: a datagram that matched no query).",
    ),
    _F(
        "nodelocaldns_dns_receive_queue_drops_total",
        "counter",
        ("server", "proto"),
        "Counter of requests the kernel dropped before the listener read them: its socket's receive queue was full.",
    ),
    # plugin/reload
    _F("coredns_reload_failed_total", "counter", (), "Counter of the number of failed reload attempts."),
    _F(
        "coredns_reload_version_info",
        "gauge",
        ("hash", "value"),
        "A metric with a constant '1' value labeled by hash, and value which type of hash generated.",
    ),
    # node-cache's own registry (served on -metrics-listen-address)
    _F(
        "coredns_nodecache_setup_errors_total",
        "counter",
        ("errortype",),
        "The number of errors during periodic network setup for node-cache",
    ),
)

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}

SETUP_ERROR_TYPES: tuple[str, ...] = (
    "iptables",
    "iptables_lock",
    "interface_add",
    "interface_check",
    "configmap",
    "socket_match",  # ours: the fail-safe socket match is missing (node/failsafe.py)
)

# The qtype label takes one of these, else "other" (CoreDNS plugin/metrics/vars/report.go).
MONITORED_QTYPES: tuple[str, ...] = (
    "A",
    "AAAA",
    "CNAME",
    "DNSKEY",
    "DS",
    "MX",
    "NSEC3",
    "NSEC",
    "NS",
    "PTR",
    "RRSIG",
    "SOA",
    "SRV",
    "TXT",
    "HTTPS",
    "SVCB",
    "IXFR",
    "AXFR",
    "ANY",
)


def exported_names() -> set[str]:
    """Every sample name a scrape can contain (histograms expand to _bucket/_sum/_count)."""
    out: set[str] = set()
    for f in FAMILIES:
        if f.kind == "histogram":
            out |= {f.name + "_bucket", f.name + "_sum", f.name + "_count"}
        else:
            out.add(f.name)
    return out
