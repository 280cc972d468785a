"""Ending tasks at shutdown: a cancel aimed at the one who waits must never be swallowed."""

from __future__ import annotations

import asyncio

from ingestd.supervision import cancel_and_wait, set_within


async def _slow_to_cancel(ended: asyncio.Event) -> None:
    """A task that tidies up for a moment when cancelled (a flush, a close), then ends."""
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(0.3)
        ended.set()


async def test_cancel_and_wait_returns_once_the_task_has_ended() -> None:
    ended = asyncio.Event()
    task = asyncio.create_task(_slow_to_cancel(ended))
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert ended.is_set() and task.cancelled()


async def test_a_cancel_of_the_waiter_itself_still_ends_the_waiter() -> None:
    """With `suppress(CancelledError)` around the await, this waiter carried on after its stop."""
    ended = asyncio.Event()
    carried_on = False

    async def waiter() -> None:
        nonlocal carried_on
        task = asyncio.create_task(_slow_to_cancel(ended))
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        carried_on = True

    outer = asyncio.create_task(waiter())
    await asyncio.sleep(0.1)  # the waiter is inside cancel_and_wait, the task still tidying up
    outer.cancel()
    done, _ = await asyncio.wait({outer}, timeout=5)
    assert outer in done and outer.cancelled()
    assert not carried_on


async def test_set_within_says_whether_the_event_came_in_time() -> None:
    event = asyncio.Event()
    assert await set_within(event, 0.05) is False
    asyncio.get_running_loop().call_later(0.05, event.set)
    assert await set_within(event, 5) is True
