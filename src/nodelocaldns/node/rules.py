"""The packet-filter rules node-cache installs, as data, and pure renderers for both backends.

``desired_rules`` reproduces node-cache's ``initIptables`` table (12 rules per local IP, same order,
same comments), for IPv4 and IPv6 addresses in one list: unlike node-cache, one process may serve
both families (dual-stack, kubernetes/dns #655). Everything here is text in, text out; the
backends in ``iptables.py`` and ``nft.py`` run the commands.

Two renderings exist:

* iptables (``to_iptables_args``, ``restore_text``): the exact argument order node-cache passes to
  ``iptables`` (``-p tcp -d IP --dport P -j NOTRACK -m comment --comment ...``), inserted with
  ``-I CHAIN 1`` like ``EnsureRule(Prepend)``; ``parse_iptables_save`` reads the normalised form
  ``iptables-save`` prints back (``-d IP/32 -p tcp -m tcp --dport P -m comment ... -j NOTRACK``).
* nftables (``nftrules.nft_script``): one ``inet`` table owning four base chains. The ``notrack``
  chains sit at ``priority raw`` (-300), before conntrack (-200) and any DNAT (kube-proxy's ``dstnat``), so
  they do what the iptables raw rules do. The ``accept`` chains are kept for parity and for their
  counters, but an ``accept`` only ends evaluation of *its own* base chain: every other base chain
  on the same hook (an iptables-nft ``filter`` table, a host firewall table) still runs and its
  ``drop`` wins. So in nft mode we cannot "punch through" another table's drop the way an iptables
  ``-I INPUT 1 ... -j ACCEPT`` does inside the shared ``filter`` table. We do not try to edit tables
  we do not own; an operator whose firewall drops untracked DNS must allow it there (for example
  ``ct state untracked accept`` or an explicit port rule). kube-proxy's own nftables rules only
  reject on ``ct state new``, which untracked packets never match, so the common case needs nothing.

Fail-safe (``Rule.socket``): the PREROUTING NOTRACK rules for a local IP that kube-proxy also serves
(every address that is not link-local, in practice the kube-dns ClusterIP) only match while a socket
is bound to that exact address and port: iptables ``-m socket --nowildcard``, nft ``socket wildcard
0`` (UDP) / ``socket transparent 0`` (TCP: nft's ``wildcard`` key gives up on the request socket of
a half-open connection, so the handshake's last ACK would be tracked and DNAT'd). With the agent
dead the packet is tracked again and kube-proxy's DNAT sends it to kube-dns. The kernel accepts
the socket match only in PREROUTING/INPUT, and nft's ``socket`` in OUTPUT looks at the sender, so
the host-network clients' rule (raw OUTPUT to a Service IP's DNS port) gets the other guard
(``Rule.owner``): it lives in an nft table of the agent's own with ``flags owner``, which the
kernel deletes the moment the agent's netlink socket closes (``node/owned.py``). See
docs/node-agent.md, "Fail-safe rules", for what was measured on which path.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from nodelocaldns.errors import ConfigError

COMMENT_SKIP_CONNTRACK = "NodeLocal DNS Cache: skip conntrack"
COMMENT_ALLOW_DNS = "NodeLocal DNS Cache: allow DNS traffic"
NFT_TABLE = "nodelocaldns"

Direction = Literal["src", "dst"]
Target = Literal["NOTRACK", "ACCEPT"]

_COMMENT_FOR_TARGET: dict[str, str] = {"NOTRACK": COMMENT_SKIP_CONNTRACK, "ACCEPT": COMMENT_ALLOW_DNS}

# node-cache's initIptables, one row per rule; "dns" is -dns.port, "health" is -health-port.
# Guarded rows yield to kube-proxy for a Service IP once the agent is gone (module docstring):
# "socket" rows match only while our listener is bound, "owner" rows live in the agent's own table.
# The INPUT ACCEPT never sees a DNAT'd packet, the ``src`` rules only see our own replies, and the
# health port has no kube-proxy path to yield to.
# (table, chain, proto, direction, port, target, guard)
Guard = Literal["", "socket", "owner"]
_RULE_TABLE: tuple[tuple[str, str, str, Direction, str, Target, Guard], ...] = (
    ("raw", "PREROUTING", "tcp", "dst", "dns", "NOTRACK", "socket"),
    ("raw", "PREROUTING", "udp", "dst", "dns", "NOTRACK", "socket"),
    ("filter", "INPUT", "tcp", "dst", "dns", "ACCEPT", ""),
    ("filter", "INPUT", "udp", "dst", "dns", "ACCEPT", ""),
    ("raw", "OUTPUT", "tcp", "src", "dns", "NOTRACK", ""),
    ("raw", "OUTPUT", "udp", "src", "dns", "NOTRACK", ""),
    ("filter", "OUTPUT", "tcp", "src", "dns", "ACCEPT", ""),
    ("filter", "OUTPUT", "udp", "src", "dns", "ACCEPT", ""),
    # host-network clients (kubernetes/dns PR #319)
    ("raw", "OUTPUT", "tcp", "dst", "dns", "NOTRACK", "owner"),
    ("raw", "OUTPUT", "udp", "dst", "dns", "NOTRACK", "owner"),
    # kubelet liveness probe to <localip>:health-port (PR #352)
    ("raw", "OUTPUT", "tcp", "dst", "health", "NOTRACK", ""),
    ("raw", "OUTPUT", "tcp", "src", "health", "NOTRACK", ""),
)
RULES_PER_IP = len(_RULE_TABLE)

# Section order in restore input and chain order in the nft table; also the only places rules may live.
_TABLES: tuple[str, ...] = ("raw", "filter")
CHAINS: tuple[tuple[str, str], ...] = (
    ("raw", "PREROUTING"),
    ("raw", "OUTPUT"),
    ("filter", "INPUT"),
    ("filter", "OUTPUT"),
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One packet-filter rule we own. Two rules are the same rule iff every field is equal.

    ``direction`` says which end both the address and the port match: ``dst`` is ``-d IP --dport P``,
    ``src`` is ``-s IP --sport P``. ``ip`` is stored in canonical (compressed) form so parsed and
    rendered rules compare equal. ``socket`` adds the "a socket is bound to IP:port" match (raw
    PREROUTING only, where the kernel allows it). ``owner`` says where the rule lives: in the
    agent's own nft table (``node/owned.py``), not in the rules backend.
    """

    family: int
    table: str
    chain: str
    proto: str
    direction: Direction
    ip: str
    port: int
    target: Target
    comment: str
    socket: bool = False
    owner: bool = False

    def __post_init__(self) -> None:
        addr = ipaddress.ip_address(self.ip)
        if addr.version != self.family:
            raise ValueError(f"rule family {self.family} does not match address {self.ip}")
        if (self.table, self.chain) not in CHAINS:
            raise ValueError(f"unsupported chain {self.table}/{self.chain}")
        if self.proto not in ("tcp", "udp") or self.direction not in ("src", "dst"):
            raise ValueError(f"unsupported match {self.proto}/{self.direction}")
        if self.target not in _COMMENT_FOR_TARGET or not 0 < self.port < 65536:
            raise ValueError(f"unsupported target/port {self.target}/{self.port}")
        if self.socket and (self.table, self.chain, self.direction) != ("raw", "PREROUTING", "dst"):
            raise ValueError("the socket match only exists for raw PREROUTING destination rules")
        if self.owner and (
            (self.table, self.chain, self.direction) != ("raw", "OUTPUT", "dst") or self.socket
        ):
            raise ValueError("only raw OUTPUT destination rules live in the agent's own table")
        object.__setattr__(self, "ip", addr.compressed)


