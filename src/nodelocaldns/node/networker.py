"""A second event loop, on its own thread, for the node's network setup (netlink, iptables, nft).

The DNS server runs on uvloop, and pyroute2's ``AsyncIPRoute`` cannot run there: uvloop refuses
its ``AF_NETLINK`` datagram endpoint ("cannot open a UDP handle, invalid family 16"). Rather than
give up uvloop for the hot path, the interface and rule work runs on a stock asyncio loop in a
worker thread. It also keeps the setup's subprocess handling and netlink parsing off the loop that
answers queries. Threads share the process's network namespace, so nothing changes there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class NetWorker:
    """Runs coroutines on a private stock asyncio loop; ``await worker.call(coro)`` from any loop."""

    def __init__(self, name: str = "node-setup") -> None:
        self.loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the worker loop and wait for it without blocking the caller's loop.

        Cancelling the caller cancels ``coro`` too.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel whatever still runs there, stop the loop and join the thread."""
        if not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout)
        except Exception:  # a stuck task must not keep the process from exiting
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
