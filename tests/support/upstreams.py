"""Real upstream DNS servers and real failing endpoints on loopback, for tests and the bench.

Everything here is a context manager that also works outside pytest. Servers are the Debian
``unbound`` and ``dnsmasq`` binaries, started in the foreground in their own session (so a stop
also reaches dnsmasq's forked TCP children), probed with a real query until they answer, and
killed on exit, on error, and at interpreter exit as a last resort.

Upstreams never leave the machine: unbound answers only from ``local-zone``/``local-data``
(``local-zone: "." refuse`` catches every other name, and ``do-not-query-address`` covers all
of IPv4 and IPv6 in case anything still tried to recurse); dnsmasq runs with ``--no-resolv``
and no ``--server``, so it answers names it does not know with REFUSED.

Query counting reads the server's own query log. Both servers write one line per received
query before answering and flush it at once (unbound: ``logfile:`` + ``use-syslog: no``;
dnsmasq: ``--log-facility=FILE`` without ``--log-async``), so a count read after a reply has
arrived already includes that query. The readiness probe uses :data:`PROBE_NAME`, which the
counters skip.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import dns.exception
import dns.message

from .ports import free_port

UNBOUND = "/usr/sbin/unbound"
DNSMASQ = "/usr/sbin/dnsmasq"

#: Name used by readiness probes; never counted by ``queries()``.
PROBE_NAME = "probe.upstreams.invalid."

#: A small cluster zone most tests can start from.
CLUSTER_ZONES: dict[str, list[str]] = {
    "cluster.local.": [
        "kubernetes.default.svc.cluster.local. 30 IN A 198.18.0.1",
        "kube-dns.kube-system.svc.cluster.local. 30 IN A 198.18.0.10",
        "web.default.svc.cluster.local. 30 IN A 198.18.1.1",
        "web.default.svc.cluster.local. 30 IN A 198.18.1.2",
        "web.default.svc.cluster.local. 30 IN AAAA fd00::1:1",
        "_http._tcp.web.default.svc.cluster.local. 30 IN SRV 0 50 80 web.default.svc.cluster.local.",
    ],
    "18.198.in-addr.arpa.": [
        "1.0.18.198.in-addr.arpa. 30 IN PTR kubernetes.default.svc.cluster.local.",
    ],
}


@dataclass(frozen=True)
class Query:
    """One query line from a server's log."""

    client: str
    name: str
    qtype: str
    qclass: str = "IN"


def _norm(name: str) -> str:
    return name.lower().rstrip(".") + "."


_UNBOUND_QUERY = re.compile(r"\] info: ([0-9A-Fa-f.:]+) (\S+\.) (\S+) (\S+)$")
_DNSMASQ_QUERY = re.compile(r"dnsmasq\[\d+\]: query\[([^\]]+)\] (\S+) from (\S+)$")


def parse_unbound_log(text: str) -> list[Query]:
    """Queries from unbound ``log-queries`` lines (``info: 127.0.0.1 name. A IN``)."""
    out: list[Query] = []
    for line in text.splitlines():
        m = _UNBOUND_QUERY.search(line)
        if m is None:
            continue
        try:
            ipaddress.ip_address(m.group(1))
        except ValueError:  # e.g. "info: service stopped (unbound 1.17.1)."
            continue
        out.append(Query(client=m.group(1), name=m.group(2), qtype=m.group(3), qclass=m.group(4)))
    return out


def parse_dnsmasq_log(text: str) -> list[Query]:
    """Queries from dnsmasq ``--log-queries`` lines (``query[A] name from 127.0.0.1``)."""
    out: list[Query] = []
    for line in text.splitlines():
        m = _DNSMASQ_QUERY.search(line)
        if m is not None:
            out.append(Query(client=m.group(3), name=_norm(m.group(2)), qtype=m.group(1).upper()))
    return out


