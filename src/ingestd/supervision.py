"""Watching long-lived tasks: the full daemon and its dormant image both stop on the first crash.

A task that ends without an error was switched off (an interval of 0) and is not a crash.
"""

from __future__ import annotations

import asyncio
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
