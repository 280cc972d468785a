"""The watcher checks itself: unannounced changes and a failed probe switch roots to polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from conftest import captured_logs, make_settings, until
from ingestd.ledger import Ledger
from ingestd.metrics import Metrics
from ingestd.settings import Settings
from ingestd.supervision import Supervisor
from ingestd.watcher import START_MARGIN, Watcher
from ingestd.workqueue import WorkQueue


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with captured_logs("DEBUG") as captured:
        yield captured


def opened_ledger(settings: Settings) -> Ledger:
    """An empty ledger, as a first start has: every file found is new."""
    ledger = Ledger(settings.ops.state_dir)
    ledger.open()
    return ledger


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Watcher]:
    settings = make_settings(tmp_path, watch_probe_seconds=0, watch_poll_delay_ms=100)
    ledger = opened_ledger(settings)
    watcher = Watcher(settings.watch, settings.ops.state_dir, WorkQueue(), ledger, metrics=Metrics())
    watcher.grace = 1.0  # the default allows 5 s for an event; the test waits for its own
    supervisor = Supervisor()
    watcher.start(supervisor)
    await until(lambda: all(w.started_wall is not None for w in watcher.watches), limit_s=20)
    await asyncio.sleep(START_MARGIN + 0.3)  # changes this early are not held against events
    yield watcher
    watcher.stop()
    await supervisor.stop()
    ledger.close()
    assert supervisor.crashed() is None


async def queued(queue: WorkQueue) -> set[Path]:
    """Everything waiting in the queue, taken out as a reader would."""
    return {(await queue.take())[0] for _ in range(len(queue))}


def by_kind(watcher: Watcher, kind: str) -> Any:
    return next(w for w in watcher.watches if w.kind == kind)


async def test_root_without_events_is_switched_to_polling(
    running: Watcher, logs: list[MutableMapping[str, Any]]
) -> None:
    watcher = running
    docs, convs = by_kind(watcher, "documents"), by_kind(watcher, "conversations")
    assert docs.mode == convs.mode == "events"
    silent = docs.root / "unannounced.md"
    silent.write_text("# Written where no event is delivered\n")
    heard = convs.root / "p" / "heard.jsonl"
    heard.parent.mkdir()
    heard.write_text("{}\n")
    # A file made in a brand-new folder may be announced only through its folder (inotify adds
    # the folder's watch after the file is written); the check accepts either.
    await until(lambda: str(heard) in convs.announced or str(heard.parent) in convs.announced, limit_s=20)
    await until(lambda: str(silent) in docs.announced, limit_s=20)
    docs.announced.clear()  # as on a mount that delivers no events: nothing announced the change
    await asyncio.sleep(watcher.grace + 0.5)  # both changes are now older than the grace

    started_with_events = docs.started_wall
    await watcher.reconcile()

    assert docs.mode == "polling" and docs.missed == 1 and "no file event" in (docs.reason or "")
    assert convs.mode == "events" and convs.missed == 0, "a root whose events arrive keeps them"
    assert {silent, heard} <= await queued(watcher.queue)
    switched = [e for e in logs if e["event"] == "watch.polling"]
    assert switched and switched[0]["path"] == str(docs.root)
    assert switched[0]["outcome"] == "switched to polling"
    exposition = watcher.metrics.exposition().decode() if watcher.metrics else ""
    assert f'ingestd_watcher_mode{{ingestd_watcher_mode="polling",root="{docs.root}"}} 1.0' in exposition
    assert f'ingestd_watch_missed_events_total{{root="{docs.root}"}} 1.0' in exposition
    # Polling now finds what events did not deliver.
    await until(lambda: docs.started_wall not in (None, started_with_events), limit_s=20)
    await asyncio.sleep(0.5)  # the poller takes its first snapshot
    later = docs.root / "later.md"
    later.write_text("# Found by polling\n")
    await until(lambda: str(later) in docs.announced, limit_s=20)


async def test_old_and_announced_changes_are_not_missed_events(tmp_path: Path) -> None:
    settings: Settings = make_settings(tmp_path, watch_probe_seconds=0)
    before = settings.watch.documents_dirs[0].resolve() / "before.md"
    before.write_text("# Written before the watcher started\n")
    ledger = opened_ledger(settings)
    watcher = Watcher(settings.watch, settings.ops.state_dir, WorkQueue(), ledger)
    watcher.grace = 1.0
    supervisor = Supervisor()
    watcher.start(supervisor)
    try:
        await until(lambda: all(w.started_wall is not None for w in watcher.watches), limit_s=20)
        await asyncio.sleep(START_MARGIN + 0.3)
        docs = by_kind(watcher, "documents")
        nested = docs.root / "new" / "deep"
        nested.mkdir(parents=True)
        (nested / "fresh.md").write_text("# Announced\n")
        await until(lambda: str(docs.root / "new") in docs.announced, limit_s=20)  # the folder that appeared
        await asyncio.sleep(watcher.grace + 0.5)
        assert await watcher.reconcile() >= 2
        assert all(w.mode == "events" and w.missed == 0 for w in watcher.watches)
    finally:
        watcher.stop()
        await supervisor.stop()
        ledger.close()


async def test_probe_writes_next_to_the_state_only(
    running: Watcher, logs: list[MutableMapping[str, Any]], tmp_path: Path
) -> None:
    watcher = running
    roots_before = {w.root: sorted(w.root.rglob("*")) for w in watcher.watches}
    result = await watcher.probe()
    assert result.ok is True and result.latency_s is not None and result.error is None
    assert watcher.probe_dir.parent == (tmp_path / "state").resolve(), "STATE_DIR of make_settings"
    assert list(watcher.probe_dir.iterdir()) == [], "the probe file is removed"
    assert {w.root: sorted(w.root.rglob("*")) for w in watcher.watches} == roots_before
    assert all(w.mode == "events" for w in watcher.watches)
    assert any(e["event"] == "watch.probe" and e["outcome"] == "delivered" for e in logs)


async def test_failed_probe_switches_every_root_to_polling(
    running: Watcher, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    watcher = running
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    watcher.probe_dir = blocker / ".probe"  # cannot be created: the event machinery is unusable
    result = await watcher.probe(wait_s=2.0)
    assert result.ok is False and result.error
    assert all(w.mode == "polling" and "probe" in (w.reason or "") for w in watcher.watches)
    failed = [e for e in logs if e["event"] == "watch.probe"]
    assert failed and failed[-1]["outcome"] == "no event" and failed[-1]["path"] == str(watcher.probe_dir)
    assert "ingestd_watch_probe_ok 0.0" in (watcher.metrics.exposition().decode() if watcher.metrics else "")
