"""Which blocks' misses the native workers may send upstream themselves (server/native_exchange.py):
the table ``Index.set_forward`` gets, built from real servers' routers (the registry's
``miss_skippable`` flags, forward's own ``native_exchange``), no worker needed."""

from __future__ import annotations

import pytest

from nodelocaldns.dns import wire
from nodelocaldns.plugins.forward import ForwardRuntime
from nodelocaldns.server.listener import Router
from nodelocaldns.server.native_exchange import ExchangeTables, block_exchange
from support.inproc import inproc
from support.ports import free_port

UP1, UP2 = "127.0.0.1:5301", "127.0.0.1:5302"  # never asked: nothing here sends a query


def _block(zone: str, body: str) -> str:
    return f"{zone}:{{PORT}} {{\n    bind 127.0.0.1\n{body}\n}}\n"


def _router(corefile: str) -> Router:
    with inproc(corefile) as h:
        return h.lst.router


def _rows(corefile: str, workers: int = 1) -> dict[str, tuple[list[tuple[str, int]], int]] | None:
    with inproc(corefile) as h:
        t = ExchangeTables()
        table = t.table(h.lst.router, workers)
        if table is None:
            return None
        rows, _timeout, _expire, _pending = table
        return {wire.name_to_text(z): ([(host, port) for _u, host, port in ups], pol) for z, ups, pol in rows}


PLAIN = "    errors\n    cache 30\n    forward . {ups} {{\n        policy {policy}\n    }}\n    prometheus 127.0.0.1:{metrics}\n"


def _plain(ups: str, policy: str) -> str:
    return PLAIN.format(ups=ups, policy=policy, metrics=free_port())


@pytest.mark.parametrize(("policy", "num"), [("random", 0), ("round_robin", 1), ("sequential", 2)])
def test_a_plain_cache_and_forward_block_is_exchanged_with_its_policy(policy: str, num: int) -> None:
    rows = _rows(_block(".", _plain(ups=f"{UP1} {UP2}", policy=policy)))
    assert rows == {".": ([("127.0.0.1", 5301), ("127.0.0.1", 5302)], num)}


@pytest.mark.parametrize(
    "extra",
    ["log", "rewrite name foo.example bar.example", "hosts {\n        fallthrough\n    }", "loadbalance",
     "template IN A example.org {\n        answer \"{{ .Name }} 60 IN A 1.2.3.4\"\n        fallthrough\n    }",
     "dns64", "bufsize 1232", "whoami"],
)  # fmt: skip
def test_a_block_with_a_plugin_that_must_see_the_miss_is_not_exchanged(extra: str) -> None:
    rows = _rows(_block(".", f"    {extra}\n" + _plain(ups=UP1, policy="random")))
    assert rows is None


@pytest.mark.parametrize(
    "fwd",
    [f"forward . {UP1} {{\n        force_tcp\n    }}", f"forward . {UP1} {{\n        except foo.example\n    }}",
     f"forward . {UP1} {{\n        next NXDOMAIN\n    }}", f"forward example.org {UP1}",
     f"forward example.org {UP1}\n    forward . {UP2}"],
)  # fmt: skip
def test_forward_that_is_not_plain_keeps_its_misses(fwd: str) -> None:
    assert _rows(_block(".", f"    cache 30\n    {fwd}\n")) is None


def test_no_cache_no_exchange_and_every_zone_has_a_row() -> None:
    text = _block(".", f"    forward . {UP1}\n") + _block(
        "example.org", f"    cache 30\n    forward . {UP2}\n"
    )
    rows = _rows(text)
    assert rows == {".": ([], 0), "example.org.": ([("127.0.0.1", 5302)], 0)}


def test_a_block_with_several_zones_gets_a_row_for_each_and_a_narrower_forward_only_its_own() -> None:
    text = (
        "a.example:{PORT} b.example:{PORT} {\n    bind 127.0.0.1\n    cache 30\n"
        f"    forward a.example {UP1}\n}}\n"
    )
    rows = _rows(text)
    assert rows == {"a.example.": ([("127.0.0.1", 5301)], 0), "b.example.": ([], 0)}


def test_upstreams_down_are_left_out_and_all_down_means_forwards_own_path() -> None:
    text = _block(".", _plain(ups=f"{UP1} {UP2}", policy="sequential"))
    with inproc(text) as h:
        router = h.lst.router
        fwd = next(rt for rt in router.zones["."].runtimes if isinstance(rt, ForwardRuntime)).forwarders[0]
        t = ExchangeTables()
        first = t.table(router, 1)
        assert first is not None
        uids = [u for u, _h, _p in first[0][0][1]]
        fwd.proxies[0].fails = 3  # past max_fails 2: forward skips it
        table = t.table(router, 1)
        assert table is not None and table[0][0][1] == [(uids[1], "127.0.0.1", 5302)]  # same uid as before
        fwd.proxies[1].fails = 3
        assert t.table(router, 1) is None  # forward's "health checking assumed broken" try is its own
        fwd.proxies[0].fails = 0
        table = t.table(router, 1)
        assert table is not None and table[0][0][1] == [(uids[0], "127.0.0.1", 5301)]
        assert t.keys[uids[0]] is fwd.proxies[0]


def test_max_pending_is_forwards_max_concurrent_split_over_the_workers() -> None:
    text = _block(
        ".",
        f"    cache 30\n    forward . {UP1} {{\n        max_concurrent 300\n        read_timeout 1s\n    }}\n",
    )
    with inproc(text) as h:
        table = ExchangeTables().table(h.lst.router, 3)
        assert table is not None and table[1:] == (1.0, 10.0, 100)


def test_loop_keeps_the_misses_while_it_probes() -> None:
    router = _router(_block(".", "    loop\n" + _plain(ups=UP1, policy="random")))
    block = router.zones["."]
    loop_rt = next(rt for rt in block.runtimes if rt.name == "loop")
    handler = loop_rt.handler  # type: ignore[attr-defined]
    handler.enabled = True
    assert block_exchange(block, ".") is None
    handler.enabled = False  # its probe came back: it never looks at a query again
    ex = block_exchange(block, ".")
    assert ex is not None and [(h, p) for _k, h, p in ex.upstreams] == [("127.0.0.1", 5301)]
