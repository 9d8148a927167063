"""Parse the ``forward`` directive (CoreDNS plugin/forward/setup.go)."""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass, field

from nodelocaldns.core.duration import format_duration, parse_duration
from nodelocaldns.corefile.model import Directive
from nodelocaldns.plugins.forward import tlsconfig

MAX_UPSTREAMS = 15
TLS_PORT = 853

# miekg/dns StringToRcode: what ``next`` and ``failover`` accept (case-insensitive).
RCODES: dict[str, int] = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5, "YXDOMAIN": 6,
    "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10, "BADSIG": 16, "BADVERS": 16, "BADKEY": 17,
    "BADTIME": 18, "BADMODE": 19, "BADNAME": 20, "BADALG": 21, "BADTRUNC": 22, "BADCOOKIE": 23,
}  # fmt: skip
DEFAULT_MAX_CONCURRENT = 1000


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str  # IP literal
    port: int
    tls: bool = False  # tls:// (DNS over TLS, RFC 7858)
    server_name: str = ""  # tls://IP%NAME: this upstream's own TLS server name

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
    # CoreDNS's default is 0 (unlimited); ours bounds sockets and memory when an upstream hangs.
    # An explicit ``max_concurrent 0`` still means unlimited. docs/configuration.md says why 1000.
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    read_timeout: float = 2.0
    timeout: float = 5.0  # CoreDNS defaultTimeout: the whole budget for one query
    max_age: float = 0.0  # close a pooled connection this long after it was opened; 0: never
    max_idle_conns: int = 0  # idle connections kept per upstream; 0: unlimited
    next_rcodes: tuple[int, ...] = ()  # hand these replies to the next ``forward`` of the block
    failover_rcodes: tuple[int, ...] = ()  # try the next upstream on these replies
    failfast: bool = False  # every upstream down: SERVFAIL at once instead of one random try
    tls_args: tuple[str, ...] | None = None  # the ``tls`` line's CERT KEY CA (None: no ``tls`` line)
    tls_servername: str = ""
    # Built once at setup (CoreDNS loads the files in setup too); shared by the block's TLS upstreams.
    tls_context: ssl.SSLContext | None = field(default=None, compare=False)


def parse_upstream(text: str) -> Upstream:
    """``IP``, ``IP:port``, ``[v6]:port``, ``dns://IP[:port]``, ``tls://IP[%NAME][:port]``.

    Raises ValueError.
    """
    t = text
    tls = False
    if t.startswith("dns://"):
        t = t[len("dns://") :]
    elif t.startswith("tls://"):
        t, tls = t[len("tls://") :], True
    elif "://" in t:
        raise ValueError(f"'{t.split('://')[0]}' is not supported as a destination protocol in forward")
    server_name = ""
    if tls and "%" in t:
        # CoreDNS splitZone: NAME sits between the last % and an optional :port after it.
        t, _, server_name = t.rpartition("%")
        if t.startswith("["):
            t += "]"
        if ":" in server_name:
            server_name, _, p = server_name.rpartition(":")
            t += ":" + p
        server_name = server_name.removesuffix("]")
    port = TLS_PORT if tls else 53
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
    return Upstream(str(ip), port, tls, server_name)


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
            if "destination protocol" in str(e):
                raise d.error(str(e)) from None
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
        elif sub.name in ("expire", "read_timeout", "max_age"):
            if len(a) != 1:
                raise sub.error(f"{sub.name} takes DURATION")
            try:
                # Go's ParseDuration takes a sign; the checks below say what a negative one means.
                v = parse_duration(a[0].lstrip("+-")) * (-1 if a[0].startswith("-") else 1)
            except ValueError:
                raise sub.error(f"invalid duration {a[0]!r}") from None
            if sub.name == "read_timeout" and v <= 0:
                raise sub.error(
                    f"read_timeout must be positive: {'-' if v < 0 else ''}{format_duration(-v if v < 0 else v)}"
                )
            if v < 0:
                raise sub.error(f"{sub.name} can't be negative: -{format_duration(-v)}")
            kw[sub.name] = v
        elif sub.name in ("next", "failover"):
            if not a:
                raise sub.error(f"{sub.name} takes RCODE...")
            codes = []
            for rc in a:
                code = RCODES.get(rc.upper())
                if code is None:
                    raise sub.error(f"{rc} is not a valid rcode")
                if sub.name == "failover" and code == 0:
                    raise sub.error("NoError cannot be used in failover")
                codes.append(code)
            key = "next_rcodes" if sub.name == "next" else "failover_rcodes"
            kw[key] = (*kw.get(key, ()), *codes)  # type: ignore[misc]
        elif sub.name == "failfast_all_unhealthy_upstreams":
            if a:
                raise sub.error("failfast_all_unhealthy_upstreams takes no arguments")
            kw["failfast"] = True
        elif sub.name == "max_idle_conns":
            if len(a) != 1 or not a[0].lstrip("+-").isdigit():
                raise sub.error("max_idle_conns takes an integer")
            if int(a[0]) < 0:
                raise sub.error(f"max_idle_conns can't be negative: {int(a[0])}")
            kw["max_idle_conns"] = int(a[0])
        elif sub.name == "tls":
            if len(a) > 3:
                raise sub.error("tls takes [CERT KEY] [CA]: at most three arguments")
            kw["tls_args"] = tuple(a)
        elif sub.name == "tls_servername":
            if len(a) != 1:
                raise sub.error("tls_servername takes NAME")
            kw["tls_servername"] = a[0]
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
    expire = float(kw.get("expire", 10.0))  # type: ignore[arg-type]
    max_age = float(kw.get("max_age", 0.0))  # type: ignore[arg-type]
    if 0 < max_age < expire:
        raise d.error(
            f"max_age ({format_duration(max_age)}) must not be less than expire ({format_duration(expire)})"
        )
    servername = str(kw.get("tls_servername", ""))
    for u in upstreams:
        if u.tls and u.server_name and servername:
            raise d.error(
                f"both forward ('{servername}') and proxy level ('{u.server_name}') TLS servernames "
                f"are set for upstream proxy 'tls://{u.label}'"
            )
    if any(u.tls for u in upstreams):
        args = kw.get("tls_args")
        try:
            kw["tls_context"] = tlsconfig.client_context(args if isinstance(args, tuple) else None)
        except tlsconfig.TLSConfigError as e:
            raise d.error(str(e)) from None
    return ForwardConfig(from_zone, upstreams, **kw)  # type: ignore[arg-type]
