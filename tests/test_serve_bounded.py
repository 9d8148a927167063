"""Bounded under upstream trouble: broken replies, fd exhaustion, floods of queries that miss the cache.

Every upstream here is a real socket on loopback that misbehaves (support.upstreams); the server is a
real ``nodelocaldns serve`` process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest

from support.ports import free_port
from support.server import Served
from support.server import serve as _serve
from support.upstreams import bad_reply_server, blackhole_udp
from test_serve_forward import PROBE_BLOCK, metric, wait_metric


@contextlib.contextmanager
def serve(text: str, nofile: int | None = None) -> Iterator[Served]:
    with _serve(text + PROBE_BLOCK, nofile=nofile) as s:
        yield s


def corefile(upstream: str, mport: int, forward_opts: str = "", cache: str = "cache 30") -> str:
    opts = f" {{\n        {forward_opts}\n    }}" if forward_opts else ""
    return (
        f".:{{PORT}} {{\n    bind 127.0.0.1\n    errors\n    prometheus 127.0.0.1:{mport}\n    {cache}\n"
        f"    forward . {upstream}{opts}\n}}\n"
    )


@pytest.mark.parametrize("mode", ["truncated", "bad_pointer", "wrong_counts", "rdata_pointer"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_an_upstream_reply_that_does_not_unpack_is_servfail_and_never_cached(mode: str, tcp: bool) -> None:
    mport = free_port("tcp")
    # max_fails 0: no health probes, so every reply the upstream sent answered a client's query.
    with bad_reply_server(mode) as up, serve(corefile(up.address, mport, "max_fails 0")) as s:
        seen = 0
        for _ in range(2):  # the second one reaches the upstream again: nothing was cached
            r = s.query("x.example.", tcp=tcp)
            assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
            assert up.answered > seen
            seen = up.answered
        assert metric(mport, "nodelocaldns_forward_bad_replies_total", to=up.address) == seen
        up.mode = "good"  # the same upstream, now sane: its answer reaches the client and the cache
        assert s.query("x.example.", tcp=tcp).answer
        assert s.query("x.example.", tcp=tcp).answer
        assert up.answered == seen + 1
        log = s.stderr()
    assert "plugin/errors: 2 x.example. A: dns: bad reply from" in log
    assert "panic" not in log and "Traceback" not in log


def test_trailing_bytes_after_the_last_record_are_cut_off() -> None:
    mport = free_port("tcp")
    with bad_reply_server("trailing") as up, serve(corefile(up.address, mport, cache="")) as s:
        q = dns.message.make_query("x.example.", "A", use_edns=False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.sendto(q.to_wire(), ("127.0.0.1", s.port))
            raw = c.recv(4096)
        r = dns.message.from_wire(raw)  # dnspython rejects trailing junk: this parse is the check
        assert r.answer and not raw.endswith(b"junk")
        assert metric(mport, "nodelocaldns_forward_bad_replies_total", to=up.address) == 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_out_of_file_descriptors_is_servfail_and_one_log_line_not_a_panic() -> None:
    """With RLIMIT_NOFILE a little above what an idle server holds, a burst of queries to a
    blackholed upstream runs the process out of descriptors for real."""
    mport = free_port("tcp")
    with blackhole_udp() as hole:
        # Probe once to learn how many descriptors the idle server holds, then cap just above it.
        with serve(corefile(hole.address, mport)) as s:
            idle = _fds(s.proc.pid)
        mport = free_port("tcp")
        with serve(corefile(hole.address, mport, forward_opts="max_fails 0"), nofile=idle + 12) as s:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(6)
                queries = [dns.message.make_query(f"n{i}.flood.example.", "A") for i in range(300)]
                t0 = time.monotonic()
                for q in queries:
                    c.sendto(q.to_wire(), ("127.0.0.1", s.port))
                replies = [dns.message.from_wire(c.recv(4096)) for _ in queries]
                elapsed = time.monotonic() - t0
            rcodes = {r.rcode() for r in replies}
            assert rcodes == {dns.rcode.SERVFAIL}, rcodes
            assert elapsed < 5  # within the forward budget: the starved ones fail at once
            time.sleep(2.5)  # the few that got a socket time out; their descriptors come back
            assert wait_metric(mport, "nodelocaldns_forward_resource_errors_total", 250) >= 250
            assert metric(mport, "coredns_panics_total") == 0
            log = s.stderr()
    assert "panic" not in log and "Traceback" not in log
    lines = [ln for ln in log.splitlines() if "out of resources" in ln]
    assert len(lines) == 1, lines
    assert "socket: too many open files" in lines[0]
