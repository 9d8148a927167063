"""What ``doctor`` observed on the node, as plain data, and pure readers for kernel text formats.

The probes (``doctor_probe``) fill these from netlink, ``/proc`` and sockets; the checks
(``doctor_checks``) judge them. Nothing here does I/O, so every judgement can be tested from data.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, field
from typing import Literal

from nodelocaldns.node.rules import Rule

# rtnetlink route types (linux/rtnetlink.h)
RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST, RTN_ANYCAST, RTN_MULTICAST = 1, 2, 3, 4, 5
RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT, RTN_THROW, RTN_NAT = 6, 7, 8, 9, 10
ROUTE_TYPE_NAMES = {
    RTN_UNICAST: "unicast", RTN_LOCAL: "local", RTN_BROADCAST: "broadcast", RTN_ANYCAST: "anycast",
    RTN_MULTICAST: "multicast", RTN_BLACKHOLE: "blackhole", RTN_UNREACHABLE: "unreachable",
    RTN_PROHIBIT: "prohibit", RTN_THROW: "throw", RTN_NAT: "nat",
}  # fmt: skip
# fib rule actions and flags (linux/fib_rules.h)
FR_ACT_TO_TBL, FR_ACT_GOTO, FR_ACT_NOP = 1, 2, 3
FR_ACT_BLACKHOLE, FR_ACT_UNREACHABLE, FR_ACT_PROHIBIT = 6, 7, 8
FIB_RULE_INVERT, FIB_RULE_IIF_DETACHED, FIB_RULE_OIF_DETACHED = 0x2, 0x8, 0x10
RT_TABLE_MAIN, RT_TABLE_LOCAL = 254, 255
TABLE_NAMES = {RT_TABLE_LOCAL: "local", RT_TABLE_MAIN: "main", 253: "default"}
# address flags (linux/if_addr.h)
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40


def table_name(table: int) -> str:
    return TABLE_NAMES.get(table, str(table))


def host_prefixlen(ip: str) -> int:
    return 32 if ipaddress.ip_address(ip).version == 4 else 128


def family_of(ip: str) -> int:
    return ipaddress.ip_address(ip).version


@dataclass(frozen=True, slots=True)
class AddrFact:
    ip: str
    prefixlen: int
    flags: int = 0

    @property
    def unusable(self) -> bool:
        """An IPv6 address still doing (or failed at) duplicate address detection cannot be bound."""
        return family_of(self.ip) == 6 and bool(self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))


@dataclass(frozen=True, slots=True)
class LinkFact:
    name: str
    index: int
    kind: str | None
    up: bool
    addrs: tuple[AddrFact, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteFact:
    family: int
    table: int
    dst: str  # "" for a default route
    dst_len: int
    type: int = RTN_UNICAST
    dev: str = ""
    gateway: str = ""

    def covers(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        if addr.version != self.family:
            return False
        if not self.dst:
            return self.dst_len == 0
        return addr in ipaddress.ip_network(f"{self.dst}/{self.dst_len}", strict=False)

    def render(self) -> str:
        """``ip route`` style: ``default via 10.0.32.1 dev vlan.eth.2``, ``local 169.254.20.10 dev x``."""
        dst = "default" if not self.dst and self.dst_len == 0 else (
            self.dst if self.dst_len == host_prefixlen(self.dst) else f"{self.dst}/{self.dst_len}"
        )  # fmt: skip
        words = [] if self.type == RTN_UNICAST else [ROUTE_TYPE_NAMES.get(self.type, str(self.type))]
        words.append(dst)
        if self.gateway:
            words += ["via", self.gateway]
        if self.dev:
            words += ["dev", self.dev]
        words += ["table", table_name(self.table)]
        return " ".join(words)


@dataclass(frozen=True, slots=True)
class RuleFact:
    """One ``ip rule`` entry."""

    family: int
    priority: int
    table: int = 0
    action: int = FR_ACT_TO_TBL
    iif: str = ""
    oif: str = ""
    src: str = ""
    src_len: int = 0
    dst: str = ""
    dst_len: int = 0
    fwmark: int | None = None
    flags: int = 0
    l3mdev: bool = False
    ip_proto: int | None = None
    dport_range: tuple[int, int] | None = None

    @property
    def detached(self) -> bool:
        """An ``iif``/``oif`` rule whose interface does not exist matches nothing."""
        return bool(self.flags & (FIB_RULE_IIF_DETACHED | FIB_RULE_OIF_DETACHED))

    def may_match_dns_to(self, ip: str, port: int) -> bool:
        """Could a DNS query to ``ip:port`` match this rule's selector? Conservative: unknown is yes."""
        if self.detached or self.l3mdev:
            return False
        if self.flags & FIB_RULE_INVERT:
            return True
        if self.dst and self.dst_len:
            net = ipaddress.ip_network(f"{self.dst}/{self.dst_len}", strict=False)
            if ipaddress.ip_address(ip) not in net:
                return False
        if self.ip_proto is not None and self.ip_proto not in (6, 17):
            return False
        if self.dport_range is not None and not self.dport_range[0] <= port <= self.dport_range[1]:
            return False
        return True

    def render(self) -> str:
        """``ip rule`` style: ``10: from all iif vlan.eth.2 lookup 102``."""
        words = [f"{self.priority}:"]
        if self.flags & FIB_RULE_INVERT:
            words.append("not")
        words += ["from", f"{self.src}/{self.src_len}" if self.src and self.src_len != host_prefixlen(self.src)
                  else (self.src or "all")]  # fmt: skip
        if self.dst:
            words += [
                "to",
                self.dst if self.dst_len == host_prefixlen(self.dst) else f"{self.dst}/{self.dst_len}",
            ]
        if self.fwmark is not None:
            words += ["fwmark", hex(self.fwmark)]
        if self.iif:
            words += ["iif", self.iif]
        if self.oif:
            words += ["oif", self.oif]
        if self.ip_proto is not None:
            words += ["ipproto", str(self.ip_proto)]
        if self.dport_range is not None:
            lo, hi = self.dport_range
            words += ["dport", str(lo) if lo == hi else f"{lo}-{hi}"]
        actions = {
            FR_ACT_BLACKHOLE: "blackhole",
            FR_ACT_UNREACHABLE: "unreachable",
            FR_ACT_PROHIBIT: "prohibit",
        }
        if self.l3mdev:
            words.append("lookup [l3mdev-table]")
        elif self.action == FR_ACT_TO_TBL:
            words += ["lookup", table_name(self.table)]
        elif self.action in actions:
            words.append(actions[self.action])
        else:
            words.append(f"action {self.action}")
        return " ".join(words)


