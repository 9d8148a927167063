"""The servers the bench starts: one upstream and the caching forwarders under test.

Every forwarder is configured as the same cache in front of the same upstream (an unbound
answering from local data on its own port): NodeLocal-addon-shaped Corefile for nodelocaldns,
the closest unbound and dnsmasq equivalents for the other two. Config text is built by pure
functions; process lifetime (start, readiness probe, kill) reuses ``tests.support.upstreams``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.upstreams import DNSMASQ, UNBOUND, UpstreamServer, unbound_server

from bench import proc

REPO = Path(__file__).resolve().parent.parent
NODELOCALDNS = REPO / ".venv" / "bin" / "nodelocaldns"

# Upstream data. Redirect zones answer every name under them, so unique names never seen
# before still get a positive answer; names under the static zones get NXDOMAIN + SOA.
HIT_ZONE = "hit.svc.cluster.local."
FILL_ZONE = "fill.svc.cluster.local."
MISS_ZONE = "miss.bench."
UPSTREAM_ZONES: dict[str, list[str]] = {
    "cluster.local.": [],
    HIT_ZONE: [f"{HIT_ZONE} 300 IN A 198.18.0.10"],
    FILL_ZONE: [f"{FILL_ZONE} 300 IN A 198.18.0.11"],
    "bench.": [],
    MISS_ZONE: [f"{MISS_ZONE} 300 IN A 198.18.0.12"],
    "18.198.in-addr.arpa.": ["18.198.in-addr.arpa. 300 IN PTR host.bench."],
    "19.198.in-addr.arpa.": [],
    "d.f.ip6.arpa.": ["d.f.ip6.arpa. 300 IN PTR host.bench."],
    "c.f.ip6.arpa.": [],
}
UPSTREAM_ZONE_TYPES = {
    HIT_ZONE: "redirect",
    FILL_ZONE: "redirect",
    MISS_ZONE: "redirect",
    "18.198.in-addr.arpa.": "redirect",
    "d.f.ip6.arpa.": "redirect",
}

# The upstream must never be the bottleneck of a miss test.
UPSTREAM_TUNING = """
num-queries-per-thread: 4096
incoming-num-tcp: 1000
"""


@contextlib.contextmanager
def upstream(cpu: int | None) -> Iterator[UpstreamServer]:
    """The shared upstream: unbound serving the bench zones, query logging off."""
    with unbound_server(
        UPSTREAM_ZONES,
        zone_types=UPSTREAM_ZONE_TYPES,
        negative_ttl=30,
        log_queries=False,
        extra_conf=UPSTREAM_TUNING,
        command_prefix=_pin(cpu),
    ) as server:
        yield server


def _pin(cpu: int | str | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def nodelocal_corefile(port: int, upstream_port: int, metrics_port: int, sockets: int | None = None) -> str:
    """A Corefile shaped like the NodeLocal DNSCache addon's, on loopback ports (pure).

    ``sockets``: a ``multisocket`` line in every block (UDP sockets, one native worker each).
    """
    forward_tcp = f"forward . 127.0.0.1:{upstream_port} {{\n        force_tcp\n    }}"
    common_tail = f"bind 127.0.0.1\n    {{forward}}\n    prometheus 127.0.0.1:{metrics_port}"
    if sockets is not None:
        common_tail += f"\n    multisocket {sockets}"

    def block(zone: str, cache: str, forward: str) -> str:
        tail = common_tail.replace("{forward}", forward)
        return f"{zone}:{port} {{\n    errors\n    {cache}\n    {tail}\n}}\n"

    cluster_cache = "cache {\n        success 9984 30\n        denial 9984 5\n    }"
    return "".join(
        [
            block("cluster.local", cluster_cache, forward_tcp),
            block("in-addr.arpa", "cache 30", forward_tcp),
            block("ip6.arpa", "cache 30", forward_tcp),
            block(".", "cache 30", f"forward . 127.0.0.1:{upstream_port}"),
        ]
    )


def unbound_forwarder_conf(port: int, upstream_port: int, workdir: Path) -> str:
    """unbound as a 1-thread caching forwarder equivalent to the Corefile above (pure).

    Same TTL cap (30 s), TCP to the upstream for the cluster and reverse zones like
    ``force_tcp``, UDP for the rest, no DNSSEC, no prefetch, caches sized well above the
    ~80k entries the fill drives in.
    """
    lines = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        f"  port: {port}",
        "  do-ip6: no",
        "  so-reuseport: no",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{workdir}"',
        '  pidfile: ""',
        "  use-syslog: no",
        f'  logfile: "{workdir / "unbound.log"}"',
        "  verbosity: 0",
        "  num-threads: 1",
        '  module-config: "iterator"',
        "  access-control: 127.0.0.0/8 allow",
        "  do-not-query-localhost: no",
        "  prefetch: no",
        "  qname-minimisation: no",
        "  rrset-roundrobin: no",
        "  msg-cache-size: 64m",
        "  rrset-cache-size: 128m",
        "  cache-max-ttl: 30",
        "  num-queries-per-thread: 4096",
        # The bench reverse zones are private ranges unbound would otherwise answer itself.
        "  unblock-lan-zones: yes",
        "  insecure-lan-zones: yes",
    ]
    for zone, tcp in (("cluster.local.", True), ("in-addr.arpa.", True), ("ip6.arpa.", True), (".", False)):
        lines += [
            "forward-zone:",
            f'  name: "{zone}"',
            f"  forward-addr: 127.0.0.1@{upstream_port}",
            f"  forward-tcp-upstream: {'yes' if tcp else 'no'}",
        ]
    lines += ["remote-control:", "  control-enable: no", ""]
    return "\n".join(lines)


def dnsmasq_forwarder_args(port: int, upstream_port: int, workdir: Path) -> list[str]:
    """dnsmasq as the closest equivalent caching forwarder (pure).

    ``--cache-size=10000`` is dnsmasq's own cap. Negative answers with an SOA are cached by
    default, like the CoreDNS denial cache, so ``--no-negcache`` would *not* be equivalent.
    dnsmasq cannot force TCP to an upstream: every block goes over UDP.
    """
    return [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--user=root",
        "--group=root",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        f"--log-facility={workdir / 'dnsmasq.log'}",
        f"--server=127.0.0.1#{upstream_port}",
        "--cache-size=10000",
        "--max-cache-ttl=30",
        "--dns-forward-max=1000",
    ]


@dataclass(eq=False)
class Contender:
    """A server under test: its process plus what the report needs."""

    name: str
    server: UpstreamServer
    metrics_url: str | None = None
    #: CPUs the server may use: its "server CPU busy" is a share of all of them.
    cpus: int = 1

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        pid = self.server.pid
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        return pid

    def cpu_seconds(self) -> float:
        return proc.cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return proc.rss_bytes(self.pid)

    def cache_entries(self) -> dict[str, float] | None:
        """``coredns_cache_entries`` by (server, type), or None if /metrics is not reachable."""
        if self.metrics_url is None:
            return None
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        return parse_cache_entries(text)


def parse_cache_entries(text: str) -> dict[str, float]:
    """``coredns_cache_entries`` samples keyed ``"<zones> <type>"``, summed over servers (pure)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("coredns_cache_entries{"):
            continue
        labels, _, value = line.rpartition(" ")
        attrs = dict(_LABEL.findall(labels))
        key = f"{attrs.get('zones', attrs.get('server', '?'))} {attrs.get('type', '?')}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def nodelocaldns_available() -> tuple[bool, str]:
    """Whether ``nodelocaldns serve`` exists yet, and why not."""
    if not NODELOCALDNS.exists():
        return False, f"{NODELOCALDNS} not found (run `make install`)"
    try:
        proc = subprocess.run(
            [str(NODELOCALDNS), "serve", "--help"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`nodelocaldns serve --help` failed: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        return False, f"`nodelocaldns serve` is not available yet ({last[0]})"
    return True, ""


def _managed(name: str, argv: Sequence[str], port: int, workdir: Path, log: str) -> UpstreamServer:
    return UpstreamServer(
        host="127.0.0.1", port=port, kind=name, argv=list(argv), workdir=workdir, log_path=workdir / log
    )


@contextlib.contextmanager
def _started(contender: Contender, timeout: float) -> Iterator[Contender]:
    try:
        contender.server.start(timeout=timeout)
        yield contender
    finally:
        contender.server.stop()
        shutil.rmtree(contender.server.workdir, ignore_errors=True)


@contextlib.contextmanager
def nodelocaldns(upstream_port: int, cpu: int | str | None, sockets: int | None = None,
                 name: str = "nodelocaldns", cpus: int = 1) -> Iterator[Contender]:  # fmt: skip
    """The server under test; pinned to one CPU it runs one native worker (multisocket's default
    is the CPUs the process may use)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-nodelocaldns-"))
    port, metrics_port = free_port(), free_port("tcp")
    corefile = workdir / "Corefile"
    corefile.write_text(nodelocal_corefile(port, upstream_port, metrics_port, sockets))
    argv = [*_pin(cpu), str(NODELOCALDNS), "serve", "--corefile", str(corefile)]
    server = _managed(name, argv, port, workdir, "nodelocaldns.log")
    with _started(Contender(name, server, f"http://127.0.0.1:{metrics_port}/metrics", cpus), 60) as c:
        yield c


@contextlib.contextmanager
def nodelocaldns_2w(upstream_port: int, cpu: int | None) -> Iterator[Contender]:
    """Two native workers (``multisocket 2``) on two CPUs: the server's and the load generator's
    (this machine has two; the load generator competes, so this is a lower bound)."""
    cpus = f"{cpu},{cpu + 1}" if cpu is not None else None
    with nodelocaldns(upstream_port, cpus, sockets=2, name="nodelocaldns-2w", cpus=2 if cpus else 1) as c:
        yield c


@contextlib.contextmanager
def unbound_forwarder(upstream_port: int, cpu: int | None) -> Iterator[Contender]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-unbound-"))
    port = free_port()
    conf = workdir / "unbound.conf"
    conf.write_text(unbound_forwarder_conf(port, upstream_port, workdir))
    argv = [*_pin(cpu), UNBOUND, "-d", "-c", str(conf)]
    with _started(Contender("unbound", _managed("unbound", argv, port, workdir, "unbound.log")), 20) as c:
        yield c


@contextlib.contextmanager
def dnsmasq_forwarder(upstream_port: int, cpu: int | None) -> Iterator[Contender]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-dnsmasq-"))
    port = free_port()
    argv = [*_pin(cpu), *dnsmasq_forwarder_args(port, upstream_port, workdir)]
    with _started(Contender("dnsmasq", _managed("dnsmasq", argv, port, workdir, "dnsmasq.log")), 20) as c:
        yield c


@contextlib.contextmanager
def python_echo(cpu: int | None) -> Iterator[Contender]:
    """The floor for any Python server: uvloop answering every query with one fixed record."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-echo-"))
    port = free_port()
    argv = [*_pin(cpu), sys.executable, str(REPO / "bench" / "baseline_echo.py"), "--port", str(port)]
    with _started(Contender("py-echo", _managed("py-echo", argv, port, workdir, "echo.log")), 20) as c:
        yield c
