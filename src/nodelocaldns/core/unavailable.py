"""The runtime of a directive that is accepted and validated but has nothing to run here.

pprof and trace are Go-runtime tools: a Corefile that has them must keep working, so they parse
in full and then log, once per process however many blocks and reloads carry them, that they are
not available.
"""

import logging
from collections.abc import Callable
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Runtime

log = logging.getLogger("nodelocaldns")
_warned: set[str] = set()


class UnavailableRuntime(Runtime):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message

    def start(self, host: Host) -> None:
        if self.name not in _warned:
            _warned.add(self.name)
            log.warning("[WARNING] %s", self.message)


def factory(name: str, message: str) -> Callable[[Host, BlockInfo, list[Any]], Runtime]:
    """A plugin factory whose runtime only warns that ``name`` is not available."""

    def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
        return UnavailableRuntime(name, message)

    return _factory
