"""``doctor``'s thin I/O layer: read the node (netlink, /proc, iptables/nft) and talk to the cache.

Every function observes and returns facts (``doctor_facts``); nothing here changes the node, apart
from the conntrack entry a control datagram may create. Reads use the caller's thread network
namespace (``/proc/thread-self/net``, netlink sockets opened here), so running in a thread that
joined another namespace works.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import dns.exception
import dns.message
import dns.rcode
from pyroute2 import IPRoute

from nodelocaldns.node.factory import kube_proxy_uses_nftables
from nodelocaldns.node.iptables import choose_variant
from nodelocaldns.node.nftrules import OWNED_TABLE_PREFIX, parse_nft_json
from nodelocaldns.node.rules import NFT_TABLE, Rule, parse_iptables_save
from nodelocaldns.tools.doctor_facts import (
    FR_ACT_TO_TBL,
    RT_TABLE_LOCAL,
    AddrFact,
    BackendRules,
    ConntrackProbe,
    HttpResult,
    LinkFact,
    PolicyFacts,
    QueryResult,
    RouteFact,
    RuleFact,
    RulesetFacts,
    SocketFact,
    family_of,
    parse_proc_net,
)
from nodelocaldns.tools.promtext import FetchError, http_get

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


# ---------------------------------------------------------------- netlink


def _attr(msg: Any, name: str, default: Any = None) -> Any:
    value = msg.get_attr(name)
    return default if value is None else value


def read_links() -> tuple[dict[str, LinkFact], dict[str, list[str]]]:
    """Every link with its host addresses, and for every address the links holding it."""
    links: dict[str, LinkFact] = {}
    holders: dict[str, list[str]] = {}
    with IPRoute() as ipr:
        names: dict[int, tuple[str, str | None, bool]] = {}
        for msg in ipr.link("dump"):
            kind = msg.get(("linkinfo", "kind"))
            names[msg["index"]] = (
                str(msg.get("ifname")),
                str(kind) if kind else None,
                bool(msg["flags"] & 1),
            )
        addrs: dict[int, list[AddrFact]] = {}
        for msg in ipr.addr("dump"):
            raw = msg.get("local") or msg.get("address")
            if raw is None:
                continue
            ip = ipaddress.ip_address(raw).compressed
            flags = int(msg.get("IFA_FLAGS") or msg["flags"])
            addrs.setdefault(msg["index"], []).append(AddrFact(ip, int(msg["prefixlen"]), flags))
            if msg["index"] in names:
                holders.setdefault(ip, []).append(names[msg["index"]][0])
    for index, (name, kind, up) in names.items():
        links[name] = LinkFact(name, index, kind, up, tuple(addrs.get(index, ())))
    return links, holders


def _link_names(ipr: Any) -> dict[int, str]:
    return {int(m["index"]): str(m.get("ifname")) for m in ipr.link("dump")}


def _route_fact(msg: Any, family: int, names: dict[int, str]) -> RouteFact:
    dst = msg.get("dst") or ""
    return RouteFact(
        family=family,
        table=int(_attr(msg, "RTA_TABLE", msg["table"])),
        dst=ipaddress.ip_address(dst).compressed if dst else "",
        dst_len=int(msg["dst_len"]),
        type=int(msg["type"]),
        dev=names.get(int(msg.get("oif") or 0), ""),
        gateway=str(msg.get("gateway") or ""),
    )


def read_routes(table: int, families: Sequence[int] = (4, 6)) -> list[RouteFact]:
    out: list[RouteFact] = []
    with IPRoute() as ipr:
        names = _link_names(ipr)
        for family in families:
            for msg in ipr.route("dump", table=table, family=_AF[family]):
                fact = _route_fact(msg, family, names)
                if fact.table == table:
                    out.append(fact)
    return out


def _rule_fact(msg: Any, family: int) -> RuleFact:
    dport = msg.get_attr("FRA_DPORT_RANGE")
    drange = (int(dport["start"]), int(dport["end"])) if dport else None
    src = msg.get_attr("FRA_SRC")
    dst = msg.get_attr("FRA_DST")
    mark = msg.get_attr("FRA_FWMARK")
    return RuleFact(
        family=family,
        priority=int(_attr(msg, "FRA_PRIORITY", 0)),
        table=int(_attr(msg, "FRA_TABLE", msg["table"])),
        action=int(msg["action"]),
        iif=str(_attr(msg, "FRA_IIFNAME", "")),
        oif=str(_attr(msg, "FRA_OIFNAME", "")),
        src=ipaddress.ip_address(src).compressed if src else "",
        src_len=int(msg["src_len"]),
        dst=ipaddress.ip_address(dst).compressed if dst else "",
        dst_len=int(msg["dst_len"]),
        fwmark=int(mark) if mark is not None else None,
        flags=int(msg["flags"]),
        l3mdev=bool(_attr(msg, "FRA_L3MDEV", 0)),
        ip_proto=int(msg.get_attr("FRA_IP_PROTO")) if msg.get_attr("FRA_IP_PROTO") is not None else None,
        dport_range=drange,
    )


def read_policy(families: Sequence[int]) -> PolicyFacts:
    """``ip rule`` for each family, and the routes of every table a rule ahead of ``local`` uses."""
    rules: list[RuleFact] = []
    tables: dict[tuple[int, int], tuple[RouteFact, ...]] = {}
    with IPRoute() as ipr:
        names = _link_names(ipr)
        for family in families:
            fam_rules = sorted(
                (_rule_fact(m, family) for m in ipr.rule("dump", family=_AF[family])),
                key=lambda r: r.priority,
            )
            rules += fam_rules
            local_prio = min((r.priority for r in fam_rules if r.table == RT_TABLE_LOCAL), default=None)
            wanted = {
                r.table
                for r in fam_rules
                if r.action == FR_ACT_TO_TBL and (local_prio is None or r.priority <= local_prio)
            }
            for table in wanted:
                routes = [
                    _route_fact(m, family, names) for m in ipr.route("dump", table=table, family=_AF[family])
                ]
                tables[(family, table)] = tuple(r for r in routes if r.table == table)
    return PolicyFacts(tuple(rules), tables)


# ---------------------------------------------------------------- /proc


def read_sockets() -> list[SocketFact]:
    out: list[SocketFact] = []
    proto: Literal["udp", "tcp"]
    for fname, proto in (("udp", "udp"), ("udp6", "udp"), ("tcp", "tcp"), ("tcp6", "tcp")):
        try:
            with open(f"/proc/thread-self/net/{fname}", encoding="ascii") as f:
                out += parse_proc_net(f.read(), proto)
        except OSError:
            continue  # no IPv6 in this kernel/namespace
    return out


# ---------------------------------------------------------------- packet filter


def _run(argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str, str]:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not installed"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv)}: timed out"
    return res.returncode, res.stdout, res.stderr


def read_rulesets(families: Sequence[int], nft_table: str = NFT_TABLE) -> RulesetFacts:
    """Our rules in iptables-nft, iptables-legacy and the nft table, without changing anything.

    Full ``*-save`` listings (no ``-t``): naming a table makes the legacy code create it.
    """
    backends: list[BackendRules] = []
    saves: dict[str, str] = {}
    for variant in ("nft", "legacy"):
        rules: list[Rule] = []
        errors: list[str] = []
        foreign = 0
        text_all = ""
        for family in families:
            tool = f"{'iptables' if family == 4 else 'ip6tables'}-{variant}-save"
            rc, out, err = _run([tool])
            if rc != 0:
                errors.append(err.strip() or f"{tool} exited {rc}")
                continue
            text_all += out
            scan = parse_iptables_save(out, family)
            rules += scan.owned
            foreign += len(scan.foreign)
        saves[variant] = text_all
        error = "; ".join(errors) if errors and len(errors) == len(families) else ""
        backends.append(BackendRules(f"iptables-{variant}", tuple(rules), error, foreign))
    rc, out, err = _run(["nft", "-j", "list", "table", "inet", nft_table])
    if rc == 0:
        nft_scan = parse_nft_json(out)
        backends.append(BackendRules("nft", nft_scan.owned, "", len(nft_scan.foreign)))
    elif "No such file or directory" in err:
        backends.append(BackendRules("nft"))
    else:
        backends.append(BackendRules("nft", (), err.strip() or f"nft exited {rc}"))
    rc, tables, _ = _run(["nft", "list", "tables"])
    if rc == 0:
        backends = _with_owned_tables(backends, tables)
    node_uses = ""
    if rc == 0 and kube_proxy_uses_nftables(tables):
        node_uses = "nft"
    elif "KUBE-" in saves["nft"] or "KUBE-" in saves["legacy"]:
        node_uses = f"iptables-{choose_variant(saves['nft'], saves['legacy'])}"
    return RulesetFacts(tuple(backends), node_uses)


def _with_owned_tables(backends: list[BackendRules], tables: str) -> list[BackendRules]:
    """The host-network rules of a Service IP live in each live agent's own table (``inet
    nodelocaldns-agent-*``, deleted by the kernel with its agent), not in the backend: they count
    for every backend that holds our other rules, once, however many agents hold a copy."""
    owned: set[Rule] = set()
    for line in tables.splitlines():
        if not line.startswith(f"table inet {OWNED_TABLE_PREFIX}"):
            continue
        # the chain, not the table: nft 1.0.6 cuts an owner table's JSON short at its flags
        rc, out, _ = _run(["nft", "-j", "list", "chain", "inet", line.split()[2], "raw_output"])
        if rc == 0:
            owned.update(parse_nft_json(out).owned)
    if not owned:
        return backends
    out_backends = []
    for b in backends:
        if b.rules:
            extra = tuple(r for r in sorted(owned, key=repr) if r not in b.rules)
            b = replace(b, rules=b.rules + extra)
        out_backends.append(b)
    return out_backends


# ---------------------------------------------------------------- DNS


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def query(
    ip: str, name: str, proto: Literal["udp", "tcp"], port: int = 53, timeout: float = 2.0, rdtype: str = "A"
) -> QueryResult:
    """One query on a connected socket (an ICMP port-unreachable is an immediate error, not a wait)."""
    wire = dns.message.make_query(name, rdtype).to_wire()
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    start = time.perf_counter()
    try:
        with socket.socket(_AF[family_of(ip)], kind) as s:
            s.settimeout(timeout)
            s.connect((ip, port))
            if proto == "udp":
                s.send(wire)
                while True:
                    data = s.recv(65535)
                    if len(data) >= 2 and data[:2] == wire[:2]:
                        break
            else:
                s.sendall(struct.pack("!H", len(wire)) + wire)
                (length,) = struct.unpack("!H", _recv_exact(s, 2))
                data = _recv_exact(s, length)
        elapsed = (time.perf_counter() - start) * 1000
        reply = dns.message.from_wire(data)
    except TimeoutError:
        return QueryResult(ip, name, proto, error=f"no answer within {timeout:g}s")
    except (OSError, EOFError) as e:
        return QueryResult(ip, name, proto, error=getattr(e, "strerror", None) or str(e))
    except dns.exception.DNSException as e:
        return QueryResult(ip, name, proto, error=f"bad reply: {e}")
    answers = sum(len(rrset) for rrset in reply.answer)
    return QueryResult(ip, name, proto, dns.rcode.to_text(reply.rcode()), answers, elapsed)


# ---------------------------------------------------------------- conntrack


def _conntrack_entries(family: int) -> list[Any]:
    from pyroute2 import Conntrack

    ct = Conntrack(nfgen_family=_AF[family])
    try:
        return list(ct.dump_entries())
    finally:
        ct.close()


def _describe_entry(e: Any) -> str:
    t = e.tuple_orig
    proto = {6: "tcp", 17: "udp"}.get(int(t.proto or 0), str(t.proto))
    return f"{proto} src={t.saddr} dst={t.daddr} sport={t.sport} dport={t.dport}"


def conntrack_probe(ip: str, port: int = 53, control_port: int = 9, timeout: float = 1.0) -> ConntrackProbe:
    """Send a DNS query to ip:port and a control datagram to ip:control_port, then look both up.

    The control (the discard port, never covered by a NOTRACK rule) tells "not tracked because of
    NOTRACK" apart from "not tracked because nothing tracks in this namespace".
    """
    fam = _AF[family_of(ip)]
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((ip, port))
            dns_sport = s.getsockname()[1]
            s.send(dns.message.make_query("conntrack-probe.nodelocaldns.invalid.", "A").to_wire())
            with contextlib.suppress(OSError):
                s.recv(65535)  # the entry (if any) exists whether or not an answer came back
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.connect((ip, control_port))
            ctl_sport = s.getsockname()[1]
            s.send(b"nodelocaldns doctor conntrack control")
    except OSError as e:
        return ConntrackProbe(ip, True, f"cannot send to {ip}: {e.strerror or e}", sent=False)
    try:
        entries = _conntrack_entries(family_of(ip))
    except Exception as e:  # netlink or permission problems become a reported fact
        return ConntrackProbe(ip, False, f"{type(e).__name__}: {e}")

    def ours(e: Any, sport: int, dport: int) -> bool:
        t = e.tuple_orig
        try:
            return (
                ipaddress.ip_address(t.daddr) == ipaddress.ip_address(ip)
                and int(t.sport) == sport
                and int(t.dport) == dport
            )
        except (TypeError, ValueError):
            return False

    dns_hits = [e for e in entries if ours(e, dns_sport, port)]
    ctl_hits = [e for e in entries if ours(e, ctl_sport, control_port)]
    return ConntrackProbe(
        ip,
        True,
        control_tracked=bool(ctl_hits),
        dns_tracked=bool(dns_hits),
        entries=tuple(_describe_entry(e) for e in dns_hits),
    )


# ---------------------------------------------------------------- HTTP


def http_probe(url: str, timeout: float = 2.0) -> HttpResult:
    start = time.perf_counter()
    try:
        status, body = http_get(url, timeout)
    except FetchError as e:
        return HttpResult(url, None, "", e.reason, (time.perf_counter() - start) * 1000, e.errno)
    return HttpResult(url, status, body, "", (time.perf_counter() - start) * 1000)


def safely(fn: Callable[[], Any]) -> tuple[Any, str]:
    """(result, "") or (None, error text): one broken probe must not hide the others' findings."""
    try:
        return fn(), ""
    except Exception as e:  # reported as that check's failure
        return None, f"{type(e).__name__}: {e}"
