"""serve_stale's FAILURE_RECHECK through a real server: the upstream that answered is replaced (same
port) by one that refuses the name, and its own query log counts the refresh attempts."""

from __future__ import annotations

import time
from collections.abc import Callable

import dns.rcode
import pytest

from support.cache_e2e import ZONES, corefile, ttl_of
from support.server import serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
NAME = "web.default.svc.cluster.local."


@pytest.mark.parametrize(("recheck", "refreshes"), [("30s", 1), ("", 3)])
def test_failure_recheck_limits_refreshes_of_a_failing_name(
    make_unbound: MakeUnbound, recheck: str, refreshes: int
) -> None:
    good = make_unbound(ZONES)
    with serve(corefile(f"cache 1 {{\n serve_stale 1h immediate 0 {recheck}\n }}", good)) as s:
        assert ttl_of(s.query(NAME)) == 1
        good.stop()
        refusing = make_unbound({}, port=good.port)  # same address, REFUSED for every name
        time.sleep(1.1)
        for _ in range(3):
            r = s.query(NAME)
            assert r.rcode() == dns.rcode.NOERROR and ttl_of(r) == 0  # the stale answer every time
            time.sleep(0.3)  # the background refresh (if any) lands in the upstream's log
        assert refusing.query_count(NAME) == refreshes
