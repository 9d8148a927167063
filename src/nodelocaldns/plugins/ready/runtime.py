"""The ready plugin at runtime: ``/ready`` answers from the server's readiness (Host.readiness)."""

from __future__ import annotations

from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Route, Runtime
from nodelocaldns.plugins.ready.plugin import ReadyConfig

_TEXT = "text/plain; charset=utf-8"


class ReadyRuntime(Runtime):
    def __init__(self, host: Host, cfg: ReadyConfig) -> None:
        async def ready() -> tuple[int, str, bytes]:
            why = host.readiness()
            if why is not None:
                return 503, _TEXT, why.encode()
            return 200, _TEXT, b"OK"

        self.routes = (Route(cfg.addr, 8181, "/ready", ready),)


def factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return ReadyRuntime(host, cfgs[0])
