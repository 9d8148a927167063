"""Parse the ``forward`` directive (CoreDNS plugin/forward/setup.go)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.model import Directive

MAX_UPSTREAMS = 15


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str  # IP literal
    port: int

    @property
    def label(self) -> str:
        """The ``to`` metric label: "IP:port", IPv6 bracketed."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    from_zone: str
    upstreams: tuple[Upstream, ...]
    except_zones: tuple[str, ...] = ()
    force_tcp: bool = False
    prefer_udp: bool = False
    expire: float = 10.0
    max_fails: int = 2
    policy: str = "random"
    health_check: float = 0.5
    health_domain: str = "."
    health_no_rec: bool = False
    max_concurrent: int = 0
    read_timeout: float = 2.0
    timeout: float = 5.0  # CoreDNS defaultTimeout: the whole budget for one query


def parse_upstream(text: str) -> Upstream:
    """``IP``, ``IP:port``, ``[v6]:port``, ``dns://IP[:port]``. Raises ValueError."""
    t = text
    if t.startswith("dns://"):
        t = t[len("dns://") :]
    elif "://" in t:
        raise ValueError(f"transport {t.split('://')[0]!r} is not supported (only dns://)")
    port = 53
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad address {text!r}")
            port = int(rest[1:])
    elif t.count(":") == 1:
        host, _, p = t.partition(":")
        port = int(p)
    else:
        host = t
    ip = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return Upstream(str(ip), port)


def resolv_conf_nameservers(path: str) -> list[str]:
    """The ``nameserver`` entries of a resolv.conf-style file, read once at setup (like CoreDNS)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                out.append(parts[1])
    return out


def _to_upstreams(d: Directive, targets: list[str]) -> tuple[Upstream, ...]:
    ups: list[Upstream] = []
    for t in targets:
        if os.path.sep in t and not t.startswith("dns://") and os.path.exists(t):
            try:
                servers = resolv_conf_nameservers(t)
            except OSError as e:
                raise d.error(f"cannot read {t}: {e.strerror}") from None
            if not servers:
                raise d.error(f"no nameservers found in {t}")
            for s in servers:
                try:
                    ups.append(parse_upstream(s.split("%")[0]))
                except ValueError as e:
                    raise d.error(f"{t}: {e}") from None
            continue
        if t.startswith("/"):
            raise d.error(f"upstream file {t} does not exist")
        try:
            ups.append(parse_upstream(t))
        except ValueError as e:
            raise d.error(f"not an IP address or file: {t!r} ({e})") from None
    deduped = tuple(dict.fromkeys(ups))
    if len(deduped) > MAX_UPSTREAMS:
        raise d.error(f"more than {MAX_UPSTREAMS} upstreams")
    return deduped


def parse(d: Directive) -> ForwardConfig:
    """``forward FROM TO... { except|force_tcp|prefer_udp|expire|max_fails|policy|health_check|max_concurrent }``."""
    from nodelocaldns.corefile.keys import normalize_zones

    if len(d.args) < 2:
        raise d.error("forward takes FROM TO...")
    from_zone = normalize_zones([d.args[0]])[0]
    upstreams = _to_upstreams(d, list(d.args[1:]))
    kw: dict[str, object] = {}
    for sub in d.block:
        a = sub.args
        if sub.name == "except":
            if not a:
                raise sub.error("except takes at least one name")
            kw["except_zones"] = tuple(normalize_zones(list(a)))
        elif sub.name in ("force_tcp", "prefer_udp"):
            if a:
                raise sub.error(f"{sub.name} takes no arguments")
            kw[sub.name] = True
        elif sub.name in ("expire", "read_timeout"):
            if len(a) != 1:
                raise sub.error(f"{sub.name} takes DURATION")
            try:
                v = parse_duration(a[0])
            except ValueError:
                raise sub.error(f"invalid duration {a[0]!r}") from None
            if v < 0:
                raise sub.error(f"{sub.name} can't be negative")
            kw[sub.name] = v
        elif sub.name in ("max_fails", "max_concurrent"):
            if len(a) != 1 or not a[0].isdigit():
                raise sub.error(f"{sub.name} takes a non-negative integer")
            kw[sub.name] = int(a[0])
        elif sub.name == "policy":
            if len(a) != 1 or a[0] not in ("random", "round_robin", "sequential"):
                raise sub.error("policy takes random|round_robin|sequential")
            kw["policy"] = a[0]
        elif sub.name == "health_check":
            if not a:
                raise sub.error("health_check takes DURATION [no_rec] [domain FQDN]")
            try:
                kw["health_check"] = parse_duration(a[0])
            except ValueError:
                raise sub.error(f"invalid duration {a[0]!r}") from None
            rest = list(a[1:])
            while rest:
                w = rest.pop(0)
                if w == "no_rec":
                    kw["health_no_rec"] = True
                elif w == "domain" and rest:
                    kw["health_domain"] = normalize_zones([rest.pop(0)])[0]
                else:
                    raise sub.error(f"health_check: unexpected argument {w!r}")
        else:
            raise sub.error(f"unknown property {sub.name!r} in forward")
    return ForwardConfig(from_zone, upstreams, **kw)  # type: ignore[arg-type]
