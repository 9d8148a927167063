"""``nodelocaldns top``: the numbers it shows must be the traffic that was sent.

A real ``nodelocaldns serve`` on loopback forwards to a real unbound; the tests send a known,
bounded load and compare what ``top`` computes from the metrics endpoint with what was sent.
The text parser and the quantile function are checked against prometheus_client's own output
and against the definition of a quantile.
"""

from __future__ import annotations

import io
import json
import math
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from rich.console import Console

from nodelocaldns.metrics.catalog import TIME_BUCKETS
from nodelocaldns.tools.promtext import FetchError, Scrape, fetch, histogram_quantile, parse
from nodelocaldns.tools.top import BlockRow, Latency, UpstreamRow, View, render, server_label, summarize
from support.ports import free_port
from support.server import REPO, Served, serve
from support.upstreams import Blackhole, UpstreamServer

CLUSTER_NAME = "kubernetes.default.svc.cluster.local."
MISSING_NAME = "nothing-here.default.svc.cluster.local."


# ---------------------------------------------------------------- pure parts


def test_parser_reads_prometheus_client_output_exactly() -> None:
    reg = CollectorRegistry()
    c = Counter("demo_requests", "help with \\ and \n", ["zone", "note"], registry=reg)
    tricky = 'quote " backslash \\ newline \n end'
    c.labels(zone="cluster.local.", note=tricky).inc(3)
    c.labels(zone=".", note="").inc(0.5)
    h = Histogram("demo_seconds", "h", ["zone"], buckets=(0.001, 0.01), registry=reg)
    for v in (0.0005, 0.005, 0.005, 2.0):
        h.labels(zone="x").observe(v)
    scrape = Scrape.from_text(generate_latest(reg).decode())
    assert scrape.by("demo_requests_total", ("zone", "note")) == {
        ("cluster.local.", tricky): 3.0,
        (".", ""): 0.5,
    }
    assert scrape.buckets("demo_seconds", ("zone",)) == {("x",): ((0.001, 1.0), (0.01, 3.0), (math.inf, 4.0))}
    assert scrape.total("demo_seconds_count") == 4.0


def test_parser_rejects_garbage() -> None:
    for text in ("metric_without_value\n", 'm{a="unterminated} 1\n', "m{a=1} 1\n", "m abc\n"):
        with pytest.raises(ValueError):
            parse(text)


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.floats(min_value=1e-5, max_value=5.0, allow_nan=False), min_size=1, max_size=300),
    q=st.sampled_from([0.5, 0.9, 0.99]),
)
def test_quantile_lies_in_the_bucket_of_the_true_quantile(samples: list[float], q: float) -> None:
    """Whatever the data, the estimate must fall inside the bucket that holds the exact quantile."""
    bounds = (*TIME_BUCKETS, math.inf)
    buckets = tuple((b, float(sum(1 for s in samples if s <= b))) for b in bounds)
    est = histogram_quantile(q, buckets)
    assert est is not None
    exact = sorted(samples)[max(math.ceil(q * len(samples)) - 1, 0)]
    upper = next(b for b in bounds if exact <= b)
    lower = max((b for b in bounds if b < upper), default=0.0)
    if math.isinf(upper):  # Prometheus reports the highest finite bound for the +Inf bucket
        assert est == TIME_BUCKETS[-1]
    else:
        assert lower <= est <= upper, (exact, lower, upper, est)


def test_quantile_of_an_empty_histogram_is_none() -> None:
    assert histogram_quantile(0.5, ((0.1, 0.0), (math.inf, 0.0))) is None
    assert histogram_quantile(0.5, ()) is None


# ---------------------------------------------------------------- against a running server


@dataclass
class Cache:
    served: Served
    metrics: str
    upstream: UpstreamServer


@pytest.fixture
def cache(unbound_upstream: UpstreamServer) -> Iterator[Cache]:
    mport = free_port("tcp")
    corefile = f"""
cluster.local:{{PORT}} {{
    bind 127.0.0.1
    cache 30
    forward . {unbound_upstream.address}
    prometheus 127.0.0.1:{mport}
}}
.:{{PORT}} {{
    bind 127.0.0.1
    cache 30
    forward . {unbound_upstream.address}
    prometheus 127.0.0.1:{mport}
}}
"""
    with serve(corefile) as served:
        try:
            yield Cache(served, f"http://127.0.0.1:{mport}/metrics", unbound_upstream)
        finally:
            served.stop()
            if served.proc.stderr is not None:  # serve() leaves its stderr pipe open
                served.proc.stderr.close()


def _scrape(url: str) -> Scrape:
    return Scrape.from_text(fetch(url), time.monotonic())


