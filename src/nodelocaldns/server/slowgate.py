"""The slow path's bound for datagrams the event loop reads itself (a peer's sockets, shared_udp.py).

The receive paths (UDPWorker's thread, the native workers) hand the loop only what fits under the
listener's cap (``ServerConfig.slow_path_max``); names the cache holds get a quarter more room,
and past the cap a plain query is answered REFUSED at once (udp.refused_reply), anything else is
dropped, both counted. A datagram read from a peer's socket during a handover takes the same
rule through a ``SlowGate``: it counts what the listener's own receive path already has in
flight, so the peer's clients never push the listener past its cap, and the same metrics
(nodelocaldns_dns_refused_requests_total, nodelocaldns_dns_dropped_requests_total) count it.
"""

from __future__ import annotations

from collections.abc import Callable

from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.server.listener import Listener, Router
from nodelocaldns.server.sides import NativeSide
from nodelocaldns.server.udp import refused_reply, reserve_for

_SUFFIX = fastpath.FLAG_SUFFIX


def holds(router: Router, data: bytes, native: NativeSide | None = None) -> bool:
    """Does the cache hold this question (a miss only because it expired)? The names the
    listener's native index holds are not in the memo (Listener.handle): ``native`` asks it."""
    qend = data.find(0, 12) + 5
    if qend < 17 or len(data) < qend:
        return False
    # fastpath.flagged(fastpath.question_key(...)) inlined: this runs for every handed miss.
    q = data[12 : qend - 4].lower() + data[qend - 4 : qend]
    fl = (1 if data[11] == 1 and len(data) >= qend + 11 and data[qend + 7] & 0x80 else 0) | (
        2 if data[3] & 0x10 else 0
    )
    key = q + _SUFFIX[fl] if fl else q
    memo = router.memo
    if memo:  # empty while the native index holds every cached name
        route = memo.get(q)
        if route is not None and (key in route[0] or key in route[1]):
            return True
    return native is not None and native.holds(key)


class SlowGate:
    """Admission to the slow path for one listener's loop-read datagrams (used on the loop only)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.reserve = reserve_for(cap)
        self.n_handed = 0  # admitted, until their task finished
        self.n_finished = 0
        self.refused = 0  # past the cap: answered REFUSED at once
        self.dropped = 0  # past the cap and not a plain query: no answer

    @property
    def pending(self) -> int:
        return self.n_handed - self.n_finished

    def admit(self, cached: bool, elsewhere: int = 0) -> bool:
        """Room for one more, with ``elsewhere`` queries of the listener in flight from its own
        receive path? Counted as handed when there is (``done`` when it finished)."""
        if self.n_handed - self.n_finished + elsewhere >= (self.cap + self.reserve if cached else self.cap):
            return False
        self.n_handed += 1
        return True

    def done(self, _t: object = None) -> None:
        self.n_finished += 1

    def shed(self, data: bytes, send: Callable[[bytes], None]) -> None:
        """No room: REFUSED at once to a plain query, else dropped; both counted."""
        out = refused_reply(data)
        if out is None:
            self.dropped += 1
            return
        self.refused += 1
        send(out)


def gate_of(lst: Listener) -> SlowGate:
    """The listener's gate for loop-read datagrams, made when the first peer socket is read."""
    gate = lst.shared
    if isinstance(gate, SlowGate):
        return gate
    made = SlowGate(lst.max_pending)
    lst.shared = made
    return made


def in_flight(lst: Listener) -> int:
    """Queries the listener's own receive path has handed to the slow path and not finished."""
    udp = lst.udp
    return 0 if udp is None else udp.n_handed - udp.n_finished
