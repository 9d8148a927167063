"""Step a query's coroutine by hand (core/direct.py): no Task for a UDP miss that only waits on
forward's UDP pool.

``Driver.start`` runs the coroutine up to its first wait. A ``park()`` there means forward kept the
driver and will ``resume``/``fail`` it from its reader callback or its deadline timer; anything else
the coroutine yields is handed, with the coroutine as it is, to a Task (``_proxy``), which from then
on runs it exactly as if it had been a Task from the start. The listener keeps its drivers in
``Listener.direct`` (and the Tasks they became in ``Listener.tasks``): drain() waits for both through
the UDP side's handed/finished counts, and a shutdown cancels what is left of either.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

from nodelocaldns.core.direct import NEED_TASK, PARK, RUNNING


class Driver:
    """One query's coroutine, stepped by hand until it ends or becomes a Task."""

    __slots__ = ("coro", "loop", "direct", "tasks", "done")

    def __init__(
        self,
        coro: Coroutine[Any, Any, None],
        loop: asyncio.AbstractEventLoop,
        direct: set[Driver],
        tasks: set[asyncio.Task[None]],
        done: Callable[[object], None] | None,
    ) -> None:
        self.coro = coro
        self.loop = loop
        self.direct = direct  # the listener's drivers in flight
        self.tasks = tasks  # the listener's Tasks, which a handed-off query joins
        self.done = done

    def start(self) -> None:
        self.direct.add(self)
        self._step(None, None)

    def resume(self, value: Any) -> None:
        self._step(value, None)

    def fail(self, exc: BaseException) -> None:
        self._step(None, exc)

    def _step(self, value: Any, exc: BaseException | None) -> None:
        running = RUNNING
        prev = running.driver
        running.driver = self
        try:
            y = self.coro.send(value) if exc is None else self.coro.throw(exc)
        except StopIteration:
            self._finish()
            return
        except asyncio.CancelledError:
            self._finish()
            return
        except (KeyboardInterrupt, SystemExit):
            self._finish()
            raise
        except BaseException as e:  # what a Task would keep as its exception: logged, as a Task's is
            self._finish()
            self.loop.call_exception_handler({"message": "Query handler raised", "exception": e})
            return
        finally:
            running.driver = prev
        if y is not PARK:
            self._hand_off(y)

    def _finish(self) -> None:
        self.direct.discard(self)
        if self.done is not None:
            self.done(self)

    def _hand_off(self, y: Any) -> None:
        """The coroutine waits on something the driver cannot resume: a Task takes it from here."""
        self.direct.discard(self)
        t = self.loop.create_task(_run(self.coro, y))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        if self.done is not None:
            t.add_done_callback(self.done)

    def cancel(self) -> None:
        """A shutdown: raise CancelledError where the coroutine waits, as Task.cancel would."""
        if self in self.direct:
            self.fail(asyncio.CancelledError())


def start_many(
    coros: Iterable[Coroutine[Any, Any, None]],
    loop: asyncio.AbstractEventLoop,
    direct: set[Driver],
    tasks: set[asyncio.Task[None]],
    done: Callable[[object], None] | None,
) -> None:
    """``Driver(coro, ...).start()`` for each of ``coros``, with one driver for all those that end
    in their first step (a native worker's exchanged miss ends there: nothing to wait for). A
    coroutine that parks keeps the driver it parked with, and the next one gets a new one."""
    running = RUNNING
    prev = running.driver
    d = Driver(None, loop, direct, tasks, done)  # type: ignore[arg-type]
    try:
        for coro in coros:
            d.coro = coro
            running.driver = d
            try:
                y = coro.send(None)
            except (StopIteration, asyncio.CancelledError):
                if done is not None:
                    done(d)
                continue
            except (KeyboardInterrupt, SystemExit):
                if done is not None:
                    done(d)
                raise
            except BaseException as e:  # as Driver._step: what a Task would log
                if done is not None:
                    done(d)
                loop.call_exception_handler({"message": "Query handler raised", "exception": e})
                continue
            if y is PARK:
                direct.add(d)
            else:
                d._hand_off(y)
            d = Driver(None, loop, direct, tasks, done)  # type: ignore[arg-type]
    finally:
        running.driver = prev


async def _run(coro: Coroutine[Any, Any, None], first: Any) -> None:
    await _proxy(coro, first)


@types.coroutine
def _proxy(coro: Coroutine[Any, Any, None], y: Any) -> Generator[Any, Any, None]:
    """Pass what ``coro`` yields (``y`` first) to the Task and what the Task sends or throws back."""
    if y is NEED_TASK:
        try:
            y = coro.send(None)
        except StopIteration:
            return
    while True:
        try:
            v = yield y
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:  # cancellation, thrown in by the Task
            try:
                y = coro.throw(e)
            except StopIteration:
                return
        else:
            try:
                y = coro.send(v)
            except StopIteration:
                return
