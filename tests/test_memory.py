"""Memory discipline in the running daemon: idle unload, and the OPERATIONAL_MEMORY_MB guard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from conftest import CountingProvider, make_settings
from generators import write_transcript
from ingestd.daemon import Daemon
from ingestd.engine import Engine
from ingestd.ledger import FileRecord
from ingestd.logs import configure_logging
from ledger_view import ledger_record


async def run_until(daemon: Daemon, condition: Any, limit: float = 60.0) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.1)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 15) == 0


async def test_idle_model_is_unloaded(tmp_path: Path, counting: CountingProvider) -> None:
    settings = make_settings(tmp_path, embed_idle_unload_seconds=1.0)
    write_transcript(settings.watch.conversations_dirs[0] / "p" / "s.jsonl", seed=1, exchanges=2)
    daemon = Daemon(settings, engine=Engine(settings, provider=counting))
    configure_logging("INFO", "json")  # model.unloaded is an info event
    try:
        with structlog.testing.capture_logs() as logs:
            await run_until(daemon, lambda: any(e["event"] == "model.unloaded" for e in logs))
    finally:
        configure_logging("WARNING", "json")
    assert counting.texts, "the file was embedded first"
    assert not counting.loaded
    event = next(e for e in logs if e["event"] == "model.unloaded")
    assert event["outcome"] == "unloaded" and event["rss_mb"] > 0
    assert daemon.next_mode == "dormant", "IDLE_DORMANT (default on): the CLI re-executes small"


@pytest.mark.parametrize("why", ["IDLE_DORMANT=false", "a file waits for a retry"])
async def test_idle_daemon_stays_awake_when_it_must(
    tmp_path: Path, counting: CountingProvider, why: str
) -> None:
    settings = make_settings(
        tmp_path, embed_idle_unload_seconds=1.0, idle_dormant=why != "IDLE_DORMANT=false"
    )
    write_transcript(settings.watch.conversations_dirs[0] / "p" / "s.jsonl", seed=3, exchanges=2)
    daemon = Daemon(settings, engine=Engine(settings, provider=counting))

    def unloaded() -> bool:
        waiting = daemon.engine.ledger.get("/gone.jsonl") is not None
        if why == "a file waits for a retry" and counting.texts and not waiting:  # after the file
            daemon.engine.ledger.begin("/gone.jsonl", FileRecord(kind="conversations", reason="store down"))
        return any(e["event"] == "model.unloaded" for e in logs)

    configure_logging("INFO", "json")
    try:
        with structlog.testing.capture_logs() as logs:
            await run_until(daemon, unloaded)
    finally:
        configure_logging("WARNING", "json")
    assert daemon.next_mode is None


async def test_memory_over_the_limit_pauses_trims_and_recycles(
    tmp_path: Path, counting: CountingProvider
) -> None:
    settings = make_settings(tmp_path, operational_memory_mb=64)  # below any real RSS: always over
    write_transcript(settings.watch.conversations_dirs[0] / "p" / "s.jsonl", seed=2, exchanges=2)
    daemon = Daemon(settings, engine=Engine(settings, provider=counting))
    logs: list[MutableMapping[str, Any]]
    with structlog.testing.capture_logs() as logs:
        await run_until(daemon, lambda: any(e["event"] == "memory.high" for e in logs) and counting.texts)
    event = next(e for e in logs if e["event"] == "memory.high")
    assert event["limit_mb"] == 64 and event["outcome"] in ("trimmed", "model recycled")
    assert daemon.intake.is_set(), "intake resumes after the check"
    record = ledger_record(
        settings.ops.state_dir, str(settings.watch.conversations_dirs[0] / "p" / "s.jsonl")
    )
    assert record is not None and record.status == "done"