@dataclass(eq=False)
class Endpoint:
    """A loopback address something listens on (or, for :func:`closed_port`, nothing does)."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"`` (``"[::1]:PORT"`` for IPv6), as a Corefile ``forward`` takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def hostport(self) -> tuple[str, int]:
        return (self.host, self.port)


# Servers still running are stopped at interpreter exit, whatever happened to the with-block.
_live: weakref.WeakSet[UpstreamServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop()


@dataclass(eq=False)
class UpstreamServer(Endpoint):
    """A running (or stopped) unbound or dnsmasq; ``start()``/``stop()`` keep the same port."""

    kind: str = "unbound"
    argv: list[str] = field(default_factory=list)
    workdir: Path = Path()
    log_path: Path = Path()
    udp: bool = True
    tcp: bool = True
    ipv6: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _baseline: int = field(default=0, repr=False)

    @property
    def address6(self) -> str:
        return f"[::1]:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it answers a probe query."""
        if self.running:
            return
        with open(self.workdir / "stderr.log", "ab") as err:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
                cwd=self.workdir,
            )
        _live.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._reap()
                raise RuntimeError(f"{self.kind} exited during start:\n{self.diagnostics()}")
            if probe(self.host, self.port, tcp=not self.udp, timeout=0.2):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} did not answer on {self.address}:\n{self.diagnostics()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 3 s; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1)
            # Children (dnsmasq TCP workers) share the group; make sure none outlives us.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc = None
        _live.discard(self)

    def log_text(self, since: int = 0) -> str:
        """The query log from byte offset ``since``, complete lines only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return ""
        return data[: data.rfind(b"\n") + 1].decode("utf-8", "replace")

    def queries(self) -> list[Query]:
        """Queries received since start (or the last :meth:`reset_queries`), probes excluded."""
        text = self.log_text(self._baseline)
        parsed = parse_unbound_log(text) if self.kind == "unbound" else parse_dnsmasq_log(text)
        return [q for q in parsed if _norm(q.name) != PROBE_NAME]

    def query_count(self, name: str | None = None, qtype: str | None = None) -> int:
        """How many queries arrived, optionally only for ``name`` (case-insensitive) and ``qtype``."""
        want = _norm(name) if name is not None else None
        return sum(
            1
            for q in self.queries()
            if (want is None or _norm(q.name) == want) and (qtype is None or q.qtype == qtype.upper())
        )

    def wait_for_queries(
        self, count: int, timeout: float = 2.0, name: str | None = None, qtype: str | None = None
    ) -> int:
        """Poll until at least ``count`` matching queries arrived or ``timeout``; return the count."""
        deadline = time.monotonic() + timeout
        while (n := self.query_count(name, qtype)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return n

    def reset_queries(self) -> None:
        """Count from now on (the log itself is kept)."""
        try:
            self._baseline = self.log_path.stat().st_size
        except FileNotFoundError:
            self._baseline = 0

    def diagnostics(self) -> str:
        """Tail of stderr and of the log, for error messages."""
        parts = []
        for p in (self.workdir / "stderr.log", self.log_path):
            with contextlib.suppress(OSError):
                parts.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def recursions(self) -> int | None:
        """unbound only: recursions reported in the shutdown stats (``None`` before a stop)."""
        found = re.findall(
            r"server stats for thread \d+: \d+ queries, \d+ answers from cache, (\d+) recursions",
            self.log_text(),
        )
        return sum(int(n) for n in found) if found else None


def probe(host: str, port: int, tcp: bool = False, timeout: float = 0.2) -> bool:
    """True if a DNS server at ``host:port`` answered a probe query (any rcode)."""
    query = dns.message.make_query(PROBE_NAME, "A")
    wire = query.to_wire()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        s.settimeout(timeout)
        try:
            # A connected UDP socket turns ICMP port-unreachable into an immediate error.
            s.connect((host, port))
            if tcp:
                s.sendall(struct.pack("!H", len(wire)) + wire)
                data = _recv_exact(s, 2)
                data = _recv_exact(s, struct.unpack("!H", data)[0])
            else:
                s.send(wire)
                data = s.recv(65535)
            return dns.message.from_wire(data).id == query.id
        except (OSError, EOFError, dns.exception.DNSException):
            return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


@contextlib.contextmanager
def _running(server: UpstreamServer) -> Iterator[UpstreamServer]:
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def unbound_config(
    *,
    port: int,
    workdir: Path,
    zones: Mapping[str, Sequence[str]],
    local_data: Sequence[str] = (),
    zone_types: Mapping[str, str] | None = None,
    tcp: bool = True,
    udp: bool = True,
    ipv6: bool = False,
    unknown: Literal["refuse", "nxdomain"] = "refuse",
    negative_ttl: int = 30,
    log_queries: bool = True,
    threads: int = 1,
    extra_conf: str = "",
) -> str:
    """unbound.conf text for an authoritative-style local server (pure; see :func:`unbound_server`)."""
    zone_types = zone_types or {}
    lines = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        *([f"  interface: ::1@{port}"] if ipv6 else []),
        f"  port: {port}",
        f"  do-ip6: {'yes' if ipv6 else 'no'}",
        f"  do-udp: {'yes' if udp else 'no'}",
        f"  do-tcp: {'yes' if tcp else 'no'}",
        # Two processes on one port must fail loudly, not share the load.
        "  so-reuseport: no",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{workdir}"',
        '  pidfile: ""',
        "  use-syslog: no",
        f'  logfile: "{workdir / "unbound.log"}"',
        f"  log-queries: {'yes' if log_queries else 'no'}",
        # Verbosity 1 logs per-thread stats at shutdown, which is how a test proves 0 recursions.
        "  verbosity: 1",
        f"  num-threads: {threads}",
        '  module-config: "iterator"',
        "  access-control: 127.0.0.0/8 allow",
        "  access-control: ::1/128 allow",
        # Never talk to anything: even if some name escaped the local zones, no address is allowed.
        "  do-not-query-address: 0.0.0.0/0",
        "  do-not-query-address: ::/0",
        "  do-not-query-localhost: yes",
    ]
    soa = "ns.upstream.invalid. hostmaster.upstream.invalid. 1 3600 600 86400"
    if unknown == "refuse":
        lines.append('  local-zone: "." refuse')
    else:
        lines.append('  local-zone: "." static')
        lines.append(f'  local-data: ". {negative_ttl} IN SOA {soa} {negative_ttl}"')
    for zone, records in zones.items():
        zone = _norm(zone)
        lines.append(
            f'  local-zone: "{zone}" {zone_types.get(zone, zone_types.get(zone.rstrip("."), "static"))}'
        )
        if not any(r.split()[0].lower() == zone.lower() and " SOA " in f" {r.upper()} " for r in records):
            lines.append(f'  local-data: "{zone} {negative_ttl} IN SOA {soa} {negative_ttl}"')
        lines.extend(f'  local-data: "{_escape(r)}"' for r in records)
    lines.extend(f'  local-data: "{_escape(r)}"' for r in local_data)
    if extra_conf:
        lines.extend("  " + line.strip() for line in extra_conf.strip().splitlines())
    lines += ["remote-control:", "  control-enable: no", ""]
    return "\n".join(lines)


def _escape(record: str) -> str:
    # TXT data in local-data is written with its own quotes; unbound wants them escaped or single.
    return record.replace('"', "'")


@contextlib.contextmanager
def unbound_server(
    zones: Mapping[str, Sequence[str]] | None = None,
    local_data: Sequence[str] = (),
    port: int | None = None,
    tcp: bool = True,
    udp: bool = True,
    extra_conf: str = "",
    ipv6: bool = False,
    *,
    zone_types: Mapping[str, str] | None = None,
    unknown: Literal["refuse", "nxdomain"] = "refuse",
    negative_ttl: int = 30,
    log_queries: bool = True,
    threads: int = 1,
    command_prefix: Sequence[str] = (),
) -> Iterator[UpstreamServer]:
    """Run unbound answering only from local data on ``127.0.0.1:port`` (a free port if ``None``).

    ``zones`` maps a zone to its records (``"name TTL IN TYPE data"``). Each zone is a
    ``static`` local-zone (or the type in ``zone_types``, e.g. ``redirect`` so every name under
    it gets the apex data) with an SOA added at the apex unless one is given, so NXDOMAIN and
    NODATA answers carry an SOA (TTL and minimum = ``negative_ttl``). ``local_data`` adds
    records without declaring a zone. Names outside every zone get REFUSED (``unknown=
    "refuse"``) or NXDOMAIN with a root SOA (``unknown="nxdomain"``), answered locally.
    ``udp=False`` gives a TCP-only upstream, ``tcp=False`` a UDP-only one. ``command_prefix``
    wraps the binary (e.g. ``["taskset", "-c", "1"]``).
    """
    hosts = ("127.0.0.1", "::1") if ipv6 else ("127.0.0.1",)
    port = port if port is not None else free_port("both", hosts)
    workdir = Path(tempfile.mkdtemp(prefix="upstream-unbound-"))
    conf = unbound_config(
        port=port,
        workdir=workdir,
        zones=zones if zones is not None else {},
        local_data=local_data,
        zone_types=zone_types,
        tcp=tcp,
        udp=udp,
        ipv6=ipv6,
        unknown=unknown,
        negative_ttl=negative_ttl,
        log_queries=log_queries,
        threads=threads,
        extra_conf=extra_conf,
    )
    (workdir / "unbound.conf").write_text(conf)
    check = subprocess.run(
        ["/usr/sbin/unbound-checkconf", str(workdir / "unbound.conf")], capture_output=True, text=True
    )
    if check.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ValueError(f"bad unbound config: {check.stdout}{check.stderr}\n{conf}")
    server = UpstreamServer(
        host="127.0.0.1",
        port=port,
        kind="unbound",
        argv=[*command_prefix, UNBOUND, "-d", "-c", str(workdir / "unbound.conf")],
        workdir=workdir,
        log_path=workdir / "unbound.log",
        udp=udp,
        tcp=tcp,
        ipv6=ipv6,
    )
    with _running(server) as running:
        yield running


# dnsmasq has one option per record type; the value after "name," is passed through verbatim.
_DNSMASQ_OPTION = {
    "A": "--host-record",
    "AAAA": "--host-record",
    "TXT": "--txt-record",
    "CNAME": "--cname",
    "PTR": "--ptr-record",
    "SRV": "--srv-host",
    "MX": "--mx-host",
}


def dnsmasq_args(
    *,
    port: int,
    workdir: Path,
    records: Sequence[tuple[str, str, str]],
    local_zones: Sequence[str],
    ttl: int,
    ipv6: bool,
    log_queries: bool,
    extra_args: Sequence[str],
) -> list[str]:
    """dnsmasq command line for an authoritative-style local server (pure)."""
    args = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--port={port}",
        "--listen-address=127.0.0.1" + (",::1" if ipv6 else ""),
        "--bind-interfaces",
        "--user=root",
        "--group=root",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        f"--log-facility={workdir / 'dnsmasq.log'}",
        f"--local-ttl={ttl}",
    ]
    if log_queries:
        args.append("--log-queries")
    args += [f"--local=/{z.strip('.')}/" for z in local_zones]
    for name, rtype, value in records:
        option = _DNSMASQ_OPTION.get(rtype.upper())
        if option is None:
            raise ValueError(f"dnsmasq_server cannot serve {rtype} records; use unbound_server")
        args.append(f"{option}={name.rstrip('.')},{value}")
    return [*args, *extra_args]


@contextlib.contextmanager
def dnsmasq_server(
    records: Sequence[tuple[str, str, str]] = (),
    port: int | None = None,
    *,
    local_zones: Sequence[str] = ("cluster.local",),
    ttl: int = 30,
    ipv6: bool = False,
    log_queries: bool = True,
    extra_args: Sequence[str] = (),
    command_prefix: Sequence[str] = (),
) -> Iterator[UpstreamServer]:
    """Run dnsmasq answering ``records`` (``(name, type, value)``) on ``127.0.0.1:port``.

    Types: A/AAAA (``--host-record``, which also creates the PTR), TXT, CNAME, PTR, SRV
    (``"target,port,priority,weight"``) and MX (``"target,preference"``). Names under
    ``local_zones`` that have no record get NXDOMAIN/NODATA *without* an SOA (dnsmasq adds none),
    anything else gets REFUSED. Record TTL is ``ttl`` (dnsmasq's default would be 0).
    """
    hosts = ("127.0.0.1", "::1") if ipv6 else ("127.0.0.1",)
    port = port if port is not None else free_port("both", hosts)
    workdir = Path(tempfile.mkdtemp(prefix="upstream-dnsmasq-"))
    argv = dnsmasq_args(
        port=port,
        workdir=workdir,
        records=records,
        local_zones=local_zones,
        ttl=ttl,
        ipv6=ipv6,
        log_queries=log_queries,
        extra_args=extra_args,
    )
    server = UpstreamServer(
        host="127.0.0.1",
        port=port,
        kind="dnsmasq",
        argv=[*command_prefix, *argv],
        workdir=workdir,
        log_path=workdir / "dnsmasq.log",
        ipv6=ipv6,
    )
    with _running(server) as running:
        yield running


# ---------------------------------------------------------------------------------------------
# Failure endpoints: real sockets that misbehave, no DNS logic.


@dataclass(eq=False)
class Blackhole(Endpoint):
    """A bound UDP socket that reads and counts datagrams but never answers."""

    received: int = 0


@contextlib.contextmanager
def blackhole_udp(host: str = "127.0.0.1", port: int = 0) -> Iterator[Blackhole]:
    """A UDP port that swallows every query (an upstream that times out).

    ``port``: take over a port a stopped server used, so an upstream "goes dark" in place.
    """
    port = port or free_port("both", (host,))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    hole = Blackhole(host=host, port=port)

    def on_readable(s: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            s.recv(65535)
            hole.received += 1

    with _Reactor() as reactor:
        try:
            reactor.add(sock, on_readable)
            yield hole
        finally:
            reactor.close()
            sock.close()


def closed_port(host: str = "127.0.0.1") -> Endpoint:
    """A port nothing listens on: UDP gets ICMP port-unreachable, TCP gets RST."""
    return Endpoint(host=host, port=free_port("both", (host,)))


BadReplyMode = Literal["good", "truncated", "bad_pointer", "wrong_counts", "rdata_pointer", "trailing"]


@dataclass(eq=False)
class BadReplyServer(Endpoint):
    """Answers every query on UDP and TCP with a reply that is broken in the way ``mode`` says.

    ``mode`` may be changed while it runs. ``answered`` counts replies sent.
    """

    mode: str = "truncated"
    answered: int = 0


def broken_reply(query: bytes, mode: str) -> bytes:
    """A reply to ``query`` with one ``A 198.18.0.1`` answer, damaged as ``mode`` says.

    ``good``: intact. ``truncated``: cut inside the answer's rdata. ``bad_pointer``: the answer's
    owner is a compression pointer past the end of the message. ``wrong_counts``: ANCOUNT says 3,
    one record follows. ``rdata_pointer``: a CNAME whose target points forward (a loop).
    ``trailing``: intact, then junk bytes.
    """
    off = 12
    while query[off]:
        off += 1 + query[off]
    question = query[12 : off + 5]
    flags = 0x8180 | (query[2] & 0x01) << 8  # QR, RD copied, RA
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + bytes([198, 18, 0, 1])
    an = 1
    if mode == "truncated":
        answer = answer[:-2]
    elif mode == "bad_pointer":
        answer = b"\xc3\xff" + answer[2:]
    elif mode == "wrong_counts":
        an = 3
    elif mode == "rdata_pointer":
        here = 12 + len(question) + 12  # where the CNAME rdata starts: point at itself
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 30, 2) + struct.pack("!H", 0xC000 | here)
    out = query[:2] + struct.pack("!HHHHH", flags, 1, an, 0, 0) + question + answer
    if mode == "trailing":
        out += b"\x00junk"
    return out


@contextlib.contextmanager
def bad_reply_server(mode: BadReplyMode = "truncated", host: str = "127.0.0.1") -> Iterator[BadReplyServer]:
    """A real UDP+TCP DNS endpoint that replies to each query with :func:`broken_reply`."""
    port = free_port("both", (host,))
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(fam, socket.SOCK_DGRAM)
    udp.bind((host, port))
    tcp = socket.socket(fam, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    tcp.listen(64)
    server = BadReplyServer(host=host, port=port, mode=mode)
    conns: list[socket.socket] = []

    with _Reactor() as reactor:

        def on_udp(s: socket.socket) -> None:
            try:
                data, addr = s.recvfrom(65535)
            except BlockingIOError:
                return
            if len(data) > 12:
                server.answered += 1  # before the send: a client may look as soon as it has the reply
                s.sendto(broken_reply(data, server.mode), addr)

        def on_tcp_data(conn: socket.socket) -> None:
            try:
                data = conn.recv(65535)  # test queries arrive in one segment on loopback
            except OSError:
                data = b""
            if len(data) < 14:
                reactor.remove(conn)
                conn.close()
                return
            reply = broken_reply(data[2:], server.mode)
            server.answered += 1
            with contextlib.suppress(OSError):
                conn.sendall(struct.pack("!H", len(reply)) + reply)

        def on_accept(s: socket.socket) -> None:
            with contextlib.suppress(BlockingIOError):
                conn, _ = s.accept()
                conns.append(conn)
                reactor.add(conn, on_tcp_data)

        try:
            reactor.add(udp, on_udp)
            reactor.add(tcp, on_accept)
            yield server
        finally:
            reactor.close()
            for c in conns:
                c.close()
            udp.close()
            tcp.close()


@dataclass(eq=False)
class TcpBlackhole(Endpoint):
    """A TCP listener that accepts; ``mode`` says what it does next."""

    mode: str = "hold"
    accepted: int = 0
    bytes_received: int = 0


@contextlib.contextmanager
def tcp_blackhole(mode: Literal["hold", "close"] = "hold", host: str = "127.0.0.1") -> Iterator[TcpBlackhole]:
    """Accept TCP connections and never reply (``hold``) or close them at once (``close``).

    Only TCP is bound: UDP to the same port gets ICMP port-unreachable.
    """
    port = free_port("both", (host,))
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(64)
    hole = TcpBlackhole(host=host, port=port, mode=mode)
    conns: list[socket.socket] = []

    with _Reactor() as reactor:

        def on_data(conn: socket.socket) -> None:
            try:
                data = conn.recv(65535)
            except OSError:
                data = b""
            hole.bytes_received += len(data)
            if not data:
                reactor.remove(conn)
                conn.close()

        def on_accept(s: socket.socket) -> None:
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                return
            hole.accepted += 1
            if mode == "close":
                conn.close()
                return
            conns.append(conn)
            reactor.add(conn, on_data)

        try:
            reactor.add(listener, on_accept)
            yield hole
        finally:
            reactor.close()
            for c in conns:
                c.close()
            listener.close()


def tcp_accept_close(host: str = "127.0.0.1") -> contextlib.AbstractContextManager[TcpBlackhole]:
    """A TCP listener that accepts and immediately closes each connection."""
    return tcp_blackhole("close", host)


class _Reactor:
    """One thread running callbacks for readable sockets; ``close()`` joins it."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstreams-reactor", daemon=True)

    def __enter__(self) -> _Reactor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, sock: socket.socket, callback: Callable[[socket.socket], None]) -> None:
        sock.setblocking(False)
        with self._lock:
            self._sel.register(sock, selectors.EVENT_READ, callback)

    def remove(self, sock: socket.socket) -> None:
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                has_fds = bool(self._sel.get_map())
            if not has_fds:
                time.sleep(0.02)
                continue
            for key, _ in self._sel.select(timeout=0.05):
                key.data(key.fileobj)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._sel.close()


