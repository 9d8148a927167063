from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.core.timeouts import TimeoutsConfig
from nodelocaldns.plugins.timeouts import setup


class TimeoutsRuntime(Runtime):
    """No query-path part: the listeners this block is served on read ``listener_timeouts``."""

    def __init__(self, cfgs: list[TimeoutsConfig]) -> None:
        # Several ``timeouts`` lines in one block apply in order, as CoreDNS's loop over them does.
        self.listener_timeouts = tuple(cfgs)


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return TimeoutsRuntime(cfgs)


# miss_skippable: TCP connection limits only.
PLUGIN = register(Plugin("timeouts", setup.parse, _factory, repeatable=not setup.ONCE, miss_skippable=True))
