"""Server phases and hooks, in process, on real loopback sockets.

The node agent relies on exactly this: in the DRAINING hook (where it deletes its rules) the
server still answers, /ready already says 503; in the CLOSED hook the ports are free.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Callable

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from nodelocaldns.errors import CorefileError
from nodelocaldns.server.server import Phase, Server
from nodelocaldns.server.settings import ServerConfig
from support.ports import free_port, is_free
from support.upstreams import CLUSTER_ZONES, UpstreamServer


@pytest.fixture
def cluster_dns(make_unbound: Callable[..., UpstreamServer]) -> UpstreamServer:
    return make_unbound(CLUSTER_ZONES)


def corefile(dns_port: int, http_port: int, upstream: str, lameduck: str = "200ms") -> str:
    return (
        f".:{dns_port} {{\n    bind 127.0.0.1\n    health 127.0.0.1:{http_port} {{\n        lameduck {lameduck}\n"
        f"    }}\n    ready 127.0.0.1:{http_port}\n    forward . {upstream}\n}}\n"
    )


def _ready(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status
    finally:
        conn.close()


def _answers(port: int) -> bool:
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    try:
        reply = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
    except dns.exception.Timeout:
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def test_phases_in_order_with_hooks_between(cluster_dns: UpstreamServer) -> None:
    dns_port, http_port = free_port(), free_port("tcp")
    seen: list[tuple[Phase, int | None, bool]] = []

    async def main() -> None:
        server = Server(corefile(dns_port, http_port, cluster_dns.address), config=ServerConfig(drain=1.0))

        def hook(phase: Phase) -> None:
            async def run() -> None:
                if phase in (Phase.STARTING, Phase.CLOSED):
                    seen.append((phase, None, await asyncio.to_thread(_answers, dns_port)))
                    return
                status = await asyncio.to_thread(_ready, http_port)
                seen.append((phase, status, await asyncio.to_thread(_answers, dns_port)))

            server.add_hook(phase, run)

        for phase in (Phase.STARTING, Phase.SERVING, Phase.LAMEDUCK, Phase.DRAINING, Phase.CLOSED):
            hook(phase)

        async def broken() -> None:
            raise RuntimeError("a hook with a bug")

        server.add_hook(Phase.DRAINING, broken)
        assert server.phase is Phase.NEW
        await server.start()
        assert server.phase is Phase.SERVING
        await server.shutdown()
        assert server.phase is Phase.CLOSED

    asyncio.run(main())
    assert seen == [
        (Phase.STARTING, None, False),  # nothing bound yet
        (Phase.SERVING, 200, True),
        (Phase.LAMEDUCK, 503, True),  # not ready, still answering
        (Phase.DRAINING, 503, True),  # the agent's rules go here: the port still answers
        (Phase.CLOSED, None, False),
    ]
    assert is_free(dns_port)
    with pytest.raises(ConnectionRefusedError):  # (a bind test would trip over TIME_WAIT)
        socket.create_connection(("127.0.0.1", http_port), timeout=2).close()


@pytest.mark.parametrize("held", ["http", "dns"])
def test_a_failed_start_closes_everything_and_raises(cluster_dns: UpstreamServer, held: str) -> None:
    dns_port, http_port = free_port(), free_port("tcp")

    async def main() -> Phase:
        # Another server holds one of the ports. HTTP binds first: with its port held nothing DNS
        # opens; with the DNS port held, the HTTP listener already up must be closed again.
        taken = http_port if held == "http" else dns_port
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", taken)
        server = Server(corefile(dns_port, http_port, cluster_dns.address))
        try:
            with pytest.raises(OSError):
                await server.start()
        finally:
            blocker.close()
            await blocker.wait_closed()
        return server.phase

    assert asyncio.run(main()) is Phase.CLOSED
    assert is_free(dns_port, "udp")
    if held == "dns":
        with pytest.raises(ConnectionRefusedError):  # (a bind test would trip over TIME_WAIT)
            socket.create_connection(("127.0.0.1", http_port), timeout=2).close()


def test_prepare_checks_without_touching_what_serves_then_commit_switches(
    cluster_dns: UpstreamServer,
) -> None:
    dns_port, http_port, second = free_port(), free_port("tcp"), free_port()
    text = corefile(dns_port, http_port, cluster_dns.address)

    async def main() -> None:
        server = Server(text)
        await server.start()
        try:
            served = server.gen
            with pytest.raises(CorefileError):
                await server.prepare(text + "nonsense {\n")
            assert server.gen is served and server.text == text

            same = await server.prepare(text + "# a comment only\n")
            assert same.generation is None  # same Corefile: nothing to rebuild

            bigger = text + f".:{second} {{\n    bind 127.0.0.1\n    forward . {cluster_dns.address}\n}}\n"
            prepared = await server.prepare(bigger)
            assert prepared.generation is not None and server.gen is served
            assert is_free(second)  # prepare binds nothing
            assert not await server.reload(bigger, before_commit=lambda: False)  # abandoned
            assert server.gen is served and is_free(second)
            await server.commit(prepared)
            assert server.gen is prepared.generation and server.text == bigger
            assert await asyncio.to_thread(_answers, second)
            assert await asyncio.to_thread(_answers, dns_port)  # the old listener kept serving
        finally:
            await server.shutdown(lameduck=False, drain=0.0)

    asyncio.run(main())
