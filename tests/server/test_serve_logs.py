"""What the server writes to stderr: errors, log (CoreDNS common format), and loop detection."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from support.ports import free_port
from support.server import REPO, Served
from support.server import serve as _serve
from support.upstreams import UpstreamServer, closed_port

MakeUnbound = Callable[..., UpstreamServer]

ZONES = {"cluster.local.": ["web.default.svc.cluster.local. 30 IN A 198.18.1.1"]}

# CoreDNS's {common} format, field by field (plugin/log README and pkg/replacer).
COMMON = re.compile(
    r"^\[INFO\] (?P<remote>\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):(?P<port>\d+) - (?P<id>\d+) "
    r'"(?P<type>[A-Z0-9]+) (?P<class>[A-Z0-9]+) (?P<name>\S+) (?P<proto>udp|tcp) (?P<size>\d+) '
    r'(?P<do>true|false) (?P<bufsize>\d+)" (?P<rcode>[A-Z]+) (?P<rflags>[a-z,]*) (?P<rsize>\d+) '
    r"(?P<duration>\d+(?:\.\d+)?s)$"
)


# Answers support.server.serve's startup probe ("probe.invalid.") without a forward.
PROBE_BLOCK = "invalid:{PORT} {\n    bind 127.0.0.1\n}\n"


@contextlib.contextmanager
def serve(text: str) -> Iterator[Served]:
    """support.server.serve with a local zone that answers its readiness probe."""
    with _serve(text + PROBE_BLOCK) as s:
        yield s


def block(zone: str, body: str) -> str:
    return f"{zone}:{{PORT}} {{\n    bind 127.0.0.1\n    {body}\n}}\n"


def log_lines(text: str) -> list[re.Match[str]]:
    out = []
    for line in text.splitlines():
        if line.startswith("[INFO] ") and " - " in line:
            m = COMMON.match(line)
            assert m is not None, f"not CoreDNS common log format: {line!r}"
            out.append(m)
    return out


def test_log_common_format_fields(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    with serve(block(".", f"log\n    cache 30\n    forward . {up.address}")) as s:
        miss = dns.message.make_query("WEB.default.svc.cluster.local.", "A")
        hit = dns.message.make_query(
            "web.default.svc.cluster.local.", "A", use_edns=0, payload=1232, want_dnssec=True
        )
        hit_tcp = dns.message.make_query("web.default.svc.cluster.local.", "A")
        nx = dns.message.make_query("nope.cluster.local.", "AAAA")
        replies = [
            dns.query.udp(miss, "127.0.0.1", port=s.port, timeout=3),
            dns.query.udp(hit, "127.0.0.1", port=s.port, timeout=3),
            dns.query.tcp(hit_tcp, "127.0.0.1", port=s.port, timeout=3),
            dns.query.udp(nx, "127.0.0.1", port=s.port, timeout=3),
        ]
        text = s.stderr()
    lines = [m for m in log_lines(text) if m["name"] != "probe.invalid."]
    assert len(lines) == 4
    for m, q, r, proto in zip(
        lines, (miss, hit, hit_tcp, nx), replies, ("udp", "udp", "tcp", "udp"), strict=True
    ):
        assert m["remote"] == "127.0.0.1"
        assert int(m["id"]) == q.id
        assert m["type"] == dns.rdatatype.to_text(q.question[0].rdtype) and m["class"] == "IN"
        assert m["name"] == str(q.question[0].name).lower()  # lowercased
        assert m["proto"] == proto
        assert int(m["size"]) == len(q.to_wire())
        assert m["do"] == ("true" if q.ednsflags & dns.flags.DO else "false")
        assert int(m["bufsize"]) == (65535 if proto == "tcp" else max(q.payload, 512) if q.edns >= 0 else 512)
        assert m["rcode"] == dns.rcode.to_text(r.rcode())
        want_flags = [n for n, f in (("qr", dns.flags.QR), ("aa", dns.flags.AA), ("tc", dns.flags.TC),
                                     ("rd", dns.flags.RD), ("ra", dns.flags.RA), ("ad", dns.flags.AD),
                                     ("cd", dns.flags.CD)) if r.flags & f]  # fmt: skip
        assert m["rflags"] == ",".join(want_flags)
        assert 0 < float(m["duration"][:-1]) < 2
        # Go's Duration.Seconds() of whole nanoseconds: at most nine decimals, never float noise.
        assert re.fullmatch(r"\d+(\.\d{1,9})?s", m["duration"]), m["duration"]
    assert "aa" in lines[1]["rflags"].split(",") and "aa" in lines[2]["rflags"].split(",")  # cache hits


def test_log_class_filter_and_name_scope(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    body = f"log svc.cluster.local {{\n        class denial error\n    }}\n    forward . {up.address}"
    with serve(block(".", body)) as s:
        s.query("web.default.svc.cluster.local.")  # success: not logged
        s.query("gone.default.svc.cluster.local.")  # denial: logged
        s.query("gone.other.cluster.local.")  # outside the name scope
        s.query("web.default.svc.cluster.local.", "TXT")  # NODATA is a denial
        text = s.stderr()
    names = [(m["name"], m["type"], m["rcode"]) for m in log_lines(text)]
    assert names == [
        ("gone.default.svc.cluster.local.", "A", "NXDOMAIN"),
        ("web.default.svc.cluster.local.", "TXT", "NOERROR"),
    ]


def test_log_line_for_a_server_written_error() -> None:
    dead = closed_port()
    with serve(block(".", f"log\n    forward . {dead.address}")) as s:
        q = dns.message.make_query("web.default.svc.cluster.local.", "A")
        dns.query.udp(q, "127.0.0.1", port=s.port, timeout=3)
        text = s.stderr()
    [m] = [m for m in log_lines(text) if m["name"] == "web.default.svc.cluster.local."]
    # CoreDNS logs msg.SetRcode(r, rc): QR plus the query's RD/CD, header and question only.
    assert (m["rcode"], m["rflags"]) == ("SERVFAIL", "qr,rd")
    assert int(m["rsize"]) == len(q.to_wire())


def test_errors_line_format_and_rate_limit(make_unbound: MakeUnbound) -> None:
    dead = closed_port()
    with serve(block(".", f"errors\n    forward . {dead.address}")) as s:
        for i in range(30):
            assert s.query(f"n{i}.cluster.local.", "AAAA").rcode() == dns.rcode.SERVFAIL
        text = s.stderr()
    errors = [line for line in text.splitlines() if line.startswith("[ERROR] plugin/errors: ")]
    pattern = re.compile(
        rf"^\[ERROR\] plugin/errors: 2 n\d+\.cluster\.local\. AAAA: read udp 127\.0\.0\.1:\d+->{re.escape(dead.address)}: read: connection refused$"
    )
    assert errors and all(pattern.match(line) for line in errors), errors[:3]
    # A dead upstream must not flood the node's logs: one pattern, at most 20 lines per 10 s.
    assert 1 <= len(errors) <= 20


def test_errors_consolidate(make_unbound: MakeUnbound) -> None:
    dead = closed_port()
    body = f'errors {{\n        consolidate 1s ".*read udp.*" warning\n    }}\n    forward . {dead.address}'
    with serve(block(".", body)) as s:
        t0 = time.monotonic()
        for i in range(5):
            s.query(f"n{i}.cluster.local.")
        time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
        s.query("last.cluster.local.")
        text = s.stderr()
    assert "6 errors" not in text
    assert "[ERROR] plugin/errors: 2 n0.cluster.local." not in text
    # The summary comes when the period that the first error opened ends; "last" opened a new one.
    assert re.search(
        r"\[WARNING\] plugin/errors: 5 errors like '\.\*read udp\.\*' occurred in last 1s", text
    ), text


def test_errors_consolidate_prints_its_pending_summary_at_shutdown() -> None:
    """CoreDNS's errors plugin flushes pending summaries on shutdown (errorHandler.stop)."""
    dead = closed_port()
    body = f'errors {{\n        consolidate 5m ".*read udp.*"\n    }}\n    forward . {dead.address}'
    with serve(block(".", body)) as s:
        for i in range(3):
            assert s.query(f"n{i}.cluster.local.").rcode() == dns.rcode.SERVFAIL
        assert s.stop() == 0  # SIGTERM long before the 5 minutes are over
        text = s.stderr()
    assert re.search(
        r"^\[ERROR\] plugin/errors: 3 errors like '\.\*read udp\.\*' occurred in last 5m0s$", text, re.M
    ), text


