"""UDP misses stepped by hand (server/direct.py): no Task unless the chain waits on something
other than forward's UDP pool, and then a Task that behaves as one from the start would.

The Driver tests run real coroutines on a real loop; the serve tests run real servers on the
native path (misses from the native workers are the ones stepped by hand) against real unbound
and a real blackholed UDP port.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import dns.message
import dns.query
import pytest

from nodelocaldns import native
from nodelocaldns.core.direct import RUNNING, Resumer, need_task, park
from nodelocaldns.server.direct import Driver
from support.inproc import inproc
from support.ports import free_port
from support.upstreams import UpstreamServer, blackhole_udp

needs_native = pytest.mark.skipif(not native.native_available(), reason=native.native_status())


class Run:
    """One Driver on the running loop, with what a listener gives it."""

    def __init__(self, coro: Any) -> None:
        self.direct: set[Driver] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: list[object] = []
        self.errors: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _l, ctx: self.errors.append(ctx))
        self.driver = Driver(coro, loop, self.direct, self.tasks, self.done.append)


def test_a_parked_coroutine_resumes_in_the_resumer_call_and_never_becomes_a_task() -> None:
    kept: list[Resumer] = []
    out: list[Any] = []

    async def chain() -> None:
        driver = RUNNING.driver
        assert driver is not None
        kept.append(driver)
        out.append(await park())
        kept.append(RUNNING.driver)  # type: ignore[arg-type]

    async def main() -> None:
        r = Run(chain())
        r.driver.start()
        assert r.direct == {r.driver} and not r.tasks and not r.done
        kept[0].resume(b"reply")
        assert out == [b"reply"] and kept[1] is r.driver  # ran inside resume, as that driver
        assert RUNNING.driver is None and not r.direct and not r.tasks and r.done == [r.driver]

    asyncio.run(main())


def test_a_chain_that_awaits_anything_else_goes_on_in_a_task() -> None:
    seen: list[Any] = []

    async def chain() -> None:
        await asyncio.sleep(0.01)  # a plain future: the driver cannot resume this
        seen.append(asyncio.current_task())
        async with asyncio.timeout(1):  # needs a current Task: it has one now
            await asyncio.sleep(0)
        seen.append("end")

    async def main() -> None:
        r = Run(chain())
        r.driver.start()
        assert not r.direct and len(r.tasks) == 1
        (t,) = r.tasks
        await t
        await asyncio.sleep(0)
        assert seen == [t, "end"] and not r.tasks and r.done == [t] and not r.errors

    asyncio.run(main())


def test_need_task_hands_over_before_code_that_needs_a_task() -> None:
    seen: list[Any] = []

    async def chain() -> None:
        await need_task()
        seen.append(asyncio.current_task() is not None)
        async with asyncio.timeout(1):
            seen.append("inside")

    async def main() -> None:
        r = Run(chain())
        r.driver.start()
        assert not r.direct and len(r.tasks) == 1
        await asyncio.gather(*r.tasks)
        assert seen == [True, "inside"] and not r.errors and len(r.done) == 1
        # Under a Task already, need_task() does nothing.
        await chain()
        assert seen[-2:] == [True, "inside"]

    asyncio.run(main())


def test_cancel_raises_where_the_coroutine_parked_and_counts_it_done_once() -> None:
    cleanup: list[str] = []

    async def chain() -> None:
        try:
            await park()
        except asyncio.CancelledError:
            cleanup.append("cancelled")
            raise

    async def main() -> None:
        r = Run(chain())
        r.driver.start()
        r.driver.cancel()
        r.driver.cancel()  # already finished: nothing more happens
        assert cleanup == ["cancelled"] and not r.direct and r.done == [r.driver] and not r.errors

    asyncio.run(main())


def test_an_exception_out_of_the_coroutine_is_logged_as_a_tasks_would_be() -> None:
    async def chain() -> None:
        await park()
        raise ValueError("boom")

    async def main() -> None:
        r = Run(chain())
        r.driver.start()
        r.driver.resume(None)
        assert [type(c["exception"]) for c in r.errors] == [ValueError]
        assert not r.direct and r.done == [r.driver]

    asyncio.run(main())


# -- served: the native workers' misses ----------------------------------------------------------


def _corefile(up: int, extra: str = "") -> str:
    return (
        f".:{{PORT}} {{\n    bind 127.0.0.1\n    errors\n    cache 30\n    prometheus 127.0.0.1:{free_port('tcp')}\n"
        f"    forward . 127.0.0.1:{up} {{\n{extra}    }}\n}}\n"
    )


def _forward(h: Any) -> Any:
    return next(rt for rt in h.lst.router.zones["."].runtimes if rt.name == "forward").forwarders[0]


def _snapshot(h: Any) -> tuple[Any, ...]:
    """The request counts by labels (duration bucket aside), cache misses and requests, forward's
    replies and connection-cache counts."""
    counts: dict[Any, int] = {}
    for k, n in h.lst.stats.counts.items():
        counts[k[:8]] = counts.get(k[:8], 0) + n
    c = h.cache().counters.for_server(h.lst.server)
    fc = _forward(h).counters
    seen = sum(sum(v[:-1]) for v in fc.durations.values())
    conns = sum(fc.conn_hits.values()) + sum(fc.conn_misses.values())
    return counts, c.misses, c.requests, seen, conns


def _zones(n: int, tag: str) -> list[str]:
    return [f"{tag}{i}.direct.test." for i in range(n)]


@needs_native
def test_udp_misses_over_udp_and_over_force_tcp_answer_and_count_as_before(
    make_unbound: Callable[..., UpstreamServer],
) -> None:
    """The same miss, once through the native worker (stepped by hand) and once through the
    chain in a Task (Listener.handle): the same reply and the same counters move the same way."""
    up = make_unbound(
        {"direct.test.": ["direct.test. 300 IN A 198.18.0.9"]}, zone_types={"direct.test.": "redirect"}
    )
    for extra in ("", "        force_tcp\n"):
        with inproc(_corefile(up.port, extra), native=True) as h:
            lst = h.lst
            snapshot = partial(_snapshot, h)
            for name in _zones(5, "u" if not extra else "t"):
                q = dns.message.make_query(name, "A")
                q.id = 0x4242
                wire_q = q.to_wire()
                before = h.call(snapshot)
                got = dns.message.from_wire(h.udp(wire_q))
                mid = h.call(snapshot)
                h.call(lambda: h.cache().store.maps[0].clear())  # a miss again, for the chain in a Task
                slow = dns.message.from_wire(h.slow(wire_q))
                after = h.call(snapshot)
                assert got.id == 0x4242 and [rr.address for rrs in got.answer for rr in rrs] == ["198.18.0.9"]
                assert got.answer == slow.answer and got.rcode() == slow.rcode()
                d1 = {k: v - before[0].get(k, 0) for k, v in mid[0].items() if v != before[0].get(k, 0)}
                d2 = {k: v - mid[0].get(k, 0) for k, v in after[0].items() if v != mid[0].get(k, 0)}
                assert d1 == d2 and len(d1) == 1  # one request each, same labels
                assert mid[1:] == tuple(b + 1 for b in before[1:]) and after[1:] == tuple(
                    m + 1 for m in mid[1:]
                )
            nat = lst.native
            # A plain UDP forward's misses are settled from the worker's exchange without the
            # chain (tests/server/test_serve_exchange.py); force_tcp's take the stepped chain.
            assert nat is not None and nat.n_handed == nat.n_finished == (5 if extra else 0)
            assert not lst.direct and not lst.tasks


@needs_native
def test_shutdown_with_misses_in_flight_cancels_them_and_frees_forward() -> None:
    with blackhole_udp() as hole, inproc(_corefile(hole.port, "        expire 10s\n"), native=True) as h:
        lst = h.lst
        fwd = _forward(h)
        nat = lst.native
        socks = []

        for name in _zones(6, "f"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(dns.message.make_query(name, "A").to_wire(), ("127.0.0.1", h.port))
            socks.append(s)
        deadline = time.monotonic() + 5
        while h.call(lambda: len(lst.direct)) < 6:
            assert time.monotonic() < deadline, "the misses never reached the chain"
            time.sleep(0.01)
        assert h.call(lambda: (fwd.inflight, len(lst.tasks))) == (6, 0)
        h.stop(drain=0.2)  # the upstream never answers: drain gives up, shutdown cancels them
        assert not lst.direct and fwd.inflight == 0
        assert nat is not None and nat.n_handed == nat.n_finished == 6
        for s in socks:
            s.close()
