"""A query's chain without an asyncio Task: the coroutine is stepped by hand.

The server (server/direct.py) may run a chain's coroutine itself instead of wrapping it in a Task:
a Task per UDP miss cost a creation, a scheduled first step, a scheduled wake-up per reply and
two done callbacks. While it steps the coroutine, ``RUNNING.driver`` is that driver. Code in the chain
that waits for an event it resolves itself (forward's UDP pool: the reply comes to its reader
callback) may then ``await park()`` after keeping the driver, and later call ``resume(value)`` or
``fail(exc)`` on it: the coroutine goes on right there, inside the callback.

Anything else the chain awaits (a future, a sleep, a lock, a TCP stream) moves the coroutine,
as it is, into a Task (the driver's hand-off), so every other await behaves exactly as before.
Code that needs a current Task before its first wait (``asyncio.timeout``) calls ``await
need_task()`` first: under a driver that is the hand-off, under a Task it does nothing.
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Generator
from typing import Any, Protocol


class Resumer(Protocol):
    """The driver of a parked coroutine: called once, with the value ``park()`` returns, or the
    exception it raises."""

    loop: asyncio.AbstractEventLoop  # the loop it steps on: another thread's loop has its own

    def resume(self, value: Any) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class _Running(threading.local):
    """The driver stepping a coroutine right now in this thread, if any (an event loop per thread:
    one thread's driver is never another's, whatever the GIL interleaves)."""

    driver: Resumer | None = None


RUNNING = _Running()
PARK = object()  # yielded by park(): the driver returns; whoever kept it resumes it
NEED_TASK = object()  # yielded by need_task(): the driver hands the coroutine to a Task at once


def driving(loop: asyncio.AbstractEventLoop) -> Resumer | None:
    """The driver stepping the calling coroutine on ``loop``, or None (a Task runs it)."""
    d = RUNNING.driver
    return d if d is not None and d.loop is loop else None


@types.coroutine
def park() -> Generator[Any, Any, Any]:
    """Suspend until the kept driver's ``resume(value)`` (returns value) or ``fail(exc)``."""
    return (yield PARK)


@types.coroutine
def need_task() -> Generator[Any, Any, None]:
    """Make sure a Task runs this coroutine from here on."""
    d = RUNNING.driver
    if d is not None and d.loop is asyncio.get_running_loop():
        yield NEED_TASK
