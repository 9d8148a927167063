"""The values of node-cache's flags: each parsed and checked the way node-cache (or Go) does.

``flags.py`` is the grammar (Go's ``flag`` package) and the flag table; this is what a value may be.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from nodelocaldns.core.duration import duration_parts, duration_seconds
from nodelocaldns.core.hostport import parse_port, split_host_port
from nodelocaldns.errors import ConfigError
from nodelocaldns.node.kubednscm import IPAddress, is_dns1123_subdomain, parse_ip

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_go_bool(value: str) -> bool:
    # strconv.ParseBool's exact vocabulary: "yes"/"on" are errors in Go, so they are here too.
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ValueError("parse error")


_BARE_NUMBER = re.compile(r"\d+(\.\d+)?")


def parse_sync_interval(value: str) -> float:
    """``-syncinterval`` in seconds.

    * a bare number is seconds (``60``), which node-cache rejects ("missing unit");
    * Go durations are exact (``90s``, ``1m30s``, ``500ms``), where node-cache would overflow;
    * node-cache multiplies the Duration by a second, so its users write ``30ns`` for 30 s: a value
      given only in ``ns`` and below one second keeps that meaning (``30ns`` -> 30 s).
    """
    text = value.strip()
    if _BARE_NUMBER.fullmatch(text):
        seconds = Decimal(text)
    else:
        _sign, parts = duration_parts(text)
        seconds = duration_seconds(text)
        if parts and all(unit == "ns" for _, unit in parts) and 0 < seconds < 1:
            seconds *= Decimal(1_000_000_000)
    if seconds <= 0:
        raise ValueError(f"sync interval must be positive, got {value!r}")
    return float(seconds)


DNS_SERVER_TOKEN = "__PILLAR__DNS__SERVER__"


def parse_local_ips(value: str, env: Mapping[str, str] | None = None) -> tuple[IPAddress, ...]:
    """``-localip``: comma-separated addresses, duplicates dropped (a second bind would fail).

    Beyond node-cache: the addon's own ``__PILLAR__DNS__SERVER__`` token may stay in the list (no sed
    needed); it stands for the kube-dns ClusterIP from ``KUBE_DNS_SERVICE_HOST``, which kubelet sets
    in every pod. Without that variable the token is an error, as any unparseable address is.
    """
    if value.strip() == "":
        # node-cache says `invalid localip specified - ""`, which reads like a bad value.
        raise ConfigError(
            "flag -localip is required: the comma-separated addresses to listen on, e.g."
            " -localip 169.254.20.10,10.96.0.10 (or set $NODELOCALDNS_LOCALIP)"
        )
    ips: list[IPAddress] = []
    for part in value.split(","):
        text = part.strip()
        if text == DNS_SERVER_TOKEN:
            text = (env or {}).get("KUBE_DNS_SERVICE_HOST", "").strip()
            if not text:
                raise ConfigError(
                    f"invalid localip specified - {DNS_SERVER_TOKEN!r} needs KUBE_DNS_SERVICE_HOST "
                    "(the kube-dns Service address) or the address itself"
                )
        ip = parse_ip(text)
        if ip is None:
            raise ConfigError(f"invalid localip specified - {part.strip()!r}")
        if ip not in ips:
            ips.append(ip)
    return tuple(ips)


def check_interface_name(name: str) -> str:
    # Linux IFNAMSIZ is 16 including the NUL; '/' and whitespace are refused by the kernel.
    if not name or len(name) > 15 or name in (".", "..") or re.search(r"[/\s:]", name):
        raise ConfigError(f"invalid interface name {name!r} (1-15 characters, no '/', ':' or spaces)")
    return name


def check_upstream_svc(name: str) -> str:
    # The name becomes an environment variable name; Service names are DNS-1035 labels.
    if not re.fullmatch(r"[A-Za-z]([-A-Za-z0-9]*[A-Za-z0-9])?", name) or len(name) > 63:
        raise ConfigError(f"invalid upstream service name {name!r}")
    return name


def check_cluster_domain(domain: str) -> str:
    normalized = domain.strip().rstrip(".").lower()
    if not is_dns1123_subdomain(normalized):
        raise ConfigError(f"invalid cluster domain {domain!r}")
    return normalized


def check_listen_address(address: str, what: str = "metrics") -> str:
    try:
        _, port = split_host_port(address)
        parse_port(port)
    except ValueError as exc:
        raise ConfigError(f"invalid {what} listen address {address!r}: {exc}") from exc
    return address
