"""Watching long-lived tasks: the full daemon and its dormant image both stop on the first crash.

A task that ends without an error was switched off (an interval of 0) and is not a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def first_crash(tasks: Iterable[asyncio.Task[Any]], until: asyncio.Event) -> asyncio.Task[Any] | None:
    """The first of `tasks` to die of an error, or None once `until` is set."""
    stop = asyncio.create_task(until.wait(), name="until")
    watched: set[asyncio.Task[Any]] = {stop, *tasks}
    try:
        while not until.is_set():
            done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    return task
        return None
    finally:
        stop.cancel()


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