@dataclass(frozen=True, slots=True)
class SocketFact:
    """A socket from ``/proc/net/{udp,tcp}{,6}``: bound (UDP) or listening (TCP) on ip:port."""

    proto: Literal["udp", "tcp"]
    ip: str
    port: int
    listening: bool


def _proc_ip(hexaddr: str) -> str:
    """``/proc/net`` addresses are the raw in-memory words: each 32-bit word in host byte order."""
    raw = bytes.fromhex(hexaddr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw).compressed


TCP_LISTEN = 0x0A


def parse_proc_net(text: str, proto: Literal["udp", "tcp"]) -> list[SocketFact]:
    """Sockets from one ``/proc/net/{udp,udp6,tcp,tcp6}`` file."""
    out: list[SocketFact] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1]:
            continue
        addr, _, port = parts[1].rpartition(":")
        try:
            state = int(parts[3], 16)
            ip = _proc_ip(addr)
            number = int(port, 16)
        except ValueError:
            continue
        listening = state == TCP_LISTEN if proto == "tcp" else True
        out.append(SocketFact(proto, ip, number, listening))
    return out


def covering_listener(sockets: list[SocketFact], proto: str, ip: str, port: int) -> SocketFact | None:
    """The socket that would receive ``proto`` traffic to ip:port: an exact bind, else a wildcard
    one (``0.0.0.0``, or ``::`` which also takes IPv4 unless IPV6_V6ONLY, invisible here)."""
    family = family_of(ip)
    candidates = [s for s in sockets if s.proto == proto and s.port == port and s.listening]
    for s in candidates:
        if s.ip == ip:
            return s
    wild = ["0.0.0.0", "::"] if family == 4 else ["::"]
    for s in candidates:
        if s.ip in wild:
            return s
    return None


@dataclass(frozen=True, slots=True)
class BackendRules:
    """Our rules as one backend holds them, or why they could not be read."""

    backend: str
    rules: tuple[Rule, ...] = ()
    error: str = ""
    foreign: int = 0


@dataclass(frozen=True, slots=True)
class RulesetFacts:
    backends: tuple[BackendRules, ...]
    node_uses: str = ""  # "iptables-nft", "iptables-legacy", "nft" or "" (no kube-proxy rules seen)


@dataclass(frozen=True, slots=True)
class QueryResult:
    ip: str
    name: str
    proto: Literal["udp", "tcp"]
    rcode: str = ""  # "" when no answer arrived
    answers: int = 0
    elapsed_ms: float = 0.0
    error: str = ""

    @property
    def answered(self) -> bool:
        return bool(self.rcode)


@dataclass(frozen=True, slots=True)
class CacheProbe:
    """Two identical queries in a row and what the cache counters did around the second one."""

    first: QueryResult
    second: QueryResult | None = None
    hits_delta: float | None = None  # None: metrics unavailable


@dataclass(frozen=True, slots=True)
class LookupFacts:
    """Everything learned about one name through one local IP."""

    ip: str
    name: str
    cache: CacheProbe
    tcp: QueryResult | None = None


@dataclass(frozen=True, slots=True)
class ConntrackProbe:
    ip: str
    available: bool
    error: str = ""
    sent: bool = True
    control_tracked: bool = False
    dns_tracked: bool = False
    entries: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpResult:
    url: str
    status: int | None = None
    body: str = ""
    error: str = ""
    elapsed_ms: float = 0.0
    errno: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    rules: tuple[RuleFact, ...]
    tables: dict[tuple[int, int], tuple[RouteFact, ...]] = field(default_factory=dict)
