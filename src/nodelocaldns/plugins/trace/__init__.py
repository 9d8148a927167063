import logging
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.trace import setup

log = logging.getLogger("nodelocaldns")
_warned: list[bool] = []  # one warning per process, however many blocks and reloads


class TraceRuntime(Runtime):
    """Accepted and validated; logs once that OpenTracing is not there."""

    def start(self, host: Host) -> None:
        if not _warned:
            _warned.append(True)
            log.warning("[WARNING] %s", setup.UNAVAILABLE)


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return TraceRuntime()


PLUGIN = register(Plugin("trace", setup.parse, _factory, repeatable=not setup.ONCE))
