"""The server on the native hot path: workers per socket, the fallback, multisocket.

Runs in both modes under ``make test`` (the second pass sets NODELOCALDNS_NATIVE=0): each test
checks what its mode must do.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import dns.message
import dns.query
import pytest

from nodelocaldns import native
from support.inproc import inproc
from support.server import serve

HOSTS = "    hosts {{\n        198.18.0.7 web.example.\n    }}\n"


def corefile(extra: str = "") -> str:
    return ".:{PORT} {\n    bind 127.0.0.1\n" + extra + "    cache 30\n" + HOSTS.format() + "}\n"


def test_start_up_says_once_which_path_serves() -> None:
    with serve(corefile()) as s:
        for _ in range(3):
            assert s.query("web.example.").answer
        log = s.stderr()
    warned = log.count("native hot path not in use")
    if native.native_available():
        assert warned == 0
    else:
        assert warned == 1 and ("disabled by NODELOCALDNS_NATIVE=0" in log or "not built" in log)


def _udp_sockets_on(port: int) -> int:
    """UDP sockets bound to 127.0.0.1:port in this network namespace (/proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    return sum(1 for line in Path("/proc/net/udp").read_text().splitlines()[1:] if line.split()[1] == want)


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
def test_multisocket_opens_that_many_native_workers_and_all_answer() -> None:
    with inproc(corefile("    multisocket 3\n"), native=True) as h:
        nat = h.lst.native
        assert nat is not None and len(nat.workers) == 3 and _udp_sockets_on(h.port) == 3
        # Distinct client ports spread over the SO_REUSEPORT group: every reply is right.
        q = dns.message.make_query("web.example.", "A")
        for _ in range(40):
            r = dns.query.udp(q, "127.0.0.1", port=h.port, timeout=2)
            assert [rr.address for rrs in r.answer for rr in rrs] == ["198.18.0.7"]
        c = h.call(nat.counters)
        assert c["packets"] == 40 and c["hits"] >= 38 and c["hits"] + c["handed"] == 40
        # A reload that changes the count resizes the group; the cache (new generation) refills.
        text = corefile("    multisocket 1\n").replace("{PORT}", str(h.port))
        assert h.run(h.inst.reload(text))
        assert len(nat.workers) == 1 and _udp_sockets_on(h.port) == 1
        r = dns.query.udp(q, "127.0.0.1", port=h.port, timeout=2)
        assert r.answer
        # Counts of the retired workers survive the reload (plus the end-of-queue marks the two
        # retired sockets sent themselves, if their workers read them before stopping).
        assert 41 <= h.call(nat.counters)["packets"] <= 43


@pytest.mark.skipif(native.native_available(), reason="the pure-Python mode's test")
def test_without_the_extension_one_python_socket_serves() -> None:
    with inproc(corefile("    multisocket 3\n")) as h:
        assert h.lst.native is None and _udp_sockets_on(h.port) == 1
        assert dns.query.udp(
            dns.message.make_query("web.example.", "A"), "127.0.0.1", port=h.port, timeout=2
        ).answer


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
def test_misses_reach_python_in_batches() -> None:
    """A burst of misses costs the event loop a few wake-ups, not one per packet."""
    with inproc(corefile("    multisocket 1\n"), native=True) as h:
        nat = h.lst.native
        assert nat is not None
        wakes = [0]
        orig = nat._ready

        def counting(w: object, s: socket.socket) -> None:
            wakes[0] += 1
            orig(w, s)  # type: ignore[arg-type]

        (w, s) = nat.workers[0]
        h.call(lambda: h.loop.remove_reader(w.fileno()))
        h.call(lambda: h.loop.add_reader(w.fileno(), counting, w, s))
        # The loop is busy while the burst arrives (as under load): the misses wait in the ring.
        h.loop.call_soon_threadsafe(time.sleep, 0.3)
        socks = []
        for i in range(64):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.sendto(dns.message.make_query(f"m{i}.nx.example.", "A").to_wire(), ("127.0.0.1", h.port))
            socks.append(c)
        deadline = time.monotonic() + 5
        got = 0
        for c in socks:
            c.settimeout(max(deadline - time.monotonic(), 0.1))
            c.recv(4096)
            got += 1
            c.close()
        assert got == 64 and h.call(nat.counters)["handed"] == 64
        assert 1 <= wakes[0] <= 3
