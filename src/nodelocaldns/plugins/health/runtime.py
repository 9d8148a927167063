"""The health plugin at runtime: ``/health`` is 200 OK while the process runs; lameduck delays exit."""

from __future__ import annotations

from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Route, Runtime
from nodelocaldns.plugins.health.plugin import HealthConfig


async def _ok() -> tuple[int, str, bytes]:
    return 200, "text/plain; charset=utf-8", b"OK"


class HealthRuntime(Runtime):
    def __init__(self, cfg: HealthConfig) -> None:
        self.routes = (Route(cfg.addr, 8080, "/health", _ok),)
        self.lameduck = cfg.lameduck


def factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return HealthRuntime(cfgs[0])
