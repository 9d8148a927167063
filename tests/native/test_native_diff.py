"""The native packet-to-reply function against the Python fast path: same bytes, or both decline.

The reference is the real code: ``plugins/cache/fastpath.answer`` (TCP and UDP rules) and a real
UDPWorker thread on a loopback socket (its inlined copy), over a cache filled through
Listener.handle. The native Index gets the same entries through native.insert_entry. Times are
binary fractions so that float arithmetic is exact on both sides.
"""

from __future__ import annotations

import asyncio
import queue
import select
import socket
import struct
import threading
from collections.abc import Iterator

import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodelocaldns import native
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.server.listener import Listener, Router
from nodelocaldns.server.udp import UDPWorker
from support.cachefill import STORED, TABLE, Warm, warm

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

TYPES = {"A": 1, "AAAA": 28, "TXT": 16, "MX": 15}


def qname_wire(name: str, flips: list[bool]) -> bytes:
    out = bytearray()
    i = 0
    for label in name.rstrip(".").split("."):
        raw = bytearray(label.encode())
        for j in range(len(raw)):
            if i < len(flips) and flips[i]:
                raw[j] = raw[j] ^ 0x20 if chr(raw[j]).isalpha() else raw[j]
            i += 1
        out += bytes((len(raw),)) + raw
    return bytes(out) + b"\x00"


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    name, rdtype, _ttl = draw(st.sampled_from(TABLE))
    if draw(st.integers(0, 9)) == 0:
        rdtype = draw(st.sampled_from(sorted(TYPES)))
    # Most often as stored (owner names keep the stored case, so only that case is a fast hit).
    flips = [] if draw(st.integers(0, 2)) else draw(st.lists(st.booleans(), max_size=30))
    qname = qname_wire(name, flips)
    b2 = draw(st.sampled_from([0x01, 0x00, 0x01, 0x01]) | st.integers(0, 255))
    b3 = draw(st.sampled_from([0x00, 0x10, 0x20, 0x30]) | st.integers(0, 255))
    edns = draw(st.integers(0, 3))  # 0: no OPT
    head = struct.pack("!HBBHHHH", draw(st.integers(0, 0xFFFF)), b2, b3, 1, 0, 0, 1 if edns else 0)
    data = head + qname + struct.pack("!HH", TYPES[rdtype], draw(st.sampled_from([1, 1, 1, 3, 255])))
    if edns:
        size = draw(st.sampled_from([0, 100, 511, 512, 1232, 4096, 65535]) | st.integers(0, 65535))
        version = draw(st.sampled_from([0, 0, 0, 1]))
        ext = draw(st.sampled_from([0, 0, 0, 1]))
        flags = draw(st.sampled_from([0, 0x8000, 0x8000, 0x7FFF]))
        rdata = draw(st.sampled_from([b"", b"", b"\x00\x0a\x00\x08" + b"\x11" * 8]))
        data += b"\x00\x00\x29" + struct.pack("!HBBHH", size, ext, version, flags, len(rdata)) + rdata
    return data


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    data = draw(queries())
    how = draw(st.integers(0, 9))
    if how == 0 and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes((draw(st.integers(0, 255)),)) + data[i + 1 :]
    elif how == 1:
        data = data[: draw(st.integers(0, len(data)))]
    elif how == 2:
        data += draw(st.binary(min_size=1, max_size=8))
    elif how == 3:
        data = draw(st.binary(max_size=64))
    return data


times = st.integers(-128, 64 * 40).map(lambda k: STORED + k / 64)


def fresh(keepttl: bool) -> tuple[Warm, native.Index]:
    w = warm(keepttl)
    ix = native.new_index(256)
    assert w.mirror(ix) == len(w.cache.store) > 0
    return w, ix


def reference(w: Warm, data: bytes, now: float, tcp: bool) -> bytes | None:
    """The Python fast path's reply (fastpath.answer, the reference function), or None."""
    hit = fastpath.answer(data, now, w.router().memo, tcp)
    return None if hit is None else hit[0]


@settings(max_examples=400, deadline=None)
@given(keepttl=st.booleans(), steps=st.lists(st.tuples(packets(), times), min_size=1, max_size=6))
def test_reference_and_native_agree(keepttl: bool, steps: list[tuple[bytes, float]]) -> None:
    w, ix = fresh(keepttl)
    for data, now in sorted(steps, key=lambda s: s[1]):  # the clock only moves forward
        for tcp in (True, False):
            assert ix.answer(data, now, tcp=tcp) == reference(w, data, now, tcp), (data.hex(), now, tcp)


