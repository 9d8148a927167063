"""Corefile texts for the node cache (with agent placeholders) and for a standalone DNS.

The node Corefile is the upstream addon's, block for block and in its whitespace (the agent,
like node-cache, swaps ``forward . __PILLAR__UPSTREAM__SERVERS__ { force_tcp }`` by exact
text), plus ``health { lameduck }`` and ``ready`` so a terminating pod drains before it goes.
deploy/base/Corefile and the overlays' Corefiles hold the same text; a test compares them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from nodelocaldns.errors import ConfigError

LOCAL_DNS = "__PILLAR__LOCAL__DNS__"
DNS_SERVER = "__PILLAR__DNS__SERVER__"
DNS_DOMAIN = "__PILLAR__DNS__DOMAIN__"
CLUSTER_DNS = "__PILLAR__CLUSTER__DNS__"
UPSTREAM_SERVERS = "__PILLAR__UPSTREAM__SERVERS__"

MODES = ("iptables", "ipvs", "cilium")
HEALTH_PORT = 8080
READY_PORT = 8181
PROMETHEUS_PORT = 9253
LAMEDUCK = "5s"

# The addon's cluster-domain block: 9984 entries each (CoreDNS's 10000 after sharding), 30 s
# success and 5 s denial ceilings. The other blocks say ``cache 30``: CoreDNS's default
# capacity of 10000 and a 30 s ceiling for both kinds.
CLUSTER_CACHE = (9984, 30, 5)
OTHER_CACHE = (10000, 30, 30)

_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_INNER = " " * 12
_TRANSPORTS = ("force_tcp", "prefer_udp")
_HOST_LABEL = re.compile(r"^(\*|[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?)$")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Overrides for every block's ``cache``; all None/empty keeps the addon's text."""

    success_ttl: int | None = None
    denial_ttl: int | None = None
    size: int | None = None
    prefetch: tuple[str, ...] = ()
    serve_stale: tuple[str, ...] = ()

    def is_default(self) -> bool:
        return self == CacheSettings()

    def validate(self) -> None:
        for name, value, low in (
            ("success TTL", self.success_ttl, 1),
            ("denial TTL", self.denial_ttl, 1),
            ("cache size", self.size, 1),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if self.prefetch:
            _check_prefetch(self.prefetch)
        if self.serve_stale:
            _check_serve_stale(self.serve_stale)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Where the ``.`` block forwards and how: servers replace the node's /etc/resolv.conf."""

    servers: tuple[str, ...] = ()
    transport: str | None = None  # force_tcp | prefer_udp; None is plain UDP, as the addon

    def validate(self) -> None:
        if self.transport is not None and self.transport not in _TRANSPORTS:
            raise ConfigError(f"upstream transport must be one of {', '.join(_TRANSPORTS)}")
        for server in self.servers:
            check_upstream(server)


@dataclass(frozen=True, slots=True)
class AnswerSettings:
    """Answers the node gives itself: no AAAA (the Helm chart's ``noIPv6Lookups``) and extra hosts."""

    no_ipv6_lookups: bool = False
    hosts_entries: tuple[str, ...] = ()  # hosts-file lines, "IP NAME [NAME...]"

    def validate(self) -> None:
        for entry in self.hosts_entries:
            check_hosts_entry(entry)


def check_hosts_entry(entry: str) -> None:
    """An ``IP NAME [NAME...]`` line the hosts plugin will keep (it skips bad lines silently)."""
    words = entry.split()
    if len(words) < 2:
        raise ConfigError(f"hosts entry {entry!r} needs an IP address and at least one name")
    try:
        ipaddress.ip_address(words[0].split("%", 1)[0])
    except ValueError:
        raise ConfigError(f"hosts entry {entry!r}: {words[0]!r} is not an IP address") from None
    for name in words[1:]:
        labels = name.rstrip(".").split(".")
        if len(name) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in labels) or "#" in name:
            raise ConfigError(f"hosts entry {entry!r}: {name!r} is not a host name")