def run_corefile(text: str, timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".Corefile", delete=False) as f:
        f.write(text)
    return subprocess.run([sys.executable, "-m", "nodelocaldns", "serve", "--corefile", f.name],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)  # fmt: skip


def test_loop_to_itself_exits_nonzero_with_the_coredns_message() -> None:
    port = free_port()
    text = f"cluster.local:{port} {{\n    bind 127.0.0.1\n    loop\n    forward . 127.0.0.1:{port}\n}}\n"
    t0 = time.monotonic()
    out = run_corefile(text, timeout=20)
    assert out.returncode == 1
    assert time.monotonic() - t0 < 10
    m = re.search(
        r'\[FATAL\] plugin/loop: Loop \(127\.0\.0\.1:\d+ -> 127\.0\.0\.1:(\d+)\) detected for zone "cluster\.local\.", '
        r'see https://coredns\.io/plugins/loop#troubleshooting\. Query: "HINFO (\d+)\.(\d+)\.cluster\.local\."',
        out.stderr,
    )
    assert m is not None, out.stderr
    assert int(m.group(1)) == port


def test_no_loop_keeps_running(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    with serve(block(".", f"loop\n    forward . {up.address}")) as s:
        time.sleep(0.5)
        assert s.proc.poll() is None
        assert s.query("web.default.svc.cluster.local.").answer
        hinfo = [q for q in up.queries() if q.qtype == "HINFO"]
        assert len(hinfo) == 1 and hinfo[0].name.endswith(".")  # the one startup probe


@pytest.mark.parametrize("body", ["loop\n    loop", "loop foo"])
def test_loop_arguments_are_rejected(body: str) -> None:
    out = run_corefile(block(".", body).replace("{PORT}", str(free_port())), timeout=20)
    assert out.returncode == 1 and "loop" in out.stderr