@dataclass(eq=False)
class SlowProxy(Endpoint):
    """A UDP+TCP relay that holds each client->upstream message for ``delay_s`` seconds.

    ``delay_s`` may be changed while the proxy runs; it applies to messages received after.
    """

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    delay_s: float = 0.0
    udp_relayed: int = 0
    tcp_connections: int = 0


@contextlib.contextmanager
def slow_proxy(upstream: Endpoint | tuple[str, int], delay_s: float) -> Iterator[SlowProxy]:
    """Put a delaying relay (its own thread and event loop) in front of a real server."""
    target = upstream.hostport if isinstance(upstream, Endpoint) else upstream
    proxy = SlowProxy(host="127.0.0.1", port=free_port("both"), upstream=target, delay_s=delay_s)
    runner = _ProxyRunner(proxy)
    runner.start()
    try:
        yield proxy
    finally:
        runner.stop()


class _ProxyRunner:
    def __init__(self, proxy: SlowProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.stopping: asyncio.Event | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.thread = threading.Thread(target=self._thread_main, name="slow-proxy", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)
        if self.error is not None:
            self.thread.join(5)
            raise RuntimeError(f"slow_proxy failed to start: {self.error!r}")

    def stop(self) -> None:
        if self.stopping is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(10)

    def _thread_main(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        proxy = self.proxy
        try:
            udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _UdpFront(self), local_addr=(proxy.host, proxy.port)
            )
            tcp = await asyncio.start_server(self._tcp_client, proxy.host, proxy.port, reuse_address=True)
        except OSError as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            await self.stopping.wait()
        finally:
            udp.close()
            tcp.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await tcp.wait_closed()

    async def relay_udp(self, data: bytes, client: tuple[str, int], front: asyncio.DatagramTransport) -> None:
        await asyncio.sleep(self.proxy.delay_s)
        reply: asyncio.Future[bytes] = self.loop.create_future()
        back, _ = await self.loop.create_datagram_endpoint(
            lambda: _UdpBack(reply), remote_addr=self.proxy.upstream
        )
        try:
            back.sendto(data)
            answer = await asyncio.wait_for(reply, 10)
            # Count before the client can see the answer, so a test reading it after its reply agrees.
            self.proxy.udp_relayed += 1
            front.sendto(answer, client)
        except (OSError, TimeoutError):
            pass  # the client sees what a real path would show: silence
        finally:
            back.close()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy.tcp_connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.proxy.upstream)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool) -> None:
            try:
                while data := await src.read(65536):
                    if delayed:
                        await asyncio.sleep(self.proxy.delay_s)
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        finally:
            writer.close()
            up_writer.close()


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, runner: _ProxyRunner) -> None:
        self.runner = runner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport in 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        front = self.transport
        assert front is not None
        self.runner.spawn(self.runner.relay_udp(data, addr, front))


class _UdpBack(asyncio.DatagramProtocol):
    def __init__(self, reply: asyncio.Future[bytes]) -> None:
        self.reply = reply

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)
