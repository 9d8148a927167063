"""TCP connections waiting in a closing listener's queue go to its SO_REUSEPORT peer, not to a reset.

When a listening socket closes (a handover's old server, a SIGKILL), the kernel resets every
connection in its accept queue and every handshake in its SYN queue, although another listener of
the same SO_REUSEPORT group could take them. ``net.ipv4.tcp_migrate_req=1`` (Linux 5.14+, per
network namespace, IPv4 and IPv6 alike) makes it move them to another listener of the group
instead. The server sets it when its TCP port is shared with another live listener: at start-up
(a second server joins: if the first is then killed, its queue migrates) and before its own
listeners close. The node agent sets it at start-up whatever it finds: it owns the node's DNS
networking anyway. When the sysctl cannot be written (a read-only ``/proc/sys``, no privilege),
it says so once, with what follows.

Which listeners share a port is read from ``/proc/net/tcp{,6}`` (state ``0A``, LISTEN): pure
parsing here, the file read is the only I/O.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("nodelocaldns.server")

SYSCTL = Path("/proc/sys/net/ipv4/tcp_migrate_req")
HINT = "; set it on the node (sysctl -w net.ipv4.tcp_migrate_req=1, or the manifests' sysctl init container)"
_LISTEN = "0A"


def _address(hexaddr: str) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) order, 1 or 4 of them."""
    raw = b"".join(bytes.fromhex(hexaddr[i : i + 8])[::-1] for i in range(0, len(hexaddr), 8))
    return ipaddress.ip_address(raw).compressed


def listeners(tables: Iterable[str]) -> Counter[tuple[str, int]]:
    """(address, port) -> how many TCP sockets listen there, from /proc/net/tcp and tcp6 text."""
    found: Counter[tuple[str, int]] = Counter()
    for text in tables:
        for line in text.splitlines()[1:]:
            cols = line.split()
            if len(cols) < 4 or cols[3] != _LISTEN:
                continue
            addr, _, port = cols[1].partition(":")
            found[(_address(addr), int(port, 16))] += 1
    return found


def _read_tables() -> list[str]:
    out = []
    for name in ("tcp", "tcp6"):
        try:
            out.append(Path(f"/proc/net/{name}").read_text())
        except OSError:
            continue
    return out


def shared(ours: Iterable[tuple[str, int]], counts: Counter[tuple[str, int]]) -> list[tuple[str, int]]:
    """Our listen addresses where another socket listens too."""
    out = []
    for host, port in ours:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0] or "0.0.0.0").compressed
        except ValueError:
            continue
        if counts[(addr, port)] > 1:
            out.append((host, port))
    return out


class TCPMigrate:
    """Set ``tcp_migrate_req`` once it matters; warn once when it cannot be set."""

    def __init__(self, sysctl: Path = SYSCTL) -> None:
        self.sysctl = sysctl
        self._warned = False
        self.changed = False  # this process wrote the 1

    def ensure(self, why: str) -> bool:
        """True once the sysctl is 1 (already, or written now)."""
        try:
            if self.sysctl.read_text().strip() == "1":
                return True
        except FileNotFoundError:
            return self._cannot(why, "not available on this kernel (Linux 5.14+ has it)", hint=False)
        except OSError as exc:
            return self._cannot(why, f"off and cannot read {self.sysctl}: {exc.strerror or exc}")
        try:
            self.sysctl.write_text("1\n")
        except OSError as exc:
            return self._cannot(why, f"off and cannot write {self.sysctl}: {exc.strerror or exc}")
        self.changed = True
        log.info("[INFO] Set net.ipv4.tcp_migrate_req=1 (%s)", why)
        return True

    def _cannot(self, why: str, reason: str, hint: bool = True) -> bool:
        if not self._warned:
            self._warned = True
            # One line, what follows and what to do: a read-only /proc/sys is every container's
            # that is not privileged, the DaemonSet's agent included (docs/node-agent.md).
            log.warning(
                "[WARNING] net.ipv4.tcp_migrate_req is %s (%s): TCP connections waiting in a "
                "closing listener's queue are reset instead of moving to the other server%s",
                reason,
                why,
                HINT if hint else "",
            )
        return False

    def if_shared(self, ours: Iterable[tuple[str, int]], moment: str) -> bool:
        """Set it when one of ``ours`` (host, port) has another TCP listener; False if none has."""
        both = shared(list(ours), listeners(_read_tables()))
        if not both:
            return False
        host, port = both[0]
        return self.ensure(f"{moment}: tcp {host}:{port} has another listener")