def _check_prefetch(args: tuple[str, ...]) -> None:
    if len(args) > 3:
        raise ConfigError("prefetch takes AMOUNT [DURATION [PERCENTAGE%]]")
    if not args[0].isdigit() or int(args[0]) < 1:
        raise ConfigError(f"prefetch amount must be a positive integer, got {args[0]!r}")
    if len(args) > 1 and not _DURATION.fullmatch(args[1]):
        raise ConfigError(f"prefetch duration must be a Go duration like 1m, got {args[1]!r}")
    if len(args) > 2:
        pct = args[2].removesuffix("%")
        # CoreDNS's bounds for the percentage.
        if not args[2].endswith("%") or not pct.isdigit() or not 10 <= int(pct) <= 90:
            raise ConfigError(f"prefetch percentage must be 10% to 90%, got {args[2]!r}")


def _check_serve_stale(args: tuple[str, ...]) -> None:
    if len(args) > 2 or not _DURATION.fullmatch(args[0]):
        raise ConfigError("serve_stale takes DURATION [immediate|verify], e.g. '1h verify'")
    if len(args) == 2 and args[1] not in ("immediate", "verify"):
        raise ConfigError(f"serve_stale refresh mode must be immediate or verify, got {args[1]!r}")


def check_upstream(server: str) -> None:
    """Accept what our ``forward`` takes for a TO: an IP, IP:port, [IPv6]:port, any of those
    after dns://, or an absolute resolv.conf path. (No tls://: the forwarder speaks plain DNS.)"""
    if server.startswith("/"):
        return
    rest = server.removeprefix("dns://")
    host, port = rest, ""
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]")
        if not sep or (port and not port.startswith(":")):
            raise ConfigError(f"upstream {server!r}: bad [IPv6]:port")
        port = port[1:]
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"upstream {server!r} is not an IP address, IP:port or /path") from None
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ConfigError(f"upstream {server!r}: bad port {port!r}")


def _cache_directive(defaults: tuple[int, int, int], cache: CacheSettings, addon_text: str) -> str:
    if cache.is_default():
        return addon_text
    size = cache.size or defaults[0]
    lines = [
        f"success {size} {cache.success_ttl or defaults[1]}",
        f"denial {size} {cache.denial_ttl or defaults[2]}",
    ]
    if cache.prefetch:
        lines.append("prefetch " + " ".join(cache.prefetch))
    if cache.serve_stale:
        lines.append("serve_stale " + " ".join(cache.serve_stale))
    return _with_block("cache", lines)


def _with_block(head: str, lines: list[str]) -> str:
    inner = "".join(f"{_INNER}{line}\n" for line in lines)
    return f"{head} {{\n{inner}    }}"


def _server_block(key: str, directives: list[str]) -> str:
    return f"{key} {{\n" + "".join(f"    {d}\n" for d in directives) + "}\n"


def _no_aaaa(answers: AnswerSettings) -> list[str]:
    """The node-local-dns Helm chart's ``noIPv6Lookups`` text: in every block, for the block's zones."""
    return [_with_block("template IN AAAA", ["rcode NOERROR"])] if answers.no_ipv6_lookups else []


def _hosts(answers: AnswerSettings) -> list[str]:
    """Extra entries, falling through to forward for every other name (kubespray's shape).

    The same directive goes in the cluster-domain block and in ``.``: each keeps only the names in
    its own zones, so an entry lands where its queries are routed, whatever the domain becomes.
    """
    if not answers.hosts_entries:
        return []
    return [
        _with_block("hosts /dev/null", [" ".join(e.split()) for e in answers.hosts_entries] + ["fallthrough"])
    ]


def _forward_upstream(upstream: UpstreamSettings, default_to: str) -> str:
    to = " ".join(upstream.servers) if upstream.servers else default_to
    if upstream.transport is None:
        return f"forward . {to}"
    return _with_block(f"forward . {to}", [upstream.transport])


