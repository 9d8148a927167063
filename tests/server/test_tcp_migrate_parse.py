"""server/tcp_migrate.py without privileges: /proc/net/tcp{,6} parsing, the shared-port decision,
and the sysctl file handled through a path the test owns."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from nodelocaldns.server.tcp_migrate import TCPMigrate, listeners, shared


def test_listening_sockets_are_counted_per_address_from_the_real_proc_files() -> None:
    socks = []
    try:
        for fam, host in (
            (socket.AF_INET, "127.0.0.1"),
            (socket.AF_INET, "127.0.0.1"),
            (socket.AF_INET6, "::1"),
        ):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, socks[0].getsockname()[1] if socks else 0))
            s.listen(4)
            socks.append(s)
        port = socks[0].getsockname()[1]
        counts = listeners([Path("/proc/net/tcp").read_text(), Path("/proc/net/tcp6").read_text()])
        assert counts[("127.0.0.1", port)] == 2
        assert counts[("::1", port)] == 1
        assert shared([("127.0.0.1", port), ("::1", port), ("fe80::1%lo", port), ("bad", port)], counts) == [
            ("127.0.0.1", port)
        ]
    finally:
        for s in socks:
            s.close()


def test_a_connected_socket_is_not_a_listener() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:14E9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
        "   1: 0100007F:14E9 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2\n"
    )
    assert listeners([text]) == {("127.0.0.1", 5353): 1}


def test_the_sysctl_is_set_once_and_a_refusal_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    knob = tmp_path / "tcp_migrate_req"
    knob.write_text("0\n")
    assert TCPMigrate(knob).ensure("test") and knob.read_text() == "1\n"
    (tmp_path / "unreadable").mkdir()  # reading it fails as a read-only or foreign /proc/sys would
    ro = TCPMigrate(tmp_path / "unreadable")
    with caplog.at_level(logging.WARNING):
        assert not ro.ensure("first") and not ro.ensure("second")
    warned = [r.getMessage() for r in caplog.records if "tcp_migrate_req is off" in r.getMessage()]
    assert len(warned) == 1 and "reset instead of moving to the other server" in warned[0], warned
    assert "\n" not in warned[0] and "set it on the node (sysctl -w net.ipv4.tcp_migrate_req=1" in warned[0]
    caplog.clear()
    old = TCPMigrate(tmp_path / "missing-dir" / "tcp_migrate_req")  # a kernel before 5.14
    with caplog.at_level(logging.WARNING):
        assert not old.ensure("first") and not old.ensure("second")
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        "[WARNING] net.ipv4.tcp_migrate_req is not available on this kernel (Linux 5.14+ has it) (first): TCP "
        "connections waiting in a closing listener's queue are reset instead of moving to the other server"
    ]
