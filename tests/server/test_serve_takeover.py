"""A second ``serve`` on the same Corefile takes over from the first with no lost query.

Both bind the same DNS, health, ready and metrics addresses (SO_REUSEPORT on every listener); the
first is sent SIGTERM once the second serves, and stops reading only after it has answered what the
kernel already queued to its socket (server/listener.py ``UDPWorker.stop``). dnsperf, bounded by
``-l`` and ``-Q``, runs against loopback throughout.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.load import Load, query_file
from support.ports import free_port
from support.server import Served, serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
NAMES = [f"h{i}.handover.test." for i in range(50)]
ZONES = {"handover.test.": [f"{n} 300 IN A 198.18.5.{i + 1}" for i, n in enumerate(NAMES)]}

pytestmark = pytest.mark.skipif(shutil.which("dnsperf") is None, reason="needs dnsperf")

MIGRATE = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture(autouse=True)
def _host_sysctl_restored() -> Iterator[None]:
    """The second serve sets net.ipv4.tcp_migrate_req=1 when it finds its TCP port shared
    (server/tcp_migrate.py). These tests run on the host's loopback: put its value back."""
    try:
        before = MIGRATE.read_text()
    except OSError:
        before = None
    yield
    if before is not None:
        with contextlib.suppress(OSError):
            MIGRATE.write_text(before)


def corefile(up: UpstreamServer, hport: int, rport: int, mport: int) -> str:
    return f"""
.:{{PORT}} {{
    bind 127.0.0.1
    health 127.0.0.1:{hport}
    ready 127.0.0.1:{rport}
    prometheus 127.0.0.1:{mport}
    cache 300
    forward . {up.address}
}}
"""


def wait_serving(s: Served, timeout: float = 15.0) -> None:
    """The banner's version line is logged once every listener is bound."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert s.proc.poll() is None, f"exited with {s.proc.returncode}:\n{Path(s.log_path).read_text()}"
        if "nodelocaldns-" in Path(s.log_path).read_text():
            return
        time.sleep(0.05)
    raise AssertionError("the server did not come up")


def test_a_second_serve_with_http_listeners_takes_over_with_no_lost_query(
    make_unbound: MakeUnbound, tmp_path: Path
) -> None:
    up = make_unbound(ZONES)
    hport, rport, mport = free_port("tcp"), free_port("tcp"), free_port("tcp")
    text = corefile(up, hport, rport, mport)
    queries = query_file(tmp_path / "queries", NAMES)
    with serve(text) as first:
        for n in NAMES:  # warm the first one's cache
            assert first.query(n).answer
        load = Load("127.0.0.1", first.port, queries, seconds=8, qps=6000)
        try:
            time.sleep(1.5)
            with serve(text, port=first.port, wait=False) as second:
                wait_serving(second)
                time.sleep(1.0)  # both serve, the kernel spreads the load over both
                first.proc.send_signal(signal.SIGTERM)
                assert first.proc.wait(15) == 0
                res = load.result()
                assert second.proc.poll() is None
                log = Path(second.log_path).read_text()
        finally:
            load.kill()
    assert "Traceback" not in log and "cannot listen" not in log, log
    assert res.sent >= 5000 * 7, res.output
    assert res.lost == 0 and res.completed == res.sent, res.output
    assert res.rcodes == {"NOERROR": res.sent}, res.output
