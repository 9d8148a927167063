"""The ``rewrite`` plugin: rewrites queries before the rest of the chain and reverts their replies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Plugin, Runtime, register

if TYPE_CHECKING:
    from nodelocaldns.corefile.model import Directive

# setup and handler (the rule engine and its message codec, ~1.3 MiB) load with the first
# Corefile that says ``rewrite``: a server without one never pays for them.


def _parse(d: Directive) -> Any:
    from nodelocaldns.plugins.rewrite import setup

    return setup.parse(d)


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    from nodelocaldns.plugins.rewrite import handler, setup

    return Handlers(handler.RewriteHandler(setup.RewriteConfig(tuple(cfgs))))


# After cache: the cache stores the reverted reply, so a hit needs nothing from rewrite.
PLUGIN = register(Plugin("rewrite", _parse, _factory, repeatable=True))
