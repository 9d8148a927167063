"""Doctor's HTTP findings when nothing answers: one line, the socket's reason in words, what to check.

Real sockets: a bound port nothing listens on (refused), a listener that never accepts (timed out),
and a namespace of the test's own with no route to the address (network unreachable).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from nodelocaldns.tools.doctor_probe import http_probe
from nodelocaldns.tools.doctor_serving import check_http
from support.netns import netns, netns_available, run_in_netns


@pytest.fixture
def tcp_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock
    finally:
        sock.close()


def finding(url: str, timeout: float = 2.0) -> str:
    check = check_http("health", "/health", http_probe(url, timeout), explicit=True, expect_body="OK")
    assert check.status == "fail"
    assert "\n" not in check.detail and "Errno" not in check.detail, check.detail
    return check.detail


def test_refused_says_so_and_asks_whether_the_agent_listens(tcp_socket: socket.socket) -> None:
    # Bound but not listening: the port stays ours and every SYN is answered with a reset.
    addr = f"127.0.0.1:{tcp_socket.getsockname()[1]}"
    assert finding(f"http://{addr}/health") == (
        f"http://{addr}/health: connection refused: is the agent running and listening on {addr}?"
    )


def test_a_listener_that_never_answers_is_a_timeout(tcp_socket: socket.socket) -> None:
    tcp_socket.listen(1)  # the kernel completes the handshake; nobody accepts or answers
    addr = f"127.0.0.1:{tcp_socket.getsockname()[1]}"
    assert finding(f"http://{addr}/health", timeout=0.3) == (
        f"http://{addr}/health: timed out: no answer from {addr} in time: is the agent stuck, or a "
        "firewall dropping packets?"
    )


def test_a_port_that_answers_something_else_than_http_is_a_finding(tcp_socket: socket.socket) -> None:
    # Another service on the port (a DNS-over-TCP listener, say): bytes come back, but no status line.
    tcp_socket.listen(1)
    tcp_socket.settimeout(5)

    def answer() -> None:
        conn, _ = tcp_socket.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"\x00\x0c not a status line\r\n\r\n")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    addr = f"127.0.0.1:{tcp_socket.getsockname()[1]}"
    detail = finding(f"http://{addr}/health")
    t.join(5)
    assert detail.startswith(f"http://{addr}/health: not an HTTP answer ("), detail
    assert "is another service on that port?" in detail


@pytest.mark.root
@pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`")
def test_no_route_to_the_address_is_network_unreachable() -> None:
    # Only lo in the namespace: the link-local address has no route, as after node-cache's teardown.
    url = "http://169.254.20.10:8080/health"
    with netns("nlddochttp") as ns:
        detail = run_in_netns(ns, lambda: finding(url))
    assert detail == (
        f"{url}: network is unreachable: is 169.254.20.10 on the node's interface, with a route to it? "
        "(see interface and local-routes)"
    )
