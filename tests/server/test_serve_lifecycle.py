"""Process lifecycle: reload, health and ready, SIGTERM with queries in flight, bad Corefiles, the default config."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import dns.message
import dns.query
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodelocaldns.cli import DEFAULT_COREFILE
from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.server.config import plan
from support.lifecycle import (
    BAD,
    run_corefile,
)
from support.ports import free_port, is_free
from support.server import REPO, Served, serve
from support.upstreams import SlowProxy, UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
ZONES = {
    "cluster.local.": ["web.default.svc.cluster.local. 30 IN A 198.18.1.1"],
    "example.test.": ["www.example.test. 30 IN A 198.18.9.9"],
}


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    deadline = time.monotonic() + 3
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def metric(port: int, name: str) -> float:
    _status, text = http_get(port, "/metrics")
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


def ttl(s: Served, name: str) -> int:
    return int(s.query(name).answer[0].ttl)


class QueryLoop:
    """Queries the server every 20 ms from a thread until stopped; counts anything but a good answer."""

    def __init__(self, port: int, name: str) -> None:
        self.port = port
        self.name = name
        self.ok = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueryLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = dns.query.udp(
                    dns.message.make_query(self.name, "A"), "127.0.0.1", port=self.port, timeout=1
                )
                if r.rcode() == dns.rcode.NOERROR and r.answer:
                    self.ok += 1
                else:
                    self.bad.append(dns.rcode.to_text(r.rcode()))
            except Exception as e:  # noqa: BLE001 - any failure is what this loop records
                self.bad.append(repr(e))
            time.sleep(0.02)


# -- reload ---------------------------------------------------------------------------------------


def test_reload_applies_edits_without_a_gap_and_survives_a_broken_edit(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    mport = free_port("tcp")
    v1 = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    reload 2s 0s
    cache 30
    forward . {up.address}
    prometheus 127.0.0.1:{mport}
}}
"""
    name = "web.default.svc.cluster.local."
    with serve(v1) as s:
        assert s.query(name).answer
        assert metric(mport, "coredns_reload_version_info") == 1
        loop = QueryLoop(s.port, name).__enter__()

        def edit(text: str) -> None:
            with open(s.corefile, "w") as f:
                f.write(text.replace("{PORT}", str(s.port)))

        # 1. Comment and whitespace only: same parsed config, no reload, so the cache survives.
        edit("# a comment\n" + v1.replace("    cache 30", "      cache   30   # thirty"))
        time.sleep(2.6)
        assert up.query_count(name) == 1
        # 2. A real change: new cache cap and a new block; the cache starts empty after a reload.
        v2 = (
            v1.replace("cache 30", "cache 5")
            + f"example.test:{{PORT}} {{\n    bind 127.0.0.1\n    forward . {up.address}\n}}\n"
        )
        edit(v2)
        deadline = time.monotonic() + 5
        while ttl(s, name) > 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ttl(s, name) <= 5
        assert up.query_count(name) >= 2
        assert s.query("www.example.test.").answer
        # 3. A broken edit: the old config keeps serving and exactly one failure is counted.
        edit(v2.replace("cache 5", "cache 5 {\n        success many\n    }"))
        time.sleep(4.5)  # two reload intervals
        assert metric(mport, "coredns_reload_failed_total") == 1
        assert s.query("www.example.test.").answer
        assert ttl(s, name) <= 5
        loop.__exit__()
        log = s.stderr()
    assert loop.bad == [] and loop.ok > 100
    assert log.count("Reloading complete") == 1
    assert log.count("Corefile changed but reload failed") == 1
    assert "success" in log


# -- health, ready, shutdown ----------------------------------------------------------------------


def test_health_and_ready_endpoints_and_lameduck(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    hport, rport = free_port("tcp"), free_port("tcp")
    text = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    health 127.0.0.1:{hport} {{
        lameduck 1s
    }}
    ready 127.0.0.1:{rport}
    forward . {up.address}
}}
"""
    with serve(text) as s:
        assert http_get(hport, "/health") == (200, "OK")
        assert http_get(rport, "/ready") == (200, "OK")
        assert http_get(hport, "/nope")[0] == 404
        conn = http.client.HTTPConnection("127.0.0.1", hport, timeout=3)
        conn.request("POST", "/health")
        assert conn.getresponse().status == 405
        conn.close()
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Lameduck: not ready, still healthy, still answering DNS.
        assert http_get(rport, "/ready") == (503, "Shutting down")
        assert http_get(hport, "/health") == (200, "OK")
        assert s.query("web.default.svc.cluster.local.").answer
        assert s.proc.wait(10) == 0


def get_once(port: int, path: str) -> tuple[int, str]:
    """One GET, no retry: connection refused is raised, not waited out."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def first_dns_answer(served: Served) -> None:
    """Return the moment the DNS port answers: a connected socket learns of an unbound port at once
    (refused), and a query sent to a bound port that does not serve yet waits in its queue."""
    query = dns.message.make_query("probe.invalid.", "A").to_wire()
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.connect(("127.0.0.1", served.port))
        c.settimeout(1.0)
        while time.monotonic() < deadline and served.proc.poll() is None:
            try:
                c.send(query)
                c.recv(4096)
                return
            except ConnectionRefusedError:
                time.sleep(0.001)
            except TimeoutError:
                pass
    raise AssertionError(f"no DNS answer on port {served.port}:\n{served.stderr()}")


