"""bench/loadgen.c built from source and run for about a second against real servers on loopback.

No speed is asserted: only that it gets answers, counts them right, rejects replies that match
nothing it asked, and stops when told (time limit, query budget).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench import loadgen

from support.ports import free_port
from support.upstreams import UpstreamServer, unbound_server

ZONE = "hit.test."
NAMES = 200


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return loadgen.build(tmp_path_factory.mktemp("loadgen-build"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with unbound_server(
        {ZONE: [f"{ZONE} 300 IN A 198.18.0.10"]}, zone_types={ZONE: "redirect"}, log_queries=False
    ) as server:
        yield server


def _queries(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{n} A\n" for n in names))
    return path


@pytest.fixture
def hit_file(tmp_path: Path) -> Path:
    return _queries(tmp_path / "hit.txt", [f"h{i}.{ZONE}" for i in range(NAMES)])


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "plain"])
def test_gets_answers_and_stops_on_time(
    binary: Path, upstream: UpstreamServer, hit_file: Path, gso: bool
) -> None:
    started = time.monotonic()
    r = loadgen.run(upstream.port, hit_file, duration_s=1.0, clients=2, outstanding=8, gso=gso, binary=binary)
    elapsed = time.monotonic() - started
    assert r.gso == int(gso)  # this kernel segments UDP GSO sends, so that path was the one used
    assert r.completed > NAMES  # every name answered, more than once round the list
    assert r.rcodes == {"NOERROR": r.completed}
    assert r.bad == 0 and r.send_errors == 0
    assert r.sent == r.completed + r.lost
    assert r.completed_in_window <= r.completed
    assert 1.0 <= r.window_s < 1.5  # the time limit ended the run
    assert r.runtime_s <= r.window_s + 2.0 + 0.5  # then at most one timeout of draining
    assert elapsed < 10
    assert r.qps == pytest.approx(r.completed_in_window / r.window_s, rel=1e-3)
    assert r.client_cpu_s > 0


def test_stops_after_the_query_budget(binary: Path, upstream: UpstreamServer, hit_file: Path) -> None:
    r = loadgen.run(upstream.port, hit_file, duration_s=30.0, max_queries=500, binary=binary)
    assert r.sent == 500
    assert r.completed + r.lost == 500 and r.completed > 0
    assert r.window_s < 30


def test_counts_other_rcodes(binary: Path, upstream: UpstreamServer, tmp_path: Path) -> None:
    # Names outside every zone of the upstream get REFUSED: answered, counted by RCODE.
    qfile = _queries(tmp_path / "out.txt", ["a.outside.example.", f"h1.{ZONE}"])
    r = loadgen.run(upstream.port, qfile, duration_s=0.5, clients=1, outstanding=2, binary=binary)
    assert set(r.rcodes) == {"NOERROR", "REFUSED"}
    assert sum(r.rcodes.values()) == r.completed > 0


def _garbage_server(sock: socket.socket, stop: threading.Event, mode: str) -> None:
    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        reply = bytearray(data)
        reply[2] |= 0x80  # QR
        if mode == "wrong-id":
            reply[0] ^= 0x5A
        elif mode == "wrong-question":
            reply[-5] ^= 0x01  # last byte of the name's last label
        elif mode == "not-a-response":
            reply[2] &= 0x7F
        sock.sendto(bytes(reply), peer)


@pytest.mark.parametrize("mode", ["wrong-id", "wrong-question", "not-a-response"])
def test_replies_that_match_nothing_asked_do_not_count(binary: Path, tmp_path: Path, mode: str) -> None:
    qfile = _queries(tmp_path / "q.txt", ["a.example.test.", "b.example.test."])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=_garbage_server, args=(sock, stop, mode), daemon=True)
    thread.start()
    try:
        port = sock.getsockname()[1]
        r = loadgen.run(port, qfile, duration_s=0.3, clients=1, outstanding=4, timeout_s=0.2, binary=binary)
    finally:
        stop.set()
        thread.join(5)
        sock.close()
    assert r.completed == 0 and r.qps == 0
    assert r.bad > 0
    assert r.lost == r.sent > 0


def test_a_malformed_query_file_is_a_clear_error(binary: Path, tmp_path: Path) -> None:
    qfile = tmp_path / "bad.txt"
    qfile.write_text("ok.example.test. A\nlonely-name\n")
    with pytest.raises(loadgen.LoadgenError, match=r"bad\.txt:2: expected"):
        loadgen.run(9, qfile, duration_s=0.1, binary=binary)


def test_no_server_stops_on_time_with_nothing_completed(binary: Path, hit_file: Path) -> None:
    # Nothing listens: the kernel answers with ICMP port unreachable, which the sockets report.
    r = loadgen.run(
        free_port("udp"), hit_file, duration_s=0.3, clients=2, outstanding=4, timeout_s=0.2, binary=binary
    )
    assert r.completed == 0 and r.qps == 0
    assert r.sent == r.lost
    assert r.window_s < 1.0 and r.runtime_s < 1.5
