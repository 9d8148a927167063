"""The hosts-file format and its lookups (CoreDNS plugin/hosts/hostsfile.go, after Go's net/hosts.go).

A line is ``ADDRESS NAME [NAME...]``; ``#`` starts a comment; lines with fewer than two fields or an
address that does not parse are skipped silently. Names are lowercased and fully qualified, and only
names inside the plugin's zones are kept. ``*.`` as the leftmost label is a wildcard for exactly one
more label (never for the apex) and produces no PTR. An IPv4-mapped IPv6 address is an IPv4 address.

The plugin keeps two maps, the file's and the Corefile's inline lines; a lookup returns the file's
addresses first, then the inline ones (both are served, neither hides the other).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from nodelocaldns.core.zones import zone_match
from nodelocaldns.dns.wire import text_to_wire
from nodelocaldns.errors import WireError

IP4_ARPA = ".in-addr.arpa."
IP6_ARPA = ".ip6.arpa."


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go ``net.ParseIP`` after dropping an IPv6 zone (``fe80::1%lo0``); IPv4-mapped becomes IPv4."""
    text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def wildcard_of(name: str) -> str:
    """``foo.example.com.`` -> ``*.example.com.``; "" for a single label or the root."""
    i = 0
    while i < len(name) - 1:
        if name[i] == "." and not _escaped(name, i):
            return "*." + name[i + 1 :]
        i += 1
    return ""


def _escaped(s: str, i: int) -> bool:
    n = 0
    j = i - 1
    while j >= 0 and s[j] == "\\":
        n += 1
        j -= 1
    return n % 2 == 1


@dataclass(slots=True)
class HostsMap:
    """One source's entries. Address lists keep file order; packed bytes are what RDATA carries."""

    name4: dict[str, list[bytes]] = field(default_factory=dict)
    name6: dict[str, list[bytes]] = field(default_factory=dict)
    wild4: dict[str, list[bytes]] = field(default_factory=dict)
    wild6: dict[str, list[bytes]] = field(default_factory=dict)
    addr: dict[str, list[str]] = field(default_factory=dict)  # canonical IP text -> names

    def __len__(self) -> int:
        """Addresses plus reverse names: what ``coredns_hosts_entries`` counts."""
        n = sum(len(v) for m in (self.name4, self.name6, self.wild4, self.wild6) for v in m.values())
        return n + sum(len(v) for v in self.addr.values())


def parse_hosts(text: str, origins: tuple[str, ...] | list[str], auto_reverse: bool = True) -> HostsMap:
    out = HostsMap()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        f = line.split()
        if len(f) < 2:
            continue
        ip = parse_ip(f[0])
        if ip is None:
            continue
        v4 = ip.version == 4
        packed = ip.packed
        key = str(ip)
        for word in f[1:]:
            name = word.lower() if word.endswith(".") else word.lower() + "."
            if not zone_match(origins, name):
                continue
            if not _valid_name(name):
                # CoreDNS would keep it and then fail to pack any reply that holds it.
                continue
            if name.startswith("*."):
                (out.wild4 if v4 else out.wild6).setdefault(name, []).append(packed)
                continue
            (out.name4 if v4 else out.name6).setdefault(name, []).append(packed)
            if auto_reverse:
                out.addr.setdefault(key, []).append(name)
    return out


def _valid_name(name: str) -> bool:
    try:
        text_to_wire(name)
    except (WireError, UnicodeEncodeError):
        return False
    return True


def reverse_to_ip(qname: str) -> str:
    """``1.0.0.10.in-addr.arpa.`` -> ``10.0.0.1`` (canonical text), "" if it is not a full address."""
    if qname.endswith(IP4_ARPA):
        labels = qname[: -len(IP4_ARPA)].split(".")
        ip = parse_ip(".".join(reversed(labels)))
        return str(ip) if ip is not None and ip.version == 4 else ""
    if qname.endswith(IP6_ARPA):
        labels = qname[: -len(IP6_ARPA)].split(".")[::-1]
        if len(labels) != 32 or any(len(x) != 1 for x in labels):
            return ""
        groups = ["".join(labels[i : i + 4]) for i in range(0, 32, 4)]
        ip = parse_ip(":".join(groups))
        return str(ip) if ip is not None else ""
    return ""


@dataclass(slots=True)
class HostsTable:
    """What a lookup sees: the file's map (swapped on reload) and the inline map (fixed at setup)."""

    file: HostsMap = field(default_factory=HostsMap)
    inline: HostsMap = field(default_factory=HostsMap)

    def _family(self, host: str, v4: bool) -> list[bytes]:
        host = host.lower()
        out: list[bytes] = []
        for m in (self.file, self.inline):
            names, wild = (m.name4, m.wild4) if v4 else (m.name6, m.wild6)
            hit = names.get(host)
            if hit is None:
                pattern = wildcard_of(host)
                hit = wild.get(pattern) if pattern else None
            if hit:
                out.extend(hit)
        return out

    def v4(self, host: str) -> list[bytes]:
        return self._family(host, True)

    def v6(self, host: str) -> list[bytes]:
        return self._family(host, False)

    def names_of(self, addr: str) -> list[str]:
        """Reverse names of an address given as text ("" finds nothing)."""
        ip = parse_ip(addr) if addr else None
        if ip is None:
            return []
        key = str(ip)
        return [*self.file.addr.get(key, ()), *self.inline.addr.get(key, ())]

    def __len__(self) -> int:
        return len(self.file) + len(self.inline)


# -- reload ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What CoreDNS compares to decide that the file changed: modification time and size."""

    mtime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_mtime_ns, st.st_size)


def check_due(last_check: float | None, now: float, interval: float) -> bool:
    """Is a file check due? The first one runs at start-up; ``interval`` 0 means never again."""
    if last_check is None:
        return True
    return interval > 0 and now - last_check >= interval


def needs_reparse(seen: FileStamp | None, current: FileStamp | None) -> bool:
    """Re-read when the file can be stat'ed and its mtime or size differ from the last parse.

    A file that disappeared (``current`` None) keeps the last entries, as CoreDNS does.
    """
    return current is not None and current != seen
