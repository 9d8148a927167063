"""TCP connections queued at a server that goes away are answered by its SO_REUSEPORT peer.

Each test runs two ``serve`` processes on one port in a network namespace of its own (the sysctl
is per namespace: the host's is never touched). The second one finds the port shared and sets
``net.ipv4.tcp_migrate_req=1`` (server/tcp_migrate.py).

The first test makes the queue deterministic: the first server is stopped (SIGSTOP), so the
connections the kernel hashes to it wait in its accept queue with their query sent, and it is then
SIGKILLed. With the sysctl on, every one is answered by the second server; with it off (the test
turns it off again, as a node whose /proc/sys is read-only would have it), the kernel resets them.
The second test is a SIGTERM takeover under a stream of new connections: it guards the whole
path (established connections drained by the first server, new ones at the second), but on an idle
machine the first server's queue is rarely non-empty at the instant it closes, so it passes with
the sysctl off too; the first test is the one that pins the queue down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from support.netns import netns, netns_available, ns_exec, run_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

PORT = 5353
COREFILE = f".:{PORT} {{\n    bind 127.0.0.1\n    whoami\n}}\n"
SYSCTL = "net.ipv4.tcp_migrate_req"


@contextlib.contextmanager
def server(ns: str, tmp: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    conf = tmp / f"{name}.Corefile"
    conf.write_text(COREFILE)
    log = tmp / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "nodelocaldns",
                "serve",
                "--corefile",
                str(conf),
            ],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    proc.log = log  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 20
        while "nodelocaldns-" not in log.read_text():  # the banner: every listener is bound
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def query_bytes(i: int) -> bytes:
    wire = dns.message.make_query(f"q{i}.example.", "A", id=i).to_wire()
    return struct.pack("!H", len(wire)) + wire


def read_reply(s: socket.socket) -> dns.message.Message:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("closed before the answer")
            buf += chunk
        return buf

    (size,) = struct.unpack("!H", exact(2))
    return dns.message.from_wire(exact(size))


def sysctl(ns: str) -> str:
    return ns_exec(ns, "sysctl", "-n", SYSCTL).stdout.strip()


@pytest.mark.parametrize("migrate", [True, False], ids=["migrate", "kernel-default"])
def test_connections_queued_at_a_killed_server_are_answered_by_its_peer(
    tmp_path: Path, migrate: bool
) -> None:
    n = 64
    with netns("nldmig") as ns:
        assert sysctl(ns) == "0"  # a new namespace starts with the kernel's default
        with server(ns, tmp_path, "first") as first, server(ns, tmp_path, "second") as second:
            log = second.log.read_text()  # type: ignore[attr-defined]
            assert (
                f"Set {SYSCTL}=1 (a second server joined: tcp 127.0.0.1:{PORT} has another listener)" in log
            )
            assert sysctl(ns) == "1"
            if not migrate:
                ns_exec(ns, "sysctl", "-qw", f"{SYSCTL}=0")
            os.kill(first.pid, signal.SIGSTOP)

            def connect_all() -> list[socket.socket]:
                socks = []
                for i in range(n):
                    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
                    s.sendall(query_bytes(i))
                    socks.append(s)
                return socks

            socks = run_in_netns(ns, connect_all)
            try:
                time.sleep(0.3)  # the second server answers its share; the first's wait in its queue
                first.kill()
                first.wait(10)
                answered, reset = 0, 0
                for i, s in enumerate(socks):
                    try:
                        reply = read_reply(s)
                    except (ConnectionResetError, TimeoutError):
                        reset += 1
                        continue
                    assert reply.id == i
                    answered += 1
            finally:
                for s in socks:
                    s.close()
            assert second.poll() is None
    print(f"\ntcp_migrate_req={int(migrate)}: {answered} of {n} answered, {reset} reset")
    if migrate:
        assert (answered, reset) == (n, 0)
    else:
        # the kernel resets what was queued at the killed listener: what the sysctl is for
        assert reset > 0 and answered + reset == n


def test_a_sigterm_takeover_under_new_tcp_connections_resets_none(tmp_path: Path) -> None:
    with netns("nldmig") as ns:
        with server(ns, tmp_path, "first") as first, server(ns, tmp_path, "second") as second:
            results: dict[str, int] = {"answered": 0, "failed": 0}
            errors: list[str] = []
            stop = threading.Event()
            lock = threading.Lock()

            def client(k: int) -> None:
                i = 0
                while not stop.is_set() and i < 5000:  # bounded
                    i += 1
                    try:
                        with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
                            s.sendall(query_bytes(i))
                            ok = read_reply(s).id == i
                    except OSError as exc:
                        ok = False
                        with lock:
                            errors.append(repr(exc))
                    with lock:
                        results["answered" if ok else "failed"] += 1

            threads = [
                threading.Thread(target=lambda k=k: run_in_netns(ns, lambda: client(k))) for k in range(8)
            ]
            for t in threads:
                t.start()
            time.sleep(1.0)
            first.send_signal(signal.SIGTERM)
            assert first.wait(15) == 0
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(30)
            assert second.poll() is None
    print(f"\nSIGTERM takeover: {results['answered']} connections answered, {results['failed']} failed")
    assert results["failed"] == 0, errors[:5]
    assert results["answered"] > 200, results
