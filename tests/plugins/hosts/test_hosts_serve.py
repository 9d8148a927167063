"""hosts through a real ``nodelocaldns serve``: dnspython clients, a real unbound behind fallthrough.

Every test writes its own hosts file; the machine's /etc/hosts is never read (its content is not ours).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
from prometheus_client.parser import text_string_to_metric_families

from nodelocaldns.plugins.hosts import setup
from support.directives import directive
from support.ports import free_port
from support.server import Served, serve
from support.upstreams import UpstreamServer

HOSTS = """\
# a comment line
10.0.0.1 a.example.org a-alias.example.org
10.0.0.2 b.example.org   # trailing comment
fd00::1  a.example.org
10.0.0.3 outside.example.net
"""


def addresses(r: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in r.answer for rd in rrset]


def test_file_inline_ptr_and_the_rcodes(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text(HOSTS)
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    hosts {f} example.org {{
        10.0.0.9 inline.example.org
        10.0.0.1 both.example.org
        ttl 60
    }}
}}
"""
    with serve(corefile) as s:
        r = s.query("A.Example.org.", "A")
        assert r.rcode() == dns.rcode.NOERROR and addresses(r) == ["10.0.0.1"]
        assert r.flags & dns.flags.AA and not r.flags & dns.flags.RA
        assert r.answer[0].ttl == 60 and r.answer[0].name.to_text() == "a.example.org."
        assert r.question[0].name.to_text() == "A.Example.org."  # the client's question as sent
        assert addresses(s.query("a.example.org.", "AAAA")) == ["fd00::1"]
        assert addresses(s.query("inline.example.org.", "A", tcp=True)) == ["10.0.0.9"]
        assert addresses(s.query("both.example.org.", "A")) == ["10.0.0.1"]
        assert addresses(s.query("a-alias.example.org.", "A")) == ["10.0.0.1"]
        # PTR synthesis: every name of the address, file then inline; reverse zones need not be listed.
        ptr = s.query("1.0.0.10.in-addr.arpa.", "PTR")
        assert addresses(ptr) == ["a.example.org.", "a-alias.example.org.", "both.example.org."]
        v6 = s.query("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "PTR")
        assert addresses(v6) == ["a.example.org."]
        # A name with an address of the other family only: authoritative NODATA, no SOA.
        nodata = s.query("b.example.org.", "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and not nodata.authority
        assert nodata.flags & dns.flags.AA
        assert s.query("b.example.org.", "MX").rcode() == dns.rcode.NOERROR
        # Unknown name, no fallthrough, nothing after hosts: SERVFAIL.
        assert s.query("nope.example.org.", "A").rcode() == dns.rcode.SERVFAIL
        # Outside the plugin's zones the entry is never loaded; the chain ends: SERVFAIL.
        assert s.query("outside.example.net.", "A").rcode() == dns.rcode.SERVFAIL


def test_fallthrough_reaches_forward_and_a_real_upstream(
    tmp_path: Path, unbound_upstream: UpstreamServer
) -> None:
    f = tmp_path / "hosts"
    f.write_text("10.9.9.9 override.cluster.local\n198.18.9.9 web.default.svc.cluster.local\n")
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    hosts {f} cluster.local {{
        fallthrough
    }}
    forward . {unbound_upstream.address}
}}
"""
    with serve(corefile) as s:
        unbound_upstream.reset_queries()
        assert addresses(s.query("override.cluster.local.", "A")) == ["10.9.9.9"]
        # hosts owns the name: the upstream's two addresses never show.
        assert addresses(s.query("web.default.svc.cluster.local.", "A")) == ["198.18.9.9"]
        # The name exists in hosts (A only): NODATA from hosts, not the upstream's AAAA.
        assert addresses(s.query("web.default.svc.cluster.local.", "AAAA")) == []
        assert unbound_upstream.query_count() == 0
        # Unknown to hosts: fallthrough hands it to forward.
        r = s.query("kubernetes.default.svc.cluster.local.", "A")
        assert addresses(r) == ["198.18.0.1"]
        unbound_upstream.wait_for_queries(1)
        assert unbound_upstream.query_count("kubernetes.default.svc.cluster.local.", "A") == 1
        # A PTR for an address hosts does not know goes on, whatever fallthrough says.
        assert addresses(s.query("1.0.18.198.in-addr.arpa.", "PTR")) == [
            "kubernetes.default.svc.cluster.local."
        ]


def test_unknown_ptr_goes_on_even_without_fallthrough(
    tmp_path: Path, unbound_upstream: UpstreamServer
) -> None:
    f = tmp_path / "hosts"
    f.write_text("10.0.0.1 a.example.org\n")
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    hosts {f} example.org
    forward . {unbound_upstream.address}
}}
"""
    with serve(corefile) as s:
        assert addresses(s.query("1.0.18.198.in-addr.arpa.", "PTR")) == [
            "kubernetes.default.svc.cluster.local."
        ]
        assert s.query("gone.example.org.", "A").rcode() == dns.rcode.SERVFAIL
        assert unbound_upstream.query_count("gone.example.org.") == 0