class Recording(UDPWorker):
    """The real UDP fast path; what it hands to the slow path is recorded instead of served."""

    def __init__(self, listener: Listener, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(listener, sock, loop)
        self.handed: queue.Queue[bytes] = queue.Queue()

    def slow(self, data: bytes, addr: tuple[str, int]) -> None:
        self.handed.put(data)
        self._done()  # the worker's slow-path cap counts this packet finished

    def oversized(self, data: bytes, addr: tuple[str, int]) -> None:
        self.handed.put(data)
        self._done()


class UDPReference:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.loop_thread.start()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.now = STORED
        self.listener = Listener("127.0.0.1", self.sock.getsockname()[1], Router({}), clock=lambda: self.now)
        self.worker = Recording(self.listener, self.sock, self.loop)
        self.worker.start()
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))

    def exchange(self, data: bytes) -> bytes | None:
        """The UDP fast path's reply, or None when it handed the packet to the slow path."""
        self.client.sendto(data, self.sock.getsockname())
        for _ in range(400):
            if select.select([self.client], [], [], 0.005)[0]:
                return self.client.recv(65535)
            try:
                self.worker.handed.get_nowait()
                return None
            except queue.Empty:
                pass
        raise AssertionError("the UDP worker neither answered nor handed off")

    def close(self) -> None:
        self.worker.close()
        self.client.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(2)
        self.loop.close()


@pytest.fixture(scope="module")
def udp_ref() -> Iterator[UDPReference]:
    ref = UDPReference()
    yield ref
    ref.close()


@settings(max_examples=200, deadline=None)
@given(keepttl=st.booleans(), steps=st.lists(st.tuples(packets(), times), min_size=1, max_size=4))
def test_udp_worker_and_native_agree(
    udp_ref: UDPReference, keepttl: bool, steps: list[tuple[bytes, float]]
) -> None:
    w, ix = fresh(keepttl)
    udp_ref.listener.set_router(w.router())
    for data, now in sorted(steps, key=lambda s: s[1]):
        udp_ref.now = now
        assert ix.answer(data, now) == udp_ref.exchange(data), (data.hex(), now)


def q(name: str, rdtype: str = "A", **kw: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def with_byte(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes((value,)) + data[at + 1 :]


# Golden vectors: (packet, seconds after store, keepttl, UDP hit?, TCP hit?). The expectation
# column keeps the comparison honest: both sides declining everything would fail here.
GOLDEN: list[tuple[str, bytes, float, bool, bool, bool]] = [
    ("plain", q("example.org."), 0.5, False, True, True),
    # Stored in lowercase: owner names keep the stored case, so another case is the chain's.
    ("mixed case", q("ExAmPlE.oRg."), 5.25, False, False, False),
    ("stored cased, asked so", q("Mixed.Example.org."), 1.0, False, True, True),
    ("stored cased, asked lower", q("mixed.example.org."), 1.0, False, False, False),
    ("dnssec ok", q("example.org.", want_dnssec=True), 2.0, False, True, True),
    ("checking disabled", with_byte(q("example.org."), 3, 0x10), 2.0, False, True, True),
    ("ad query", with_byte(q("ad.example.org."), 3, 0x20), 1.0, False, True, True),
    ("no rd", with_byte(q("example.org."), 2, 0x00), 1.0, False, True, True),
    ("denial", q("nx.example.org."), 1.0, False, True, True),
    ("cname chain", q("alias.example.org."), 3.0, False, True, True),
    ("big over 512 without edns", q("big.example.org.", "TXT"), 1.0, False, False, True),
    ("big with edns 1232", q("big.example.org.", "TXT", use_edns=0, payload=1232), 1.0, False, True, True),
    # Sizes below 512 are echoed and mean 512 as a limit: a big answer still needs TCP.
    ("big with edns 100", q("big.example.org.", "TXT", use_edns=0, payload=100), 1.0, False, False, True),
    ("edns 511", q("example.org.", use_edns=0, payload=511), 1.0, False, True, True),
    ("expired", q("example.org.", "AAAA"), 31.0, False, False, False),
    ("keepttl still fresh", q("example.org."), 29.5, True, True, True),
    ("keepttl expired", q("example.org."), 30.0, True, False, False),
    ("edns version 1", q("example.org.", use_edns=1), 1.0, False, False, False),
    ("opcode notify", with_byte(q("example.org."), 2, 0x21), 1.0, False, False, False),
    ("response", with_byte(q("example.org."), 2, 0x81), 1.0, False, False, False),
    ("trailing byte", q("example.org.") + b"\x00", 1.0, False, False, False),
    ("uncached type", q("example.org.", "MX"), 1.0, False, False, False),
    ("short header", q("example.org.")[:11], 1.0, False, False, False),
    ("cut question", q("example.org.")[:20], 1.0, False, False, False),
    (
        "oversized datagram",
        q("example.org.", use_edns=0, options=[]) + b"\x00" * 4100,
        1.0,
        False,
        False,
        False,
    ),
]


@pytest.mark.parametrize(("packet", "after", "keepttl", "udp_hit", "tcp_hit"),
                         [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])  # fmt: skip
def test_golden_vectors(
    udp_ref: UDPReference, packet: bytes, after: float, keepttl: bool, udp_hit: bool, tcp_hit: bool
) -> None:  # fmt: skip
    w, ix = fresh(keepttl)
    now = udp_ref.now = STORED + after
    tcp = ix.answer(packet, now, tcp=True)
    assert tcp == reference(w, packet, now, True)
    assert (tcp is not None) == tcp_hit
    udp_ref.listener.set_router(w.router())
    udp = ix.answer(packet, now)
    assert udp == reference(w, packet, now, False) == udp_ref.exchange(packet)
    assert (udp is not None) == udp_hit
    if udp is not None:
        m = dns.message.from_wire(udp)
        assert m.id == dns.message.from_wire(packet).id
