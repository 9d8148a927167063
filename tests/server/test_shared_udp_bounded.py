"""A peer's DNS socket, read here during a handover (server/shared_udp.py), has the listener's bound.

A real server in process (support.inproc) with a real unbound behind it that then goes dark (a
blackhole on its port); the peer's socket is a real UDP socket the test hands to a SharedReader,
as node/sockshare.py does with the one a live peer passes over. A flood of unique names to it must
not queue without limit: past the listener's cap (counting what its own socket has in flight) a
plain query gets REFUSED at once, anything else is dropped, both counted, and names the cache holds
keep their reserve.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable

import dns.message
import dns.rcode
import pytest

from nodelocaldns import native
from nodelocaldns.server.settings import ServerConfig
from nodelocaldns.server.shared_udp import SharedReader
from support.inproc import Harness, inproc
from support.upstreams import UpstreamServer, blackhole_udp

needs_native = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

CAP = 16
RESERVE = CAP // 4
OWN = 4  # unique names sent to the listener's own socket first: in flight on the dead upstream
FLOOD = 3000  # unique names to the peer's socket, in bursts over about a second
ODD = 40  # packets that are not plain queries (two questions): dropped past the cap, never answered
STALE = [f"s{i}.cached.test." for i in range(8)]
SO_RCVBUFFORCE = 33  # root: a buffer above rmem_max, so the kernel drops nothing of the burst


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _two_questions(i: int) -> bytes:
    q = dns.message.make_query(f"odd{i}.flood.test.", "A", use_edns=False).to_wire()
    return q[:4] + b"\x00\x02" + q[6:] + q[12:]


class _Collector(threading.Thread):
    """Reads every reply to the client socket until told to stop."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.stop = threading.Event()
        self.replies: list[dns.message.Message] = []
        self.raw: list[bytes] = []

    def run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:  # closed under us: the test is over
                return
            self.raw.append(data)
            self.replies.append(dns.message.from_wire(data))

    def wait_for(self, name: str, timeout: float = 1.0) -> float:
        """Seconds until a reply for ``name`` is in (inf: none within ``timeout``)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if any(r.question and str(r.question[0].name) == name for r in self.replies[-50:]):
                return time.monotonic() - t0
            time.sleep(0.001)
        return float("inf")


def _peer_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    s.bind(("127.0.0.1", 0))
    return s


def _sample(h: Harness, reader: SharedReader) -> tuple[int, int]:
    """(tasks of the listener, queries in flight on its slow path from both sockets)."""
    lst = h.lst

    def read() -> tuple[int, int]:
        udp = lst.udp
        own = udp.n_handed - udp.n_finished if udp is not None else 0
        gate = getattr(lst, "shared", None)  # None: nothing bounds the peer's socket (the old reader)
        shared = gate.n_handed - gate.n_finished if gate is not None else len(reader._inflight)
        return len(lst.tasks), own + shared

    return h.call(read)


@pytest.mark.parametrize("own_side", ["python", pytest.param("native", marks=needs_native)])
def test_a_flood_on_a_peers_socket_is_bounded_refused_past_the_cap_and_counted(
    make_unbound: Callable[..., UpstreamServer], own_side: str
) -> None:
    up = make_unbound(
        {"cached.test.": [f"{n} 60 IN A 198.18.0.{i + 1}" for i, n in enumerate(STALE)]}, log_queries=False
    )
    text = (
        ".:{PORT} {\n    bind 127.0.0.1\n    cache 300 {\n        serve_stale 1h\n    }\n"
        f"    forward . {up.address} {{\n        max_concurrent 0\n        max_fails 0\n    }}\n}}\n"
    )
    with inproc(text, native=own_side == "native", config=ServerConfig(slow_path_max=CAP)) as h:
        for n in STALE:
            assert dns.message.from_wire(h.udp(dns.message.make_query(n, "A").to_wire())).answer
        h.advance(120)  # past their TTL: only serve_stale answers them now
        up.stop()
        with blackhole_udp(port=up.port) as hole, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            c.bind(("127.0.0.1", 0))
            got = _Collector(c)
            got.start()
            for i in range(OWN):  # the listener's own socket: its receive path's queries in flight
                c.sendto(dns.message.make_query(f"own{i}.flood.test.", "A").to_wire(), ("127.0.0.1", h.port))
            deadline = time.monotonic() + 3
            while hole.received < OWN and time.monotonic() < deadline:
                time.sleep(0.01)
            assert hole.received == OWN
            rss0 = _rss_mib()
            peer = _peer_socket()
            reader = SharedReader(h.lst, peer, h.loop)
            h.call(reader.start)
            dest = peer.getsockname()
            flood = [dns.message.make_query(f"u{i}.flood.test.", "A").to_wire() for i in range(FLOOD)]
            peak_tasks = peak_pending = 0
            peak_rss = rss0
            stale_lat: list[float] = []
            t0 = time.monotonic()
            for burst in range(0, FLOOD, 100):
                for q in flood[burst : burst + 100]:
                    c.sendto(q, dest)
                if burst == 1000:  # the cap is reached by now: names the cache holds use the reserve
                    for n in STALE:  # one at a time, as a client waits for its answer
                        c.sendto(dns.message.make_query(n, "A").to_wire(), dest)
                        stale_lat.append(got.wait_for(n))
                    for i in range(ODD):
                        c.sendto(_two_questions(i), dest)
                tasks, pending = _sample(h, reader)
                peak_tasks, peak_pending = max(peak_tasks, tasks), max(peak_pending, pending)
                peak_rss = max(peak_rss, _rss_mib())
                time.sleep(0.03)
            flood_s = time.monotonic() - t0
            # Everything admitted is answered within forward's 5 s budget (SERVFAIL), so by then
            # every packet sent has an answer or a count.
            sent = OWN + FLOOD + len(STALE) + ODD
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                tasks, pending = _sample(h, reader)
                if pending == 0 and len(got.replies) + h.lst.dropped()["udp"] >= sent:
                    break
                time.sleep(0.05)
            settle_s = time.monotonic() - t0
            got.stop.set()
            got.join(2)
            refused, dropped = h.lst.refused()["udp"], h.lst.dropped()["udp"]
            h.call(reader.release)
            forwarded = hole.received
        rcodes: dict[str, int] = {}
        for r in got.replies:
            rcodes[dns.rcode.to_text(r.rcode())] = rcodes.get(dns.rcode.to_text(r.rcode()), 0) + 1
        stale = {
            str(r.question[0].name): r
            for r in got.replies
            if r.question and "cached" in str(r.question[0].name)
        }
        figures = (
            f"flood {flood_s:.2f} s, settled {settle_s:.2f} s; peak tasks {peak_tasks}, peak in flight {peak_pending}; "
            f"RSS {rss0:.1f} -> peak {peak_rss:.1f} MiB; replies {rcodes}; refused {refused} dropped {dropped}; "
            f"upstream got {forwarded}; stale answered in {max(stale_lat) * 1000:.1f} ms at most"
        )
        print(figures)
        # Bounded: the listener's cap (own socket's queries included) plus the reserve, never the flood.
        assert peak_pending <= CAP + RESERVE and peak_tasks <= CAP + RESERVE, figures
        assert peak_rss - rss0 <= 20, figures
        # Every packet answered or counted: REFUSED at once past the cap (counted), SERVFAIL for the
        # admitted ones after forward's budget, serve_stale's answer for the cached names, and the
        # packets that are not plain queries dropped and counted.
        assert len(got.replies) + dropped == sent, figures
        assert dropped == ODD, figures
        assert rcodes.get("REFUSED", 0) == refused > 0, figures
        assert forwarded + len(STALE) >= CAP - OWN  # the cap admitted unique names to the upstream
        assert rcodes.get("SERVFAIL", 0) + refused + len(STALE) == sent - ODD, figures
        # The reserve: with the slow path at its cap, every cached name got its stale answer.
        assert sorted(stale) == sorted(STALE), figures
        assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in stale.values()), figures
        refused_bytes = [
            raw for raw in got.raw if struct.unpack("!H", raw[2:4])[0] & 0xF == dns.rcode.REFUSED
        ]
        assert len(refused_bytes) == refused
