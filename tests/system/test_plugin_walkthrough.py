"""docs/ARCHITECTURE.md "How to add a plugin", done for real: a directive is its own folder plus one line.

The test writes a throwaway plugin package into a temp dir (``setup.py`` parse with file:line errors,
a handler, ``PLUGIN = register(Plugin(...))`` in ``__init__.py``), registers it through
``plugins.load(module)`` (the same import-to-register path as the ``PLUGINS`` line) and serves
queries through it in process against a real unbound upstream. Nothing in ``src/`` is edited.

The directive name is a CoreDNS plugin.cfg entry that nodelocaldns does not implement (core/order.py
gives every CoreDNS directive its chain position), picked between ``log`` and ``cache`` so that the
plugin runs before the cache: whether a cached answer may skip it is then the registry's
``fast_path_safe`` flag alone.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest

from nodelocaldns import plugins
from nodelocaldns.core import plugin as registry
from nodelocaldns.core.order import PLUGIN_CFG, POSITION
from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import CorefileError
from nodelocaldns.server.config import plan
from support.inproc import inproc, query
from support.upstreams import UpstreamServer

plugins.load()
_between = PLUGIN_CFG[POSITION["log"] + 1 : POSITION["cache"]]
NAME = next(n for n in _between if registry.lookup(n) is None)

SETUP = '''
"""Parse ``NAME ZONE``: one argument, no block."""
from nodelocaldns.corefile.model import Directive


def parse(d: Directive) -> str:
    if len(d.args) != 1 or d.block:
        raise d.error("NAME takes exactly one zone")
    return d.args[0].lower().rstrip(".") + "."
'''

INIT = '''
"""``NAME ZONE``: answer TXT "walkthrough" under ZONE, pass everything else on; count what it saw."""
from typing import Any

import dns.message
import dns.rrset

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Next, Plugin, Runtime, register
from nodelocaldns.core.request import Reply, Request

from . import setup

SEEN: list[str] = []  # every qname this plugin's handler ran for


class Handler:
    name = "NAME"

    def __init__(self, zone: str) -> None:
        self.zone = zone

    async def serve(self, req: Request, next_: Next) -> Reply:
        SEEN.append(req.qname)
        if req.qname != self.zone and not req.qname.endswith("." + self.zone):
            return await next_(req)
        q = dns.message.from_wire(req.data)
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 0, "IN", "TXT", '"walkthrough"'))
        return Reply(r.to_wire(), 0, "NAME")


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return Handlers(Handler(cfgs[0]))


PLUGIN = register(Plugin("NAME", setup.parse, _factory, fast_path_safe=FAST_PATH_SAFE))
'''

_modules = itertools.count()


@pytest.fixture(params=[False, True], ids=["unsafe", "safe"])
def walk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The plugin's folder written, put on sys.path and loaded; unregistered again afterwards."""
    module = f"walkthrough_{NAME}_{next(_modules)}"
    folder = tmp_path / module
    folder.mkdir()
    (folder / "setup.py").write_text(textwrap.dedent(SETUP).replace("NAME", NAME))
    init = INIT.replace("NAME", NAME).replace("FAST_PATH_SAFE", str(request.param))
    (folder / "__init__.py").write_text(textwrap.dedent(init))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.lookup(NAME) is None
    try:
        plugins.load(module)
        yield importlib.import_module(module)
    finally:
        registry.unregister(NAME)
        monkeypatch.delitem(sys.modules, module, raising=False)
        monkeypatch.delitem(sys.modules, f"{module}.setup", raising=False)


def test_the_new_directive_is_registered_at_its_plugin_cfg_place(walk: object) -> None:
    p = registry.lookup(NAME)
    assert p is not None and p is walk.PLUGIN
    order = [q.name for q in registry.registered()]
    assert order.index("log") < order.index(NAME) < order.index("cache")


def test_a_bad_directive_names_file_and_line(walk: object) -> None:
    text = f".:53 {{\n    cache 30\n    {NAME} a.test b.test\n}}\n"
    with pytest.raises(CorefileError) as e:
        plan(parse_corefile(text, "walk.Corefile"))
    assert str(e.value).startswith("walk.Corefile:3") and f"{NAME} takes exactly one zone" in str(e.value)
    assert plan(parse_corefile(text.replace(" b.test", ""), "walk.Corefile")).blocks[0].configs[NAME] == [
        "a.test."
    ]


def test_queries_go_through_the_new_plugin_and_the_registry_flag_decides_the_fast_path(
    walk: object, unbound_upstream: UpstreamServer
) -> None:
    # Written after forward on purpose: the chain follows plugin.cfg, not the Corefile.
    corefile = (
        ".:{PORT} {\n    bind 127.0.0.1\n    cache 30\n"
        f"    forward . {unbound_upstream.address}\n    {NAME} walk.test\n}}\n"
    )
    seen: list[str] = walk.SEEN
    with inproc(corefile) as h:
        for transport in (h.udp, h.tcp):
            r = dns.message.from_wire(transport(query("Hello.Walk.Test.", 16)))
            assert [rs.to_text() for rs in r.answer] == ['Hello.Walk.Test. 0 IN TXT "walkthrough"']
        assert seen == ["hello.walk.test."] * 2

        name = "kubernetes.default.svc.cluster.local."
        # The upstream fixture is shared with other tests: count only what this test sends.
        before = sum(1 for q in unbound_upstream.queries() if q.name == name)
        first = dns.message.from_wire(h.udp(query(name, 1)))
        assert [rd.to_text() for rd in first.answer[0]] == ["198.18.0.1"]
        for _ in range(3):  # cache hits over UDP and TCP
            assert dns.message.from_wire(h.udp(query(name, 1))).answer == first.answer
            assert dns.message.from_wire(h.tcp(query(name, 1))).answer == first.answer
        upstream_saw = sum(1 for q in unbound_upstream.queries() if q.name == name) - before
        assert upstream_saw == 1  # the other six were cache hits
        ran = seen.count(name)
        if walk.PLUGIN.fast_path_safe:
            assert ran == 1  # only the miss reached the chain: hits were sent without running it
        else:
            assert ran == 7  # never skipped: every hit went through the plugin first