def node_corefile(
    mode: str, cache: CacheSettings, upstream: UpstreamSettings, answers: AnswerSettings | None = None
) -> str:
    """The node cache's Corefile template; the agent fills the placeholders at start."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "iptables":
        bind, host = f"bind {LOCAL_DNS} {DNS_SERVER}", LOCAL_DNS
    elif mode == "ipvs":
        # kube-proxy's kube-ipvs0 already holds the kube-dns ClusterIP.
        bind, host = f"bind {LOCAL_DNS}", LOCAL_DNS
    else:
        # In the pod's own netns: every address, probes come to the pod IP.
        bind, host = "bind 0.0.0.0", ""
    to_cluster = _with_block(f"forward . {CLUSTER_DNS}", ["force_tcp"])
    cluster_cache = _cache_directive(
        CLUSTER_CACHE,
        cache,
        _with_block("cache", [f"success {CLUSTER_CACHE[0]} 30", f"denial {CLUSTER_CACHE[0]} 5"]),
    )
    other_cache = _cache_directive(OTHER_CACHE, cache, "cache 30")
    common = ["reload", "loop", bind]
    prometheus = f"prometheus :{PROMETHEUS_PORT}"
    answers = answers or AnswerSettings()
    hosts, no_aaaa = _hosts(answers), _no_aaaa(answers)
    blocks = [
        _server_block(
            f"{DNS_DOMAIN}:53",
            ["errors", cluster_cache, *common, *hosts, to_cluster, *no_aaaa, prometheus]
            + [
                _with_block(f"health {host}:{HEALTH_PORT}", [f"lameduck {LAMEDUCK}"]),
                f"ready {host}:{READY_PORT}",
            ],
        ),
        _server_block("in-addr.arpa:53", ["errors", other_cache, *common, to_cluster, *no_aaaa, prometheus]),
        _server_block("ip6.arpa:53", ["errors", other_cache, *common, to_cluster, *no_aaaa, prometheus]),
        _server_block(
            ".:53",
            [
                "errors",
                other_cache,
                *common,
                *hosts,
                _forward_upstream(upstream, UPSTREAM_SERVERS),
                prometheus,
                *no_aaaa,
            ],
        ),  # fmt: skip
    ]
    return "".join(blocks)


def standalone_corefile(
    domain: str,
    cluster_dns: str,
    cache: CacheSettings,
    upstream: UpstreamSettings,
    port: int,
    answers: AnswerSettings | None = None,
) -> str:
    """A literal Corefile for ``nodelocaldns serve``, which fills no placeholders."""
    to_cluster = _with_block(f"forward . {cluster_dns}", ["force_tcp"])
    cluster_cache = _cache_directive(
        CLUSTER_CACHE,
        cache,
        _with_block("cache", [f"success {CLUSTER_CACHE[0]} 30", f"denial {CLUSTER_CACHE[0]} 5"]),
    )
    other_cache = _cache_directive(OTHER_CACHE, cache, "cache 30")
    prometheus = f"prometheus :{PROMETHEUS_PORT}"
    answers = answers or AnswerSettings()
    hosts, no_aaaa = _hosts(answers), _no_aaaa(answers)
    return "".join(
        [
            _server_block(
                f"{domain}:{port}",
                ["errors", cluster_cache, "reload", "loop", *hosts, to_cluster, *no_aaaa, prometheus]
                + [
                    _with_block(f"health :{HEALTH_PORT}", [f"lameduck {LAMEDUCK}"]),
                    f"ready :{READY_PORT}",
                ],
            ),
            _server_block(
                f"in-addr.arpa:{port}",
                ["errors", other_cache, "reload", "loop", to_cluster, *no_aaaa, prometheus],
            ),
            _server_block(
                f"ip6.arpa:{port}",
                ["errors", other_cache, "reload", "loop", to_cluster, *no_aaaa, prometheus],
            ),
            _server_block(
                f".:{port}",
                [
                    "errors",
                    other_cache,
                    "reload",
                    "loop",
                    *hosts,
                    _forward_upstream(upstream, "/etc/resolv.conf"),
                    prometheus,
                    *no_aaaa,
                ],
            ),
        ]
    )


def host_port(ip: str) -> str:
    """How an address goes in front of ``:port`` in a Corefile: IPv6 needs brackets."""
    return f"[{ip}]" if ":" in ip else ip


def fill(text: str, values: dict[str, str]) -> str:
    """Replace placeholders the way the upstream ``sed`` recipe does, except that an IPv6
    local address gets brackets where a port follows it."""
    local = values.get(LOCAL_DNS)
    if local is not None:
        text = text.replace(f"{LOCAL_DNS}:", f"{host_port(local)}:")
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text
