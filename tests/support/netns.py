"""Throwaway network namespaces for root tests, and a way to run code inside one.

``netns()`` creates a namespace with ``lo`` up and always deletes it. ``run_in_netns(name, fn)``
runs ``fn`` in a fresh thread that has ``setns()``-ed into the namespace, so everything that thread
does — netlink sockets, ``asyncio.run`` and the subprocesses it forks (iptables, nft) — happens
inside the namespace, while the test process itself never leaves the host namespace. Reading
``/proc/net/...`` from that thread needs ``/proc/thread-self/net`` (``/proc/net`` follows the main
thread); ``conntrack_entries`` avoids the question by asking ``ip netns exec``.

Only root can do this; ``netns_available()`` says whether it works here.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, input=input, capture_output=True, text=True, timeout=30)


def netns_available() -> bool:
    if os.geteuid() != 0:
        return False
    name = f"nldprobe{os.getpid()}"
    if sh("ip", "netns", "add", name, check=False).returncode != 0:
        return False
    sh("ip", "netns", "del", name, check=False)
    return True


def ns_exec(
    ns: str, *argv: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``ns`` (``ip netns exec``)."""
    return sh("ip", "netns", "exec", ns, *argv, check=check, input=input)


@contextlib.contextmanager
def netns(prefix: str = "nldt") -> Iterator[str]:
    """A new namespace with ``lo`` up; deleted on exit whatever happened."""
    name = f"{prefix}{os.getpid()}x{next(_counter)}"
    sh("ip", "netns", "add", name)
    try:
        ns_exec(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def run_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Call ``fn()`` in a new thread that lives in ``ns``; return its result or raise its exception."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    # A dedicated thread, never a pool: a thread that joined a namespace must not run anything else.
    thread = threading.Thread(target=target, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def add_bridge(ns: str, name: str) -> None:
    """A bridge stands in for node-cache's dummy link (this kernel has no dummy driver)."""
    ns_exec(ns, "ip", "link", "add", name, "type", "bridge")


def add_veth(ns: str, name: str, peer: str, peer_ns: str | None = None) -> None:
    ns_exec(ns, "ip", "link", "add", name, "type", "veth", "peer", "name", peer)
    if peer_ns is not None:
        ns_exec(ns, "ip", "link", "set", peer, "netns", peer_ns)


def link_exists(ns: str, name: str) -> bool:
    return ns_exec(ns, "ip", "link", "show", "dev", name, check=False).returncode == 0


def addresses(ns: str, dev: str) -> set[str]:
    """Addresses on ``dev`` as ``ip/prefix`` strings (both families, global scope)."""
    out = ns_exec(ns, "ip", "-o", "addr", "show", "dev", dev, "scope", "global").stdout
    return {line.split()[3] for line in out.splitlines()}


def enable_conntrack(ns: str) -> None:
    """Make the namespace track connections: a fresh netns has no conntrack hooks until some rule
    needs them (kube-proxy's do on a real node)."""
    ns_exec(
        ns,
        "nft",
        "table inet nldtest_ct { chain out { type filter hook output priority 0; ct state new counter; }; }",
    )


def conntrack_entries(ns: str) -> list[str]:
    out = ns_exec(ns, "cat", "/proc/net/nf_conntrack", check=False)
    return [line for line in out.stdout.splitlines() if line.strip()]
