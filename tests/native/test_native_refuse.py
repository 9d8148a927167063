"""REFUSED past the slow path's room: the native worker's full ring and Python's cap give the bytes
the server writes past forward's max_concurrent (wire.error_reply), and nothing to a packet that is
not a plain query. Real sockets on 127.0.0.1; the worker's ring is never drained, so it stays full.
"""

from __future__ import annotations

import random
import socket
import struct

import dns.edns
import dns.flags
import dns.message
import pytest

from nodelocaldns import native
from nodelocaldns.dns import wire
from nodelocaldns.server.udp import refused_reply
from support.cachefill import warm


def _q(name: str, qid: int, *, edns: int = -1, payload: int = 1232, do: bool = False, cd: bool = False,
       rd: bool = True, ad: bool = False, options: list[dns.edns.Option] | None = None, rdtype: str = "A",
       rdclass: str = "IN") -> bytes:  # fmt: skip
    m = dns.message.make_query(name, rdtype, rdclass, use_edns=edns, payload=payload, want_dnssec=do,
                               options=options)  # fmt: skip
    m.id = qid
    m.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0) | (dns.flags.AD if ad else 0)
    return m.to_wire()


def _raw(qid: int, flags: int, counts: tuple[int, int, int, int], body: bytes) -> bytes:
    return struct.pack("!HH4H", qid, flags, *counts) + body


