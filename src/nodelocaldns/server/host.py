"""The server as plugins see it: ``core.plugin.Host`` implemented over a running Instance."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

from nodelocaldns.core.plugin import ListenerView


class ServerHost:
    """Readiness, the reload trigger, fatal exit, background tasks and the metrics view."""

    def __init__(self, inst: Any) -> None:  # server.instance.Instance (which imports this module)
        self._inst = inst

    def clock(self) -> float:
        return float(self._inst.clock())

    def readiness(self) -> str | None:
        inst = self._inst
        if inst.shutting_down:
            return "Shutting down"
        if not inst.ready:
            return "starting"
        for check in inst.extra_ready_checks:
            why = check()
            if why:
                return str(why)
        return None

    async def reload(self) -> bool:
        return bool(await self._inst.reload())

    def reload_status(self) -> tuple[int, str]:
        st = self._inst.reload_state
        return int(st.failed), str(st.hash)

    def fatal(self, message: str) -> None:
        self._inst._fatal_loop(message)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._inst._spawn(coro)

    @property
    def stopping(self) -> bool:
        return bool(self._inst.shutting_down)

    def dns_listeners(self) -> Sequence[ListenerView]:
        return list(self._inst.listeners.values())

    def exchange_changed(self) -> None:
        self._inst._exchange_changed()

    def extra_metrics(self) -> list[Any]:
        return [f for collect in getattr(self._inst, "extra_collectors", ()) for f in collect()]
