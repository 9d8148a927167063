import logging
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.pprof import setup

log = logging.getLogger("nodelocaldns")
_warned: list[bool] = []  # one warning per process, however many blocks and reloads


class PprofRuntime(Runtime):
    """Accepted and validated; logs once that Go's profiler is not there (nothing listens)."""

    def start(self, host: Host) -> None:
        if not _warned:
            _warned.append(True)
            log.warning("[WARNING] %s", setup.UNAVAILABLE)


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return PprofRuntime()


PLUGIN = register(Plugin("pprof", setup.parse, _factory, repeatable=not setup.ONCE))
