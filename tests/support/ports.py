"""Free loopback ports for servers started by tests and the bench.

Ports come from below the kernel's ephemeral range, so a server never collides with the
source port of a client socket (dig, dnsperf, the code under test) that the kernel picked.
"""

from __future__ import annotations

import os
import random
import socket
from typing import Literal

PortKind = Literal["udp", "tcp", "both"]

# Ports handed out by this process: the same port is never returned twice, even after the
# first holder released it, so two servers started back to back cannot race for one port.
_handed_out: set[int] = set()


def _port_range() -> tuple[int, int]:
    """The range to pick from: 20000 up to the start of the ephemeral range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = min(low, 65535)
    if low - 20000 < 1000:  # a host with a wide ephemeral range: use the top of the port space
        return _worker_slice(61000, 65535)
    return _worker_slice(20000, low)


def _worker_slice(low: int, high: int) -> tuple[int, int]:
    """Under pytest-xdist each worker picks from its own slice, so two workers never hand out one port.

    ``_handed_out`` only knows this process; without the split two workers could both see a port
    free and both start a server on it.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1):
        return low, high
    index, n = int(worker[2:]), int(count)
    size = (high - low) // n
    return low + index * size, low + (index + 1) * size


def _can_bind(family: socket.AddressFamily, kind: int, host: str, port: int) -> bool:
    with socket.socket(family, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def is_free(port: int, kind: PortKind = "both", host: str = "127.0.0.1") -> bool:
    """True if nothing holds ``port`` on ``host`` for the given transport(s)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kinds = {"udp": [socket.SOCK_DGRAM], "tcp": [socket.SOCK_STREAM]}.get(
        kind, [socket.SOCK_DGRAM, socket.SOCK_STREAM]
    )
    return all(_can_bind(family, k, host, port) for k in kinds)


def free_port(kind: PortKind = "both", hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A port that is free for ``kind`` on every address in ``hosts`` right now.

    Pass ``hosts=("127.0.0.1", "::1")`` for a server that listens on both loopbacks.
    """
    low, high = _port_range()
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(low, high)
        if port in _handed_out:
            continue
        if all(is_free(port, kind, host) for host in hosts):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free {kind} port in {low}-{high} on {', '.join(hosts)}")
