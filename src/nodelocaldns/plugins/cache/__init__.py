from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.cache import handler, metrics, setup


class CacheRuntime(Runtime):
    def __init__(self, host: Host, block: BlockInfo, cfg: setup.CacheConfig) -> None:
        self.cache = handler.CacheHandler(cfg, block.zones, host.clock)
        self.handlers = (self.cache,)
        self.fast_path = self.cache
        # Prefetch counts every hit, so with it on no hit may bypass the handler.
        self.fast_path_safe = cfg.prefetch_amount == 0


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return CacheRuntime(host, block, cfgs[0])


PLUGIN = register(Plugin("cache", setup.parse, _factory, collector=metrics.collect))