def parse_local_ips(local_ips: Iterable[str]) -> tuple[str, ...]:
    """Canonical, de-duplicated addresses in input order; a bad address is a ConfigError."""
    out: list[str] = []
    for raw in local_ips:
        text = raw.strip()
        try:
            ip = ipaddress.ip_address(text).compressed
        except ValueError:
            raise ConfigError(f"invalid localip specified - {raw!r}") from None
        if ip not in out:
            out.append(ip)
    if not out:
        raise ConfigError("invalid localip specified - no address given")
    return tuple(out)


def has_kube_proxy_path(ip: str) -> bool:
    """Whether kube-proxy may also serve ``ip`` (so the agent's rules must yield when it is gone).

    A link-local address (169.254.20.10) is never a Service IP: without us a query there fails
    whatever the rules say, so its rules stay node-cache's unconditional ones.
    """
    return not ipaddress.ip_address(ip).is_link_local


def desired_rules(
    local_ips: Iterable[str], dns_port: int = 53, health_port: int = 8080, *, socket_guard: bool = True,
    owner_table: bool = False,
) -> list[Rule]:  # fmt: skip
    """node-cache's rule table for every local IP, in node-cache's order (IPs may mix families).

    ``socket_guard=False`` is the fallback for a kernel without the socket match: node-cache's
    rules exactly, which black-hole a Service IP while the agent is down. ``owner_table`` marks the
    host-network rules of a Service IP ``owner`` (they go to the agent's own table); off, they are
    node-cache's unconditional rules in the backend.
    """
    for what, port in (("dns port", dns_port), ("health port", health_port)):
        if not 0 < port < 65536:
            raise ConfigError(f"invalid {what} {port}")
    rules: list[Rule] = []
    for ip in parse_local_ips(local_ips):
        family = ipaddress.ip_address(ip).version
        guard_ip = socket_guard and has_kube_proxy_path(ip)
        for table, chain, proto, direction, which, target, guard in _RULE_TABLE:
            port = dns_port if which == "dns" else health_port
            comment = _COMMENT_FOR_TARGET[target]
            socket = guard == "socket" and guard_ip
            owner = guard == "owner" and owner_table and has_kube_proxy_path(ip)
            rules.append(
                Rule(family, table, chain, proto, direction, ip, port, target, comment, socket, owner)
            )
    return rules


def unique(rules: Iterable[Rule]) -> list[Rule]:
    """Rules with duplicates dropped, first occurrence order kept."""
    return list(dict.fromkeys(rules))


# ---------------------------------------------------------------- iptables


