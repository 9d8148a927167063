"""Misses the native workers send upstream themselves (server/native_exchange.py, native/README.md):
real servers (native workers, and the pure-Python path to compare with), real unbound upstreams
and a real blackholed UDP port, dnspython-built queries over loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nodelocaldns import native
from nodelocaldns.plugins.cache import metrics as cache_metrics
from nodelocaldns.plugins.forward import ForwardRuntime
from nodelocaldns.plugins.forward.metrics import COUNTERS
from nodelocaldns.plugins.prometheus import metrics as dns_metrics
from nodelocaldns.server.native_udp import NativeUDPServer
from support.inproc import Harness, inproc, query
from support.nx import Capture, answer_to
from support.ports import free_port
from support.upstreams import Blackhole, UpstreamServer, blackhole_udp, unbound_server

MakeUnbound = Callable[..., UpstreamServer]


def _has_nx() -> bool:
    return native.native_available() and hasattr(native.module().Index, "set_forward")


pytestmark = pytest.mark.skipif(not _has_nx(), reason="no native exchange in this build")

ZONES = {
    "nx.test.": [
        "a.nx.test. 300 IN A 198.18.5.1",  # TTL above the cache's 30
        "b.nx.test. 5 IN A 198.18.5.2",
        "c1.nx.test. 60 IN CNAME c2.nx.test.",
        "c2.nx.test. 60 IN CNAME a.nx.test.",
        "mx.nx.test. 30 IN MX 10 a.nx.test.",
        *(f'big.nx.test. 30 IN TXT "{"x" * 60} {i}"' for i in range(40)),
    ]
}
# (name as sent, qtype, EDNS, DO, CD, EDNS size)
QUERIES = [
    ("a.nx.test.", 1, False, False, False, 0),
    ("A.Nx.TEST.", 1, True, False, False, 1232),  # mixed case: the question's case comes back
    ("b.nx.test.", 1, True, True, False, 4096),
    ("c1.nx.test.", 1, True, False, True, 1232),  # a CNAME chain
    ("mx.nx.test.", 15, False, False, False, 0),
    ("nope.nx.test.", 1, True, False, False, 1232),  # NXDOMAIN
    ("a.nx.test.", 28, True, True, False, 1232),  # NODATA
    ("big.nx.test.", 16, False, False, False, 0),  # truncated to 512
    ("big.nx.test.", 16, True, False, False, 700),  # truncated to this client's size
]


def _corefile(body: str) -> str:
    return f".:{{PORT}} {{\n    bind 127.0.0.1\n    errors\n    cache 30\n{body}}}\n"


def _plain(*ups: str, opts: str = "") -> str:
    body = f"    forward . {' '.join(ups)} {{\n        policy sequential\n{opts}    }}\n"
    return _corefile(body + f"    prometheus 127.0.0.1:{free_port()}\n")


def _nat(h: Harness) -> NativeUDPServer:
    nat = h.lst.native
    assert isinstance(nat, NativeUDPServer)
    return nat


def _nx(h: Harness) -> dict[str, int]:
    return h.call(h.lst.native_exchanges) if h.lst.native is not None else {}


def _samples(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """coredns_dns_* and coredns_cache_* as scraped, the listener label left out; request durations
    only as counts (their buckets depend on timing)."""

    def collect() -> list[Any]:
        return dns_metrics.collect(h.inst.host) + cache_metrics.collect(h.inst.host)

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in h.call(collect):
        if not fam.name.startswith(("coredns_dns_", "coredns_cache_")):
            continue
        for s in fam.samples:
            if "duration" in s.name and not s.name.endswith("_count"):
                continue
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "server"))
            out[(s.name, labels)] = s.value
    return out


def _forward_counts(to: str) -> dict[str, float]:
    return {rc: sum(v[:-1]) for (t, rc), v in COUNTERS.durations.items() if t == to}


def _store(h: Harness) -> list[bytes]:
    store = h.cache().store
    return sorted(h.call(lambda: [k for m in store.maps for k in m]))


def _ask_all(h: Harness) -> list[bytes]:
    out = []
    for i, (name, qtype, edns, do, cd, size) in enumerate(QUERIES):
        data = bytearray(query(name, qtype, qid=0x5000 + i, edns=edns, do=do, size=size or 1232))
        if cd:
            data[3] |= 0x10
        out.append(h.udp(bytes(data)))
    return out


@pytest.fixture
def up() -> Iterator[UpstreamServer]:
    with unbound_server(ZONES) as server:
        yield server


def test_native_exchange_sends_the_bytes_stores_and_counts_what_the_python_path_does(
    up: UpstreamServer,
) -> None:
    with inproc(_plain(up.address), native=True) as nx:
        base = _forward_counts(up.address)
        got = _ask_all(nx)
        nx_fwd = _forward_counts(up.address)
        sent = _nx(nx)
        fams = nx.call(lambda: dns_metrics.collect(nx.inst.host))
        fam = next(f for f in fams if f.name == "nodelocaldns_forward_native_exchanges")
        nx_samples_ours = {s.labels["result"]: s.value for s in fam.samples}
        again_nx = _ask_all(nx)  # hits, from what the cache stored
        nx_samples, nx_store = _samples(nx), _store(nx)
        base2 = _forward_counts(up.address)  # again_nx asked what the cache does not hold (TC)
    with inproc(_plain(up.address), native=False) as py:
        want = _ask_all(py)
        py_fwd = _forward_counts(up.address)
        again_py = _ask_all(py)
        py_samples, py_store = _samples(py), _store(py)
    assert got == want and again_nx == again_py
    assert nx_store == py_store and len(nx_store) >= 5
    assert nx_samples == py_samples
    delta_nx = {k: nx_fwd.get(k, 0) - base.get(k, 0) for k in py_fwd}
    delta_py = {k: py_fwd.get(k, 0) - base2.get(k, 0) for k in py_fwd}
    assert delta_nx == delta_py and sum(delta_nx.values()) == 8  # 8 distinct questions went upstream
    assert sent.get("sent") == 8 and sent.get("replies") == 8 and not sent.get("timeouts")
    assert nx_samples_ours["sent"] == 8 and nx_samples_ours["replies"] == 8  # as /metrics shows them


def test_a_block_with_log_or_rewrite_keeps_its_misses_in_python(up: UpstreamServer) -> None:
    for extra in ("    log\n", "    rewrite name exact alias.nx.test. a.nx.test.\n"):
        with inproc(_corefile(extra + f"    forward . {up.address}\n"), native=True) as h:
            r = h.udp(query("a.nx.test.", 1))
            assert r[3] & 0xF == 0 and r[7] == 1
            assert _nx(h).get("sent", 0) == 0
        with inproc(_corefile(f"    forward . {up.address}\n"), native=True) as h:
            h.udp(query("a.nx.test.", 1))
            assert _nx(h).get("sent") == 1  # the same block without it goes native


def test_a_cache_the_index_does_not_mirror_keeps_its_misses_in_python(up: UpstreamServer) -> None:
    # prefetch: the index holds none of its entries, so the worker would send its every hit upstream.
    text = f".:{{PORT}} {{\n    bind 127.0.0.1\n    cache 30 {{\n        prefetch 2\n    }}\n    forward . {up.address}\n}}\n"
    with inproc(text, native=True) as h:
        for _ in range(3):
            assert h.udp(query("a.nx.test.", 1))[7] == 1
        assert _nx(h).get("sent", 0) == 0 and up.query_count("a.nx.test.") == 1


def test_a_blackholed_upstream_times_out_natively_and_the_next_one_answers_in_the_budget(
    up: UpstreamServer, udp_blackhole: Blackhole
) -> None:
    opts = "        read_timeout 500ms\n"
    with inproc(_plain(udp_blackhole.address, up.address, opts=opts), native=True) as h:
        t0 = time.monotonic()
        r = h.udp(query("b.nx.test.", 1, qid=0x99), timeout=5.0)
        took = time.monotonic() - t0
        assert r[:2] == b"\x00\x99" and r[3] & 0xF == 0 and r[7] == 1
        assert took < 5.0
        nx = _nx(h)
        assert nx.get("sent") == 1 and nx.get("timeouts") == 1
        assert udp_blackhole.received >= 1  # the worker's attempt (and forward's health probes)


def test_a_down_upstream_leaves_the_table_and_comes_back_when_its_health_check_passes(
    up: UpstreamServer,
) -> None:
    opts = "        read_timeout 300ms\n        max_fails 1\n        health_check 100ms\n"
    port = free_port("both")
    with inproc(_plain(f"127.0.0.1:{port}", up.address, opts=opts), native=True) as h:
        fwd = next(
            rt for rt in h.lst.router.zones["."].runtimes if isinstance(rt, ForwardRuntime)
        ).forwarders[0]
        nix = _nat(h).nix

        def upstreams() -> list[tuple[str, int]]:
            table = h.call(lambda: nix.exchange)
            assert isinstance(table, tuple)
            return [(host, p) for _u, host, p in table[0][0][1]]

        assert upstreams() == [("127.0.0.1", port), up.hostport]
        with blackhole_udp(port=port):
            r = h.udp(query("a.nx.test.", 1), timeout=5.0)  # times out there: its health check starts
            assert r[3] & 0xF == 0 and r[7] == 1
            h.wait_until(lambda: upstreams() == [up.hostport], timeout=5.0)
            assert h.call(lambda: fwd.proxies[0].down(1))
            sent = _nx(h).get("sent", 0)
            r = h.udp(query("b.nx.test.", 1), timeout=5.0)
            assert r[7] == 1 and _nx(h).get("sent") == sent + 1 and _nx(h).get("timeouts") == 1
        with unbound_server(ZONES, port=port):  # it answers again: the probe passes, it is back
            h.wait_until(lambda: upstreams() == [("127.0.0.1", port), up.hostport], timeout=5.0)


def test_a_reload_hands_a_query_in_flight_upstream_back_to_python_which_answers_it() -> None:
    """A reload restarts the workers on the new index: a query one had in flight upstream is not
    dropped (the client would wait out its own timeout and retry) but answered on Python's path."""
    cap = Capture()

    def text() -> str:  # a new prometheus port each time: a real edit
        return _plain(f"127.0.0.1:{cap.port}", opts="        read_timeout 3s\n")

    with (
        cap.sock,
        inproc(text(), native=True) as h,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(3)
        client.sendto(query("a.nx.test.", 1, qid=0x4242), ("127.0.0.1", h.port))
        first, _src = cap.recv()  # the worker's attempt: it stays unanswered
        assert _nx(h).get("sent") == 1
        assert h.run(h.inst.reload(text().replace("{PORT}", str(h.port))))
        again, src = cap.recv()  # the same question again, now from Python's forward
        assert again[2:] == first[2:]
        cap.sock.sendto(answer_to(again), src)
        r, _ = client.recvfrom(4096)
        assert r[:2] == b"\x42\x42" and r[3] & 0xF == 0 and r[7] == 1
        assert _nx(h).get("timeouts", 0) == 0 and _nx(h).get("errors", 0) == 0


def _handed(h: Harness) -> int:
    """Queries the native side started on the plugin chain (settled results never are)."""
    return h.call(lambda: _nat(h).n_handed)


def test_a_reply_that_ends_forward_at_once_is_settled_without_the_chain(up: UpstreamServer) -> None:
    with inproc(_plain(up.address), native=True) as h:
        before = _forward_counts(up.address)
        got = [
            h.udp(query(n, 1, qid=0x700 + i))
            for i, n in enumerate(("a.nx.test.", "nope.nx.test.", "b.nx.test."))
        ]
        assert [(r[:2], r[3] & 0xF) for r in got] == [(b"\x07\x00", 0), (b"\x07\x01", 3), (b"\x07\x02", 0)]
        assert _handed(h) == 0  # answered, stored and counted at once
        assert len(_store(h)) == 3
        after = _forward_counts(up.address)
        assert after.get("NOERROR", 0) - before.get("NOERROR", 0) == 2
        assert after.get("NXDOMAIN", 0) - before.get("NXDOMAIN", 0) == 1
        samples = _samples(h)
        assert samples[("coredns_cache_misses_total", (("view", ""), ("zones", ".")))] == 3
        assert samples[("coredns_cache_requests_total", (("view", ""), ("zones", ".")))] == 3
        assert h.udp(query("a.nx.test.", 1, qid=0x777))[:2] == b"\x07\x77"  # a hit now
        assert _nx(h).get("sent") == 3


def test_a_reply_forward_must_retry_takes_the_chain(up: UpstreamServer) -> None:
    # prefer_udp: a truncated UDP reply is asked again over TCP, which only forward's loop does.
    with inproc(_plain(up.address, opts="        prefer_udp\n"), native=True) as h:
        r = h.udp(query("big.nx.test.", 16, qid=0x801, edns=True, size=1232))
        assert r[:2] == b"\x08\x01" and r[3] & 0xF == 0 and r[2] & 0x02  # still more than 1232 bytes
        assert _handed(h) == 1 and _nx(h).get("sent") == 1
        assert up.query_count("big.nx.test.") >= 2  # UDP from the worker, then TCP from forward
        h.udp(query("a.nx.test.", 1))
        assert _handed(h) == 1  # a plain reply in the same block settles


def test_a_plugin_that_narrows_its_skipping_sends_results_through_the_chain(up: UpstreamServer) -> None:
    text = _plain(up.address).replace("    errors\n", "    errors\n    loop\n")
    with inproc(text, native=True) as h:
        block = h.lst.router.zones["."]
        probe = next(rt for rt in block.runtimes if rt.name == "loop")
        h.wait_until(lambda: h.call(lambda: probe.miss_skippable), timeout=5.0)  # its probe is back
        nix = _nat(h).nix
        h.wait_until(lambda: bool(h.call(lambda: nix.exchange)), timeout=5.0)  # the table says so too
        base = _handed(h)  # the probe itself came in through the listener
        h.udp(query("a.nx.test.", 1))
        assert _handed(h) == base and _nx(h).get("sent") == 1
        # As while it probes: a result the worker had in flight must pass its handler.
        handler = probe.handlers[0]
        h.call(lambda: setattr(handler, "enabled", True))
        try:
            r = h.udp(query("b.nx.test.", 1))
        finally:
            h.call(lambda: setattr(handler, "enabled", False))
        assert r[3] & 0xF == 0 and r[7] == 1
        assert _handed(h) == base + 1 and _nx(h).get("sent") == 2