PLAIN = [
    _q("example.org.", 1),
    _q("Mixed.Case.Example.", 2, rd=False),
    _q("cd.example.", 3, cd=True, ad=True),  # CD is echoed, AD is not
    _q("edns.example.", 4, edns=0),
    _q("do.example.", 5, edns=0, do=True, payload=4096),
    _q("small.example.", 6, edns=0, payload=100),  # the size is echoed as sent, even below 512
    _q("opts.example.", 7, edns=0, options=[dns.edns.GenericOption(10, b"12345678")]),  # not echoed
    _q(".", 8, rdtype="NS"),
    _q(".".join(["a" * 63] * 3 + ["b" * 61]) + ".", 9),  # a 255-byte name
    _q("chaos.example.", 10, rdtype="TXT", rdclass="CH"),
    _raw(11, 0x0300, (1, 0, 0, 0), b"\x02tc\x00\x00\x01\x00\x01"),  # TC in a query: ignored
]
NOT_PLAIN = [
    _raw(20, 0x8100, (1, 0, 0, 0), b"\x01x\x00\x00\x01\x00\x01"),  # a response
    _raw(21, 0x2000, (1, 0, 0, 0), b"\x01x\x00\x00\x06\x00\x01"),  # NOTIFY
    _raw(22, 0x0100, (2, 0, 0, 0), b"\x01x\x00\x00\x01\x00\x01" * 2),
    _raw(23, 0x0100, (1, 1, 0, 0), b"\x01x\x00\x00\x01\x00\x01"),
    _raw(24, 0x0100, (1, 0, 0, 2), b"\x01x\x00\x00\x01\x00\x01"),
    _raw(25, 0x0100, (1, 0, 0, 0), b"\x01x\xc0\x0c\x00\x01\x00\x01"),  # a compression pointer
    _raw(26, 0x0100, (1, 0, 0, 0), b"\x01x\x00\x00\x01\x00\x01junk"),
    _raw(27, 0x0100, (1, 0, 0, 1), b"\x01x\x00\x00\x01\x00\x01\x00\x00\x29\x04"),  # a cut-off OPT
    _raw(28, 0x0100, (1, 0, 0, 1), b"\x01x\x00\x00\x01\x00\x01\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"),
    _raw(29, 0x0100, (1, 0, 0, 0), b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"),  # a 64-byte label
    _raw(30, 0x0100, (1, 0, 0, 0), (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01"),  # 257 bytes
    _raw(31, 0x0100, (1, 0, 0, 0), b"\x05ab"),  # the name runs past the end
]


@pytest.mark.parametrize("pkt", PLAIN, ids=[f"plain{i}" for i in range(len(PLAIN))])
def test_python_refused_reply_is_the_servers_error_reply(pkt: bytes) -> None:
    assert refused_reply(pkt) == wire.error_reply(pkt, wire.REFUSED, wire.parse_query(pkt))


@pytest.mark.parametrize("pkt", NOT_PLAIN, ids=[f"other{i}" for i in range(len(NOT_PLAIN))])
def test_python_refused_reply_skips_what_is_not_a_plain_query(pkt: bytes) -> None:
    assert refused_reply(pkt) is None


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
def test_a_full_native_ring_refuses_plain_queries_byte_for_byte_and_drops_the_rest() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    worker = native.module().serve_udp(sock.fileno(), native.new_index(16), batch=8, ring=2)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            fill = [_q(f"fill{i}.example.", 100 + i) for i in range(2)]  # the ring's two slots
            end = _q("end.example.", 999)  # replies come back in order: this one is the last
            for pkt in [*fill, *PLAIN, *NOT_PLAIN, end]:
                c.sendto(pkt, sock.getsockname())
            got: dict[int, bytes] = {}
            while 999 not in got:
                r = c.recv(4096)
                got[struct.unpack_from("!H", r)[0]] = r
        want = {struct.unpack_from("!H", p)[0]: wire.error_reply(p, wire.REFUSED, wire.parse_query(p))
                for p in [*PLAIN, end]}  # fmt: skip
        assert got == want
        c_ = worker.counters()
        n = len(PLAIN) + len(NOT_PLAIN) + 3
        assert (c_["packets"], c_["handed"], c_["refused"], c_["dropped"], c_["hits"]) == (
            n,
            2,
            len(PLAIN) + 1,
            len(NOT_PLAIN),
            0,
        )
        assert [d for d, _a in worker.drain()] == fill
    finally:
        worker.stop()
        sock.close()


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
def test_shed_refuses_names_the_index_does_not_hold_and_still_hands_over_the_ones_it_holds() -> None:
    w = warm()
    ix = native.new_index(256)
    w.mirror(ix)  # stored at the fake clock's STORED: expired on CLOCK_MONOTONIC, so never a hit
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    worker = native.module().serve_udp(sock.fileno(), ix, batch=8, ring=64)
    try:
        worker.shed(True)
        known, new = _q("example.org.", 1), _q("new.example.", 2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.sendto(known, sock.getsockname())
            c.sendto(new, sock.getsockname())
            assert c.recv(512) == wire.error_reply(new, wire.REFUSED, wire.parse_query(new))
            assert worker.wait(1.0) and [d for d, _a in worker.drain()] == [known]  # serve_stale's
            worker.shed(False)
            c.sendto(new, sock.getsockname())
            assert worker.wait(1.0) and [d for d, _a in worker.drain()] == [new]
        c_ = worker.counters()
        assert (c_["handed"], c_["refused"], c_["dropped"], c_["hits"]) == (2, 1, 0, 0)
    finally:
        worker.stop()
        sock.close()


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
def test_the_native_refusal_matches_python_on_mutated_packets() -> None:
    rng = random.Random(10)
    seeds = PLAIN + NOT_PLAIN
    pkts = []
    for i in range(600):
        p = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            if len(p) <= 12:
                break
            at = rng.randrange(12, len(p)) if rng.random() < 0.7 else rng.randrange(2, 12)
            if rng.random() < 0.8:
                p[at] = rng.choice((0, 1, 0x29, 0x3F, 0x40, 0xC0, rng.randrange(256)))
            elif rng.random() < 0.5:
                del p[at:]
            else:
                p[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        p[0:2] = struct.pack("!H", 1000 + i)
        if len(p) >= 12:
            pkts.append(bytes(p))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    worker = native.module().serve_udp(sock.fileno(), native.new_index(16), batch=8, ring=2)
    try:
        worker.shed(True)  # every packet is refused or dropped, none queued
        end = _q("end.example.", 999)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            got: dict[int, bytes] = {}
            for k in range(0, len(pkts), 50):  # in steps: the loopback queues stay short
                for p in pkts[k : k + 50]:
                    c.sendto(p, sock.getsockname())
                c.sendto(end, sock.getsockname())
                while (r := c.recv(4096)) != wire.error_reply(end, wire.REFUSED, wire.parse_query(end)):
                    got[struct.unpack_from("!H", r)[0]] = r
        want = {struct.unpack_from("!H", p)[0]: r for p in pkts if (r := refused_reply(p)) is not None}
        assert got == want
        assert 50 < len(want) < len(pkts)  # both outcomes were exercised
    finally:
        worker.stop()
        sock.close()