def to_iptables_args(rule: Rule) -> list[str]:
    """The rule spec exactly as node-cache passes it to iptables (no table, chain or verb)."""
    addr_flag, port_flag = ("-d", "--dport") if rule.direction == "dst" else ("-s", "--sport")
    socket = ["-m", "socket", "--nowildcard"] if rule.socket else []
    return [
        "-p", rule.proto, addr_flag, rule.ip, port_flag, str(rule.port), *socket,
        "-j", rule.target, "-m", "comment", "--comment", rule.comment,
    ]  # fmt: skip


def format_rule_go(rule: Rule) -> str:
    """The rule as node-cache logs it (Go ``%v`` of ``iptablesRule``), so log greps keep working."""
    return f"{{{rule.table} {rule.chain} [{' '.join(to_iptables_args(rule))}]}}"


def _restore_quote(arg: str) -> str:
    # iptables-restore splits on whitespace and honours double quotes with backslash escapes.
    if arg and not any(c in arg for c in " \t\"\\'"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


Op = Literal["-I", "-D"]


def restore_text(ops: Sequence[tuple[Op, Rule]], family: int) -> str:
    """``iptables-restore --noflush`` input applying ``ops`` for one family, one section per table.

    ``-I`` inserts at position 1 (``EnsureRule(Prepend)``); ``-D`` deletes the first copy that
    matches the full spec. Sections only for tables that have work; empty input for no work.
    """
    out: list[str] = []
    for table in _TABLES:
        lines = []
        for op, rule in ops:
            if rule.family != family or rule.table != table:
                continue
            pos = ["1"] if op == "-I" else []
            args = " ".join(_restore_quote(a) for a in to_iptables_args(rule))
            lines.append(" ".join([op, rule.chain, *pos, args]))
        if lines:
            out += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def iptables_restore_text(
    rules: Sequence[Rule], family: int, op: Literal["ensure", "delete"] = "ensure"
) -> str:
    """Insert (``ensure``) or delete one copy of each rule of ``family``, as restore input."""
    verb: Op = "-I" if op == "ensure" else "-D"
    return restore_text([(verb, r) for r in rules], family)


@dataclass(frozen=True, slots=True)
class SaveScan:
    """What ``iptables-save`` showed: our rules (every copy, in listing order) and lines carrying
    one of our comments that are not exactly one of our specs (left alone, reported)."""

    owned: tuple[Rule, ...]
    foreign: tuple[str, ...]


_OUR_COMMENTS = frozenset(_COMMENT_FOR_TARGET.values())


def parse_iptables_save(text: str, family: int) -> SaveScan:
    """Find our rules in ``iptables-save`` output (any tables it contains)."""
    owned: list[Rule] = []
    foreign: list[str] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A ") and any(c in line for c in _OUR_COMMENTS):
            rule = _parse_save_rule(table, line, family)
            if rule is None:
                foreign.append(line)
            else:
                owned.append(rule)
    return SaveScan(tuple(owned), tuple(foreign))


def _parse_save_rule(table: str, line: str, family: int) -> Rule | None:
    """A rule iff the line is exactly one of our specs (nothing more, nothing less), else None."""
    try:
        tokens = shlex.split(line)
    except ValueError:
        return None
    chain = tokens[1]
    fields: dict[str, str] = {}
    i = 2
    while i < len(tokens):
        tok = tokens[i]
        if tok == "-m" and i + 1 < len(tokens) and tokens[i + 1] in ("tcp", "udp", "comment"):
            i += 2
        elif tok == "-m" and tokens[i + 1 : i + 3] == ["socket", "--nowildcard"] and "socket" not in fields:
            fields["socket"] = "nowildcard"
            i += 3
        elif tok in ("-s", "-d", "-p", "--sport", "--dport", "--comment", "-j") and i + 1 < len(tokens):
            if tok in fields:
                return None
            fields[tok] = tokens[i + 1]
            i += 2
        elif tok == "--notrack" and fields.get("-j") == "CT":
            # older iptables print NOTRACK as its CT alias
            fields["-j"] = "NOTRACK"
            i += 1
        else:
            return None  # an option our rules never carry (interface, negation, ...)
    host = 32 if family == 4 else 128
    if ("-s" in fields) == ("-d" in fields) or ("--sport" in fields) == ("--dport" in fields):
        return None
    direction: Direction = "dst" if "-d" in fields else "src"
    if (direction == "dst") != ("--dport" in fields):
        return None
    addr, _, plen = fields["-d" if direction == "dst" else "-s"].partition("/")
    target = fields.get("-j", "")
    if (plen and plen != str(host)) or target not in _COMMENT_FOR_TARGET:
        return None
    try:
        return Rule(
            family=family,
            table=table,
            chain=chain,
            proto=fields.get("-p", ""),
            direction=direction,
            ip=addr,
            port=int(fields["--dport" if direction == "dst" else "--sport"]),
            target=target,  # type: ignore[arg-type]  # checked against _COMMENT_FOR_TARGET above
            comment=fields.get("--comment", ""),
            socket="socket" in fields,
        )
    except ValueError:
        return None