def wait_answer(s: Served, name: str, want: list[str], timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    got: list[str] = []
    while time.monotonic() < deadline:
        got = addresses(s.query(name, "A"))
        if got == want:
            return got
        time.sleep(0.05)
    return got


def rewrite(path: Path, text: str) -> None:
    """Replace the file with a newer mtime (hosts compares mtime and size, as CoreDNS does)."""
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def metric(port: int, name: str) -> list[tuple[dict[str, str], float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    return [
        (dict(smp.labels), smp.value)
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
        if smp.name == name
    ]


def test_reload_on_change_without_restart_and_reload_0_keeps_the_first_read(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text("10.1.0.1 r.example.org\n")
    f2 = tmp_path / "static-hosts"
    f2.write_text("10.1.0.5 first.static.test\n")
    mport = free_port()
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{mport}
    hosts {f} example.org {{
        reload 100ms
    }}
}}
static.test:{{PORT}} {{
    bind 127.0.0.1
    hosts {f2} {{
        reload 0
    }}
}}
"""
    with serve(corefile) as s:
        pid = s.proc.pid
        assert addresses(s.query("r.example.org.", "A")) == ["10.1.0.1"]
        entries = sorted(metric(mport, "coredns_hosts_entries"), key=lambda e: e[0]["hostsfile"])
        # One address + one reverse name in each file.
        assert entries == [({"hostsfile": str(f)}, 2.0), ({"hostsfile": str(f2)}, 2.0)]
        (stamp,) = metric(mport, "coredns_hosts_reload_timestamp_seconds")
        assert stamp[1] == max(f.stat().st_mtime_ns, f2.stat().st_mtime_ns) / 1e9
        rewrite(f, "10.1.0.2 r.example.org\n10.1.0.3 new.example.org\n")
        rewrite(f2, "10.1.0.5 first.static.test\n10.1.0.4 s.static.test\n")
        assert wait_answer(s, "r.example.org.", ["10.1.0.2"]) == ["10.1.0.2"]
        assert addresses(s.query("new.example.org.", "A")) == ["10.1.0.3"]
        assert s.proc.pid == pid and s.proc.poll() is None  # no restart
        (stamp,) = metric(mport, "coredns_hosts_reload_timestamp_seconds")
        assert stamp[1] == f.stat().st_mtime_ns / 1e9  # f's new mtime: f2 was never re-read
        assert ({"hostsfile": str(f)}, 4.0) in metric(mport, "coredns_hosts_entries")
        # reload 0: the static.test block read its file once, at start-up, and never again.
        time.sleep(0.5)
        assert addresses(s.query("first.static.test.", "A")) == ["10.1.0.5"]
        assert s.query("s.static.test.", "A").rcode() == dns.rcode.SERVFAIL


def test_missing_file_warns_once_and_is_picked_up_when_it_appears(tmp_path: Path) -> None:
    f = tmp_path / "later-hosts"
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    hosts {f} example.org {{
        10.0.0.9 inline.example.org
        reload 100ms
    }}
}}
"""
    with serve(corefile) as s:
        assert addresses(s.query("inline.example.org.", "A")) == ["10.0.0.9"]
        f.write_text("10.2.0.1 late.example.org\n")
        assert wait_answer(s, "late.example.org.", ["10.2.0.1"]) == ["10.2.0.1"]
        f.unlink()  # a deleted file keeps the entries read last
        time.sleep(0.4)
        assert addresses(s.query("late.example.org.", "A")) == ["10.2.0.1"]
        log = s.stderr()
    assert log.count(f"[WARNING] plugin/hosts: File does not exist: {f}") == 1


def test_cached_hosts_answer_is_what_hosts_sent(tmp_path: Path) -> None:
    """hosts sits after cache: its answer is cached and served by the fast path with TTLs counting down."""
    f = tmp_path / "hosts"
    f.write_text("10.3.0.1 c.example.org\n")
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    cache 30
    hosts {f} example.org {{
        ttl 20
        reload 100ms
    }}
}}
"""
    with serve(corefile) as s:
        first = s.query("c.example.org.", "A")
        rewrite(f, "10.3.0.2 c.example.org\n")
        time.sleep(0.5)
        second = s.query("c.example.org.", "A")
        assert addresses(first) == addresses(second) == ["10.3.0.1"]  # still the cached answer
        assert second.answer[0].ttl <= 20 and second.flags & dns.flags.AA


def test_default_path_is_etc_hosts() -> None:
    cfg = setup.parse(directive("hosts"))
    assert cfg.path == "/etc/hosts" and cfg.reload == 5.0 and cfg.ttl == 3600 and cfg.fallthrough == ()


def test_check_reports_bad_hosts_arguments_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "Corefile"
    f.write_text(
        ".:53 {\n    hosts {\n        ttl 0\n    }\n}\n.:54 {\n    hosts {\n        reload -1s\n    }\n}\n"
    )
    out = subprocess.run([sys.executable, "-m", "nodelocaldns", "check", "--corefile", str(f)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 1
    assert f"{f}:3 (directive 'ttl'): ttl provided is invalid" in out.stderr
    assert f"{f}:8 (directive 'reload'): invalid negative duration for reload '-1s'" in out.stderr
