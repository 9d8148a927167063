"""``multisocket [NUM_SOCKETS]``: UDP sockets per listener address, each with its own worker.

The sockets share the address with SO_REUSEPORT and the kernel spreads queries over them; each is
served by a native worker thread (server/native_udp.py). Without the native extension the Python
UDP path keeps one socket: a second Python thread would only wait for the GIL.
"""

from __future__ import annotations

from typing import Any

from nodelocaldns.core.cpus import usable_cpus
from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.multisocket import setup


class MultisocketRuntime(Runtime):
    def __init__(self, n: int) -> None:
        self.num_sockets = n


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    n = cfgs[0]
    if n is None:
        n = usable_cpus()
    return MultisocketRuntime(n)


# miss_skippable: how many sockets, not what they answer.
PLUGIN = register(Plugin("multisocket", setup.parse, _factory, miss_skippable=True))