def test_summary_is_the_load_that_was_sent(cache: Cache) -> None:
    n, m = 40, 10
    before = _scrape(cache.metrics)
    for _ in range(n):
        assert cache.served.query(CLUSTER_NAME).rcode() == 0
    for _ in range(m):
        assert cache.served.query(MISSING_NAME).rcode() == 3
    after = _scrape(cache.metrics)
    view = summarize(before, after)

    assert view.requests == n + m
    assert view.qps == pytest.approx((n + m) / (after.at - before.at))
    block = next(b for b in view.blocks if b.zone == "cluster.local.")
    assert block.requests == n + m and block.cache_requests == n + m
    # one miss per name, every repeat a hit: (n-1 + m-1) / (n+m)
    assert block.hit_ratio == pytest.approx((n - 1 + m - 1) / (n + m))
    assert block.entries == 2  # one positive, one negative entry
    assert view.rcodes == {"NOERROR": n, "NXDOMAIN": m}
    assert view.latency.window and view.latency.p50 is not None
    assert 0 < view.latency.p50 <= view.latency.p90 <= view.latency.p99  # type: ignore[operator]
    (up,) = view.upstreams
    assert up.to == cache.upstream.address
    assert up.requests == 2  # the two misses, and nothing else
    assert cache.upstream.query_count(CLUSTER_NAME) == cache.upstream.query_count(MISSING_NAME) == 1
    assert up.error_ratio == 0 and up.healthcheck_failures == 0


def _load(served: Served, stop: threading.Event, sent: list[int], limit: int = 3000) -> None:
    """Bounded load: at most ``limit`` queries, about 300 per second, until ``stop``."""
    while not stop.is_set() and sent[0] < limit:
        served.query(CLUSTER_NAME)
        sent[0] += 1
        time.sleep(0.003)


def _top(*args: str, columns: int = 160) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodelocaldns", "top", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": str(columns)},
    )


def test_top_once_json_under_load(cache: Cache) -> None:
    stop, sent = threading.Event(), [0]
    loader = threading.Thread(target=_load, args=(cache.served, stop, sent))
    loader.start()
    try:
        res = _top("--once", "--json", "--interval", "0.5", "--metrics", cache.metrics)
    finally:
        stop.set()
        loader.join()
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    block = next(b for b in doc["blocks"] if b["zone"] == "cluster.local.")
    # only one name was asked in this block: every request but the first is a hit. The counters are
    # read while the loader runs, and its one query in flight may sit between two of them.
    assert cache.upstream.query_count(CLUSTER_NAME) == 1
    misses = block["total_cache_requests"] - block["total_cache_hits"]
    assert abs(misses - 1) <= 1
    assert block["total_hit_ratio"] == pytest.approx(
        block["total_cache_hits"] / block["total_cache_requests"]
    )
    assert abs(block["total_cache_requests"] - block["total_requests"]) <= 1
    assert block["hit_ratio"] == 1.0
    assert 0 < block["requests"] <= sent[0]
    assert block["total_requests"] <= sent[0]
    assert doc["qps"] == pytest.approx(doc["requests"] / doc["interval"])
    assert doc["qps"] > 10  # the loader sends ~300/s; even a slow machine gets far above 10
    assert set(doc["rcodes"]) == {"NOERROR"} and abs(doc["rcodes"]["NOERROR"] - doc["requests"]) <= 1
    assert doc["upstreams"][0]["requests"] == 0  # everything in the window came from the cache


def test_top_once_renders_tables(cache: Cache) -> None:
    for _ in range(5):
        cache.served.query(CLUSTER_NAME)
    res = _top("--once", "--interval", "0.2", "--metrics", cache.metrics)
    assert res.returncode == 0, res.stderr
    for text in (
        "QPS",
        "server blocks",
        "cluster.local",
        "80.0",
        "responses",
        "NOERROR",
        cache.upstream.address,
    ):
        assert text in res.stdout, res.stdout


@pytest.mark.parametrize(
    ("server", "label"),
    [
        ("dns://169.254.20.10:53", "169.254.20.10"),
        ("dns://[fd00:d15::10]:53", "[fd00:d15::10]"),
        ("dns://127.0.0.1:5353", "127.0.0.1:5353"),
        ("dns://:53", ":53"),
        ("dns://fd00::53", "fd00::53"),
    ],
)
def test_server_label_drops_the_scheme_and_the_default_port(server: str, label: str) -> None:
    assert server_label(server) == label


def test_ipv6_addresses_are_shown_as_they_are() -> None:
    """A bracketed address that starts with a letter (fd00::/8, fe80::) looks like rich markup."""
    lat = Latency(1.5, 2.0, 3.0)
    view = View(
        interval=2.0, qps=1.0, requests=2.0, total_requests=2.0, by_proto={"udp": 1.0},
        blocks=[BlockRow("dns://[fd00:d15::10]:53", "cluster.local.", 1.0, 2.0, 2.0, latency=lat)],
        latency=lat, rcodes={"NOERROR": 2.0}, total_rcodes={"NOERROR": 2.0},
        upstreams=[UpstreamRow("[fd00:10:96::a]:53", 1.0, 2.0, 0.0, 0.0, 0.0, lat)],
        healthcheck_broken=0.0, max_concurrent_rejects=0.0, rss_bytes=None, cpu=None,
    )  # fmt: skip
    console = Console(width=80, file=io.StringIO())
    console.print(render(view, "http://[fd00:d15::10]:9253/metrics"))
    rows = [line.split() for line in console.file.getvalue().splitlines()]
    assert ["[fd00:d15::10]", "cluster.local"] in [r[:2] for r in rows], rows
    assert "[fd00:10:96::a]:53" in [r[0] for r in rows if r], rows
    assert ["nodelocaldns", "top", "http://[fd00:d15::10]:9253/metrics"] in [r[:3] for r in rows], rows


