"""hosts reload: re-read on mtime/size change at the reload interval, with a fake clock; gauges."""

from __future__ import annotations

import os
from pathlib import Path

from nodelocaldns.plugins.hosts.hostsfile import FileStamp, check_due, needs_reparse
from nodelocaldns.plugins.hosts.metrics import HostsGauges
from nodelocaldns.plugins.hosts.setup import HostsConfig
from nodelocaldns.plugins.hosts.source import HostsSource


def test_check_due() -> None:
    assert check_due(None, 0.0, 5.0)
    assert not check_due(10.0, 14.9, 5.0)
    assert check_due(10.0, 15.0, 5.0)
    assert check_due(None, 0.0, 0.0) and not check_due(10.0, 1e9, 0.0)


def test_needs_reparse() -> None:
    a = FileStamp(1, 10)
    assert needs_reparse(None, a)
    assert not needs_reparse(a, FileStamp(1, 10))
    assert needs_reparse(a, FileStamp(2, 10)) and needs_reparse(a, FileStamp(1, 11))
    assert not needs_reparse(a, None)  # deleted: keep serving what we have


def test_source_follows_the_real_file(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text("10.0.0.1 a.example.org\n")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    src = HostsSource(HostsConfig(path=str(f), inline=("10.0.0.9 b.example.org",)), (".",))
    assert src.next_check() == 0.0
    assert src.poll(100.0)
    assert src.table.v4("a.example.org.") == [bytes([10, 0, 0, 1])]
    assert src.gauges.samples() == [
        ("coredns_hosts_entries", {"hostsfile": str(f)}, 4.0),
        ("coredns_hosts_reload_timestamp_seconds", {}, 1.0),
    ]
    f.write_text("10.0.0.2 a.example.org\n")
    os.utime(f, ns=(2_000_000_000, 2_000_000_000))
    assert not src.poll(104.9)  # not due yet
    assert src.next_check() == 105.0
    assert src.poll(105.0)
    assert src.table.v4("a.example.org.") == [bytes([10, 0, 0, 2])]
    assert src.table.v4("b.example.org.") == [bytes([10, 0, 0, 9])]  # inline entries survive reloads
    assert not src.poll(110.0)  # unchanged
    f.unlink()
    assert not src.poll(115.0)
    assert src.table.v4("a.example.org.") == [bytes([10, 0, 0, 2])]


def test_same_stamp_different_content_is_not_reread() -> None:
    files = {"/h": ("10.0.0.1 a.", FileStamp(5, 11))}
    src = HostsSource(HostsConfig(path="/h"), (".",), stat=lambda p: files[p][1], read=lambda p: files[p][0])
    assert src.poll(0.0)
    files["/h"] = ("10.0.0.2 a.", FileStamp(5, 11))  # CoreDNS compares mtime and size only
    assert not src.poll(10.0)
    assert src.table.v4("a.") == [bytes([10, 0, 0, 1])]


def test_reload_zero_reads_once() -> None:
    calls: list[str] = []

    def stat(p: str) -> FileStamp:
        calls.append(p)
        return FileStamp(len(calls), 1)

    src = HostsSource(HostsConfig(path="/h", reload=0.0), (".",), stat=stat, read=lambda p: "")
    assert src.poll(0.0) and not src.poll(1e6) and calls == ["/h"] and src.next_check() is None


def test_missing_file_sets_no_gauges() -> None:
    src = HostsSource(HostsConfig(path="/nonexistent/hosts", inline=("10.0.0.1 a.",)), (".",))
    assert not src.poll(0.0)
    assert src.gauges.samples() == [] and src.table.v4("a.") == [bytes([10, 0, 0, 1])]
    assert HostsGauges().samples() == []
