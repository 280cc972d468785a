"""One owner for every long-lived task: started here, watched here, stopped here.

A task that dies would otherwise leave the process up but stalled for good (a dead reader, a
dead stage, a flusher that stopped writing). The daemon and its dormant image each hold one
`Supervisor` and stop on the first crash it reports. A task that ends without an error was
switched off (an interval of 0, a loop with nothing to do) and is not a crash.

Periodic jobs are declared as timers rather than written out as `while True: sleep` loops, so
each job is only its callback, and an error in it is reported like any task's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

Work = Coroutine[Any, Any, Any] | Callable[[], Coroutine[Any, Any, Any]]


class Supervisor:
    def __init__(self) -> None:
        self._owned: list[asyncio.Task[Any]] = []
        self._crash: asyncio.Task[Any] | None = None
        self._crashed = asyncio.Event()

    def add(self, name: str, work: Work) -> asyncio.Task[Any]:
        """Start `work` (a coroutine, or a function that makes one) as a task this supervisor
        owns: it is watched, and `stop()` cancels it."""
        coroutine = work() if callable(work) else work
        task = asyncio.create_task(coroutine, name=name)
        self._owned.append(task)
        task.add_done_callback(self._ended)
        return task

    @property
    def tasks(self) -> tuple[asyncio.Task[Any], ...]:
        """The tasks it owns, for another supervisor to watch."""
        return tuple(self._owned)

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Report a crash of a task owned elsewhere (the pipeline's stages), without cancelling
        it on `stop()`: its owner stops it in its own order, after the work in flight settles."""
        task.add_done_callback(self._ended)

    def timer(
        self, name: str, seconds: float, callback: Callable[[], Awaitable[object]], *, at_start: bool = False
    ) -> asyncio.Task[Any] | None:
        """Call `callback` every `seconds` (first at once when `at_start`, else after one
        interval); 0 or less switches the job off. An error from the callback ends the timer,
        and the supervisor reports it as that timer's crash."""
        if seconds <= 0:
            return None
        return self.add(name, every(seconds, callback, at_start=at_start))

    def crashed(self) -> asyncio.Task[Any] | None:
        """The first watched task that died of an error, if one has."""
        return self._crash

    async def wait_first_crash(self, until: asyncio.Event) -> asyncio.Task[Any] | None:
        """The first watched task to die of an error, or None once `until` is set first."""
        if self._crash is None and not until.is_set():
            crash = asyncio.create_task(self._crashed.wait(), name="supervisor-crash")
            stop = asyncio.create_task(until.wait(), name="supervisor-until")
            try:
                await asyncio.wait({crash, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                crash.cancel()
                stop.cancel()
        return self._crash

    async def stop(self) -> None:
        """Cancel every task this supervisor owns and wait until all have ended."""
        owned, self._owned = self._owned, []
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._crash is None and not task.cancelled() and task.exception() is not None:
            self._crash = task
            self._crashed.set()


async def every(seconds: float, callback: Callable[[], Awaitable[object]], *, at_start: bool = False) -> None:
    """Call `callback` every `seconds`, measured from the end of one call to the next."""
    if not at_start:
        await asyncio.sleep(seconds)
    while True:
        await callback()
        await asyncio.sleep(seconds)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, without swallowing a cancel of our own.

    `suppress(CancelledError)` around the await would also swallow a stop aimed at the caller
    while it waits, and the caller would carry on as if nothing had asked it to end.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if we_are_cancelled():
            raise


def we_are_cancelled() -> bool:
    """Is a cancel aimed at the running task itself (rather than at a task it awaited)?"""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; whether it is set. In the caller's own task (unlike
    `wait_for` on Python 3.11), so a cancel that lands as the event is set is not lost."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
