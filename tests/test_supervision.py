"""The supervisor, its timers, and ending tasks at shutdown (a cancel aimed at the one who waits
must never be swallowed)."""

from __future__ import annotations

import asyncio

from ingestd.supervision import Supervisor, cancel_and_wait, set_within


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


# --- the supervisor and its timers -----------------------------------------------------------
async def test_a_timer_fires_again_and_again_until_stopped() -> None:
    supervisor = Supervisor()
    calls = 0
    third = asyncio.Event()

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()

    task = supervisor.timer("tick", 0.01, tick)
    assert task is not None
    await asyncio.wait_for(third.wait(), 10)
    await supervisor.stop()
    assert task.cancelled() and supervisor.crashed() is None
    after_stop = calls
    await asyncio.sleep(0.05)
    assert calls == after_stop, "a stopped timer never fires again"


async def test_a_timer_at_start_fires_before_its_first_interval() -> None:
    supervisor = Supervisor()
    fired = asyncio.Event()

    async def tick() -> None:
        fired.set()

    supervisor.timer("probe", 3600, tick, at_start=True)
    try:
        await asyncio.wait_for(fired.wait(), 10)
    finally:
        await supervisor.stop()


async def test_an_interval_of_zero_switches_the_timer_off() -> None:
    supervisor = Supervisor()
    off_calls = 0
    live_fired = asyncio.Event()

    async def off() -> None:
        nonlocal off_calls
        off_calls += 1

    async def live() -> None:
        live_fired.set()

    assert supervisor.timer("off", 0, off, at_start=True) is None
    assert supervisor.timer("negative", -1, off, at_start=True) is None
    supervisor.timer("live", 3600, live, at_start=True)  # started after the two that are off
    await asyncio.wait_for(live_fired.wait(), 10)
    await supervisor.stop()
    assert off_calls == 0


async def test_a_callback_that_raises_is_reported_as_that_timers_crash() -> None:
    supervisor = Supervisor()

    async def broken() -> None:
        raise RuntimeError("injected timer failure")

    supervisor.timer("memory", 0.01, broken)
    supervisor.add("reader", asyncio.Event().wait())
    crashed = await asyncio.wait_for(supervisor.wait_first_crash(asyncio.Event()), 10)
    assert crashed is not None and crashed is supervisor.crashed()
    assert crashed.get_name() == "memory" and "injected timer failure" in str(crashed.exception())
    await supervisor.stop()


async def test_wait_first_crash_returns_none_once_asked_to_stop() -> None:
    supervisor = Supervisor()
    supervisor.add("idle", asyncio.Event().wait)  # a factory: the supervisor makes the coroutine
    until = asyncio.Event()
    asyncio.get_running_loop().call_soon(until.set)
    assert await asyncio.wait_for(supervisor.wait_first_crash(until), 10) is None
    await supervisor.stop()


async def test_a_task_that_ends_cleanly_is_not_a_crash() -> None:
    supervisor = Supervisor()

    async def nothing_to_do() -> None:
        return None

    done = supervisor.add("switched-off", nothing_to_do())
    await done
    until = asyncio.Event()
    until.set()
    assert await supervisor.wait_first_crash(until) is None
    await supervisor.stop()


async def test_a_watched_task_is_reported_but_not_cancelled_by_stop() -> None:
    """The pipeline's stages are its own: it stops them after the work in flight settles."""
    supervisor = Supervisor()
    release = asyncio.Event()
    stage = asyncio.create_task(release.wait(), name="embed-stage")
    supervisor.watch(stage)
    await supervisor.stop()
    assert not stage.done(), "stop() leaves a task it does not own running"
    release.set()
    await stage

    async def dies() -> None:
        raise RuntimeError("stage failure")

    broken = asyncio.create_task(dies(), name="upsert-stage")
    supervisor.watch(broken)
    crashed = await asyncio.wait_for(supervisor.wait_first_crash(asyncio.Event()), 10)
    assert crashed is broken
