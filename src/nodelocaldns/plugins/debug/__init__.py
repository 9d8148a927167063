import logging
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.debug import setup

_LOGGER = logging.getLogger("nodelocaldns")


class DebugRuntime(Runtime):
    """``[DEBUG]`` lines on while a block with ``debug`` runs (process-wide, as CoreDNS's ``log.D``).

    There is no panic-recovery switch to flip: a Python exception in a plugin is caught per query
    (SERVFAIL and a log line) with or without ``debug``.
    """

    def start(self, host: Host) -> None:
        _LOGGER.setLevel(logging.DEBUG)

    def close(self) -> None:
        # A reload closes the old blocks before it starts the new ones, so a kept ``debug`` stays on.
        _LOGGER.setLevel(logging.NOTSET)


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return DebugRuntime()


# miss_skippable: it changes what is logged, never a query or its answer.
PLUGIN = register(Plugin("debug", setup.parse, _factory, repeatable=not setup.ONCE, miss_skippable=True))
