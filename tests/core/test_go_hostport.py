"""host:port in its three shapes: Go's SplitHostPort, Go listen addresses, CoreDNS plugin addresses."""

from __future__ import annotations

import pytest

from nodelocaldns.core.hostport import listen_address, parse_port, split_hostport


@pytest.mark.parametrize(
    ("addr", "want"),
    [
        ("0.0.0.0:9353", ("0.0.0.0", 9353)),
        ("[::]:9353", (None, 9353)),
        (":9353", (None, 9353)),
        ("[::1]:9354", ("::1", 9354)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_address(addr: str, want: tuple[str | None, int]) -> None:
    assert listen_address(addr) == want


@pytest.mark.parametrize(
    ("addr", "why"),
    [("9353", "host:port"), ("::1:9353", "brackets"), ("host:port", "host:port"), ("[::1]", "host:port")],
)
def test_listen_address_rejects(addr: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        listen_address(addr)


@pytest.mark.parametrize(
    ("addr", "want"),
    [
        (":8080", ("", 8080)),
        ("127.0.0.1:9253", ("127.0.0.1", 9253)),
        ("[::1]:8181", ("::1", 8181)),
        ("[::1]", ("::1", 8080)),
        ("::1", ("::1", 8080)),
        ("localhost", ("localhost", 8080)),
    ],
)
def test_plugin_address_with_default_port(addr: str, want: tuple[str, int]) -> None:
    assert split_hostport(addr, 8080) == want


def test_ports() -> None:
    assert parse_port("53") == 53
    assert parse_port("0", allow_zero=True) == 0
    for bad in ("0", "65536", "http", "-1", "\u0665"):
        with pytest.raises(ValueError):
            parse_port(bad)