def test_top_once_fits_80_columns(cache: Cache) -> None:
    for _ in range(5):
        cache.served.query(CLUSTER_NAME)
    res = _top("--once", "--interval", "0.2", "--metrics", cache.metrics, columns=80)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, res.stdout
    assert "…" not in res.stdout, res.stdout
    port = cache.served.port
    rows = [line.split() for line in lines]
    # Each block's row has its address and zone whole (the test server listens on a port other than 53).
    assert ["127.0.0.1:" + str(port), "cluster.local"] in [r[:2] for r in rows], res.stdout
    assert ["127.0.0.1:" + str(port), "."] in [r[:2] for r in rows], res.stdout


def test_top_once_fits_80_columns_with_a_dead_upstream(udp_blackhole: Blackhole) -> None:
    """The view an operator opens in an outage: every miss waits out forward's budget, so the
    latencies have four digits (and, with the window quiet, the since-start mark). Each block's
    row still fits on one 80-column line, its address and latencies whole."""
    mport = free_port("tcp")
    zones = ("cluster.local", ".")
    corefile = "".join(
        f"{zone}:{{PORT}} {{\n    bind 127.0.0.1\n    forward . {udp_blackhole.address}\n"
        f"    prometheus 127.0.0.1:{mport}\n}}\n"
        for zone in zones
    )
    metrics = f"http://127.0.0.1:{mport}/metrics"
    # No wait for a DNS answer: every query to this server waits out the dead upstream.
    with serve(corefile, wait=False) as served:
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    fetch(metrics)
                    break
                except FetchError:
                    assert time.monotonic() < deadline and served.proc.poll() is None, served.stderr()
                    time.sleep(0.05)
            names = ("a.cluster.local.", "b.example.org.")
            with ThreadPoolExecutor(len(names)) as pool:
                rcodes = list(pool.map(lambda n: served.query(n, timeout=10).rcode(), names))
            assert rcodes == [dns.rcode.SERVFAIL] * len(names)
            res = _top(
                "--once", "--interval", "0.2", "--metrics", f"http://127.0.0.1:{mport}/metrics", columns=80
            )
        finally:
            served.stop()
            if served.proc.stderr is not None:
                served.proc.stderr.close()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, res.stdout
    server = f"127.0.0.1:{served.port}"
    for zone in zones:
        (row,) = [line.split() for line in lines if line.split()[:2] == [server, zone]]
        # p50/p90/p99 in ms, at least a second each, marked as since-start values.
        assert re.fullmatch(r"\d{4}/\d{4}/\d{4}\*", row[-1]), res.stdout
    assert "*" not in [line.strip() for line in lines], res.stdout  # no cell folded onto a line of its own


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_live_view_refreshes_until_ctrl_c(cache: Cache) -> None:
    # A terminal, as a person runs it: rich draws live frames only on a TTY, and the first frame
    # tells that the view is running (a fixed sleep is too short on a loaded machine).
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodelocaldns", "top", "--interval", "0.2", "--metrics", cache.metrics],
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "160", "TERM": "xterm"},
        # As a shell gives a foreground job: SIGINT at its default, even when this run inherited
        # it ignored (started in the background by a non-interactive shell, `nohup`): a Python
        # that starts with SIGINT ignored keeps ignoring it, and Ctrl-C would never reach top.
        preexec_fn=_default_sigint,
    )
    os.close(slave)

    def read_until(needle: str, seconds: float, exited: bool = False) -> str:
        """What the terminal shows until ``needle`` (or, ``exited``, the child's exit) or ``seconds``.
        The terminal is read all along: a child whose frames fill the pty would block writing them."""
        got = ""
        deadline = time.monotonic() + seconds
        while needle not in got and time.monotonic() < deadline and not (exited and proc.poll() is not None):
            if select.select([master], [], [], 0.2)[0]:
                try:
                    got += os.read(master, 65536).decode(errors="replace")
                except OSError:  # EIO: the child closed the terminal
                    break
        return got

    try:
        first = read_until("server blocks", 20)
        assert "server blocks" in first, first
        for _ in range(3):
            cache.served.query(CLUSTER_NAME)
        first += read_until("\0", 0.5)
        proc.send_signal(signal.SIGINT)
        rest = read_until("\0", 10, exited=True)
        _out, err = proc.communicate(timeout=5)
        rest += read_until("\0", 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, err
    assert "cluster.local" in first + rest and "Traceback" not in err


def test_unreachable_endpoint_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port('tcp')}/metrics"
    res = _top("--once", "--interval", "0.1", "--metrics", url)
    assert res.returncode == 1
    assert res.stderr == f"nodelocaldns top: {url}: connection refused\n"  # words, not "[Errno 111] ..."
