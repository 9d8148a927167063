"""What ``doctor`` can learn from the Corefile the cache serves (``/etc/Corefile`` in the pod).

The agent writes the rendered Corefile to ``-conf``; its ``bind`` lines are the local IPs, its
first non-root, non-reverse zone is the cluster domain, and its ``health``, ``ready`` and
``prometheus`` addresses are where the probes and Prometheus look. Pure: text in, hints out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nodelocaldns.core.hostport import split_hostport
from nodelocaldns.corefile.parser import parse_corefile


@dataclass(frozen=True)
class CorefileHints:
    local_ips: tuple[str, ...] = ()
    domain: str = ""
    dns_port: int = 53
    health: str = ""
    ready: str = ""
    metrics: str = ""


def _url(addr: str, default_port: int, path: str, fallback_host: str) -> str:
    host, port = split_hostport(addr, default_port)
    if host in ("", "0.0.0.0", "::"):
        host = fallback_host
    elif host == "localhost":
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def corefile_hints(text: str, filename: str = "Corefile") -> CorefileHints:
    """Raises ``CorefileError`` for a Corefile the server would reject too."""
    blocks = parse_corefile(text, filename)
    ips: list[str] = []
    for block in blocks:
        for d in block.directives_named("bind"):
            for arg in d.args:
                try:
                    ip = ipaddress.ip_address(arg.split("%")[0]).compressed
                except ValueError:
                    continue  # an interface name or an exclusion
                if ip not in ips:
                    ips.append(ip)
    keys = [k for b in blocks for k in b.keys]
    domain = next((k.zone for k in keys if k.zone != "." and not k.zone.endswith("arpa.")), "")
    port = next((k.port for k in keys), 53)
    fallback = ips[0] if ips else "127.0.0.1"
    found: dict[str, str] = {}
    for name, default_port, path, default_addr in (
        ("health", 8080, "/health", ":8080"),
        ("ready", 8181, "/ready", ":8181"),
        ("prometheus", 9153, "/metrics", "localhost:9153"),
    ):
        for block in blocks:
            for d in block.directives_named(name):
                if name not in found:
                    found[name] = _url(d.args[0] if d.args else default_addr, default_port, path, fallback)
    return CorefileHints(
        local_ips=tuple(ips),
        domain=domain.rstrip("."),
        dns_port=port,
        health=found.get("health", ""),
        ready=found.get("ready", ""),
        metrics=found.get("prometheus", ""),
    )
