"""What the kernel dropped at a UDP socket before anyone read it (its receive queue was full)."""

from __future__ import annotations

import socket
import sys

_SO_MEMINFO = 55  # linux/asm-generic/socket.h; Python's socket module does not name it
_MEMINFO_DROPS = 8  # SK_MEMINFO_DROPS: the u32 counting datagrams dropped at this socket


def queue_drops(socks: list[socket.socket]) -> int:
    """Datagrams the kernel dropped because these sockets' receive queues were full (SO_MEMINFO).

    Those were never read, so no other count has them: under a flood a reader that falls behind
    its socket loses queries here (the pure-Python thread on a loaded host, for one)."""
    total = 0
    for s in socks:
        try:
            raw = s.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 4 * (_MEMINFO_DROPS + 1))
        except OSError:  # closed, or a kernel without SO_MEMINFO (before 3.9): nothing to count
            continue
        if len(raw) >= 4 * (_MEMINFO_DROPS + 1):
            total += int.from_bytes(raw[4 * _MEMINFO_DROPS : 4 * _MEMINFO_DROPS + 4], sys.byteorder)
    return total
