"""pytest fixtures over :mod:`support.upstreams`.

Enable them for the whole suite from ``tests/conftest.py`` with::

    pytest_plugins = ["support.fixtures"]

Every fixture is function-scoped and stops what it started at teardown, even when the test fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .upstreams import (
    CLUSTER_ZONES,
    Blackhole,
    SlowProxy,
    TcpBlackhole,
    UpstreamServer,
    blackhole_udp,
    dnsmasq_server,
    slow_proxy,
    tcp_blackhole,
    unbound_server,
)


@pytest.fixture
def unbound_upstream() -> Iterator[UpstreamServer]:
    """unbound on loopback serving :data:`~support.upstreams.CLUSTER_ZONES`, counting queries."""
    with unbound_server(CLUSTER_ZONES) as server:
        yield server


@pytest.fixture
def make_unbound() -> Iterator[Callable[..., UpstreamServer]]:
    """Factory: ``make_unbound(zones=..., udp=False, ...)`` takes ``unbound_server`` arguments."""
    with contextlib.ExitStack() as stack:

        def make(*args: Any, **kwargs: Any) -> UpstreamServer:
            return stack.enter_context(unbound_server(*args, **kwargs))

        yield make


@pytest.fixture
def make_dnsmasq() -> Iterator[Callable[..., UpstreamServer]]:
    """Factory: ``make_dnsmasq([(name, type, value), ...], ...)`` takes ``dnsmasq_server`` arguments."""
    with contextlib.ExitStack() as stack:

        def make(*args: Any, **kwargs: Any) -> UpstreamServer:
            return stack.enter_context(dnsmasq_server(*args, **kwargs))

        yield make


@pytest.fixture
def udp_blackhole() -> Iterator[Blackhole]:
    """A UDP port that never answers (counts what it swallowed in ``.received``)."""
    with blackhole_udp() as hole:
        yield hole


@pytest.fixture
def tcp_hold() -> Iterator[TcpBlackhole]:
    """A TCP port that accepts and never replies."""
    with tcp_blackhole("hold") as hole:
        yield hole


@pytest.fixture
def tcp_close() -> Iterator[TcpBlackhole]:
    """A TCP port that accepts and closes at once."""
    with tcp_blackhole("close") as hole:
        yield hole


@pytest.fixture
def make_slow_proxy() -> Iterator[Callable[..., SlowProxy]]:
    """Factory: ``make_slow_proxy(upstream, delay_s)`` puts a delaying UDP+TCP relay in front."""
    with contextlib.ExitStack() as stack:

        def make(upstream: Any, delay_s: float) -> SlowProxy:
            return stack.enter_context(slow_proxy(upstream, delay_s))

        yield make
