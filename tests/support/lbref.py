"""loadbalance's reference, replayed: the draws under which it sends a given order.

The native index shuffles with its own random numbers, so its reply cannot be compared with the
reference's for the same draws. Instead: read the order the native reply has, work out the uint16
draws that make ``plugins/loadbalance`` (CoreDNS roundRobin: sections in order, in each the
addresses then the MX, two records swap on an even draw, more take a Fisher-Yates walk) produce
that order, run the real transform with those draws and compare bytes. A reply no draws explain
(a record missing or doubled, a CNAME or other record moved) has no draws.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from hypothesis import event

from nodelocaldns.dns.message import RR, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_MX, decode
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.loadbalance.runtime import LoadBalanceRuntime
from support.inproc import Harness
from support.taught import taught


def _walk(orig: list[RR], target: list[RR]) -> list[int] | None:
    """The draws shuffle_in_place needs to turn ``orig`` into ``target``."""
    n = len(orig)
    if n <= 1:
        return [] if orig == target else None
    if n == 2:
        if target == orig:
            return [1]
        return [0] if target == [orig[1], orig[0]] else None
    recs = list(orig)
    draws = []
    for j in range(n):
        p = next((i for i in range(j, n) if recs[i] == target[j]), None)
        if p is None:
            return None
        draws.append(p - j)
        recs[j], recs[p] = recs[p], recs[j]
    return draws


def _section(orig: list[RR], got: list[RR]) -> list[int] | None:
    if len(orig) != len(got):
        return None
    if len(orig) <= 1:
        return [] if orig == got else None
    first = orig[0].rtype
    if first in (TYPE_A, TYPE_AAAA) and all(r.rtype == first for r in orig):
        return _walk(orig, got)
    cname = [r for r in orig if r.rtype == TYPE_CNAME]
    addr = [r for r in orig if r.rtype in (TYPE_A, TYPE_AAAA)]
    mx = [r for r in orig if r.rtype == TYPE_MX]
    rest = [r for r in orig if r.rtype not in (TYPE_CNAME, TYPE_A, TYPE_AAAA, TYPE_MX)]
    fixed = cname + rest
    if got[: len(fixed)] != fixed:
        return None
    a = _walk(addr, got[len(fixed) : len(fixed) + len(addr)])
    m = _walk(mx, got[len(fixed) + len(addr) :])
    return None if a is None or m is None else a + m


def draws_for(plain: bytes, shuffled: bytes) -> list[int] | None:
    """Draws that make the reference turn ``plain`` into ``shuffled``'s record order, or None."""
    a, b = decode(plain), decode(shuffled)
    draws: list[int] = []
    for sa, sb in ((a.answer, b.answer), (a.authority, b.authority), (a.additional, b.additional)):
        d = _section(sa, sb)
        if d is None:
            return None
        draws += d
    return draws


def replay(rt: LoadBalanceRuntime, plain: bytes, draws: list[int]) -> bytes:
    """The reference's reply to ``plain`` when its random numbers are ``draws``. It may use fewer
    (it leaves a reply that is not NOERROR alone, for one); too few raise StopIteration."""
    saved = rt.rng
    rt.rng = iter(draws).__next__
    try:
        return rt.transform(plain)
    finally:
        rt.rng = saved


def reference_could_send(rt: LoadBalanceRuntime, plain: bytes, shuffled: bytes) -> bool:
    """Is ``shuffled`` byte for byte what the reference sends for ``plain`` under some draws?"""
    draws = draws_for(plain, shuffled)
    return draws is not None and replay(rt, plain, draws) == shuffled


# -- a whole server with loadbalance (tests/plugins/cache/test_fastpath_differential.py) -----------


class ReplayRng:
    """A uint16 stream the test restarts before each path, so all three see the same draws."""

    def __init__(self) -> None:
        self.draws: Iterator[int] = iter(())
        self.restart(0)

    def restart(self, seed: int) -> None:
        gen = random.Random(seed)
        self.draws = iter(lambda: gen.getrandbits(16), None)

    def script(self, draws: list[int]) -> None:
        """Exactly these draws (read back from a native reply)."""
        self.draws = iter(draws)

    def __call__(self) -> int:
        return next(self.draws)


def lb_runtime(env: Harness) -> LoadBalanceRuntime:
    (lb,) = [rt for rt in env.lst.router.zones["."].runtimes if isinstance(rt, LoadBalanceRuntime)]
    return lb


def unshuffled(env: Harness, data: bytes, tcp: bool) -> bytes | None:
    """The Python fast path's hit before loadbalance: what the reference shuffles."""
    memo = {k: (*r[:4], None, r[5]) for k, r in taught(env).items()}
    hit = fastpath.answer(data, env.clock(), memo, tcp)
    return None if hit is None else hit[0]


def check_native_shuffle(
    env: Harness, rng: ReplayRng, data: bytes, nat: bytes, got: bytes, tcp: bool
) -> None:
    """A native hit in a loadbalance block (``nat`` from the index, ``got`` what the server sent):
    replies the reference could send, and the chain's reply under the draws ``got``'s order needs."""
    event("native shuffle tcp" if tcp else "native shuffle udp")
    plain = unshuffled(env, data, tcp)
    assert plain is not None
    lb = lb_runtime(env)
    for reply in (nat, got):
        assert reference_could_send(lb, plain, reply), (plain.hex(), reply.hex())
    draws = draws_for(plain, got)
    assert draws is not None
    rng.script(draws)
    assert env.slow(data, "tcp" if tcp else "udp") == got
