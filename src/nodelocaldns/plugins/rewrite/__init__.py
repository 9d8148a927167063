"""The ``rewrite`` plugin: rewrites queries before the rest of the chain and reverts their replies."""

from __future__ import annotations

from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Plugin, Runtime, register
from nodelocaldns.plugins.rewrite import handler, setup


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return Handlers(handler.RewriteHandler(setup.RewriteConfig(tuple(cfgs))))


# After cache: the cache stores the reverted reply, so a hit needs nothing from rewrite.
PLUGIN = register(Plugin("rewrite", setup.parse, _factory, repeatable=True))