@pytest.mark.parametrize("native", ["1", "0"], ids=["native", "python"])
def test_health_and_ready_listen_by_the_time_dns_answers(
    native: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe that hits /health right after DNS answers must not be refused: the HTTP listeners
    # bind before any DNS socket serves. Several starts, because a lost race shows only sometimes.
    monkeypatch.setenv("NODELOCALDNS_NATIVE", native)
    for _ in range(6):
        hport, rport = free_port("tcp"), free_port("tcp")
        text = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    whoami
    health 127.0.0.1:{hport}
    ready 127.0.0.1:{rport}
}}
"""
        with serve(text, wait=False) as s:
            first_dns_answer(s)
            assert get_once(hport, "/health") == (200, "OK")
            assert get_once(rport, "/ready") == (200, "OK")


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_sigterm_answers_the_query_in_flight_then_exits_0(
    make_unbound: MakeUnbound, make_slow_proxy: Callable[..., SlowProxy], tcp: bool
) -> None:
    up = make_unbound(ZONES)
    slow = make_slow_proxy(up, 1.5)
    text = f"invalid:{{PORT}} {{\n    bind 127.0.0.1\n}}\n.:{{PORT}} {{\n    bind 127.0.0.1\n    forward . {slow.address}\n}}\n"
    with serve(text) as s:
        result: list[dns.message.Message | Exception] = []

        def ask() -> None:
            try:
                result.append(s.query("web.default.svc.cluster.local.", tcp=tcp, timeout=6))
            except Exception as e:  # noqa: BLE001
                result.append(e)

        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.4)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        t.join(8)
        code = s.proc.wait(10)
        assert code == 0
        assert time.monotonic() - t0 < 6  # bounded drain
        [r] = result
        assert isinstance(r, dns.message.Message), r
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        # Closed for new queries once the drain is over.
        with pytest.raises((dns.exception.Timeout, ConnectionRefusedError, OSError)):
            dns.query.udp(dns.message.make_query("x.", "A"), "127.0.0.1", port=s.port, timeout=0.3)


def test_second_sigterm_exits_at_once(
    make_unbound: MakeUnbound, make_slow_proxy: Callable[..., SlowProxy]
) -> None:
    up = make_unbound(ZONES)
    slow = make_slow_proxy(up, 3.0)
    text = f"invalid:{{PORT}} {{\n    bind 127.0.0.1\n}}\n.:{{PORT}} {{\n    bind 127.0.0.1\n    forward . {slow.address}\n}}\n"
    with serve(text) as s:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(
                dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire(), ("127.0.0.1", s.port)
            )
            time.sleep(0.3)
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            t0 = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            assert s.proc.wait(5) == 1
            assert time.monotonic() - t0 < 2


# -- bad Corefiles --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "what"), list(BAD.values()), ids=list(BAD))
def test_bad_corefile_exits_nonzero_naming_file_line_and_directive(text: str, line: int, what: str) -> None:
    out, path = run_corefile(text)
    assert out.returncode != 0
    assert path in out.stderr
    if line:
        assert f"{path}:{line}" in out.stderr, out.stderr
    if what:
        assert what in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_corefile_is_a_clean_error() -> None:
    out = subprocess.run([sys.executable, "-m", "nodelocaldns", "serve", "--corefile", "/nonexistent/Corefile"],
                         capture_output=True, text=True, timeout=20, cwd=REPO)  # fmt: skip
    assert out.returncode == 1 and "/nonexistent/Corefile" in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_is_a_clean_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        out, _ = run_corefile(f".:{port} {{\n    bind 127.0.0.1\n}}\n")
    assert out.returncode == 1 and "cannot listen" in out.stderr and "Traceback" not in out.stderr


# -- the embedded default (``make run``) ----------------------------------------------------------


def test_default_corefile_parses_and_plans() -> None:
    blocks = parse_corefile(DEFAULT_COREFILE, "<default>")
    p = plan(blocks)
    assert list(p.listeners) == [("127.0.0.1", 5353)]
    names = {d.name for d in blocks[0].directives}
    assert {"cache", "forward", "health", "prometheus"} <= names
    assert "loop" not in names  # its probe would go out to the machine's resolvers


def test_serve_without_arguments_starts_and_stops_cleanly() -> None:
    # The default listens on fixed ports; it forwards to /etc/resolv.conf, so no query is sent.
    if not (is_free(5353, "both") and is_free(8080, "tcp") and is_free(9253, "tcp")):
        pytest.skip("a default port (5353, 8080, 9253) is taken on 127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "nodelocaldns", "serve"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=REPO)  # fmt: skip
    try:
        assert http_get(8080, "/health") == (200, "OK")
        status, body = http_get(9253, "/metrics")
        assert status == 200 and "coredns_build_info" in body
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            with pytest.raises(OSError):
                probe.bind(("127.0.0.1", 5353))  # the DNS socket is held
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert re.search(r"\.:5353 on 127\.0\.0\.1", log) and "Try it: dig @127.0.0.1 -p 5353" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
