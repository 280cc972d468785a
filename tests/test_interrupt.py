"""Interrupted passes: a cancelled read, a shutdown while the store is down, a pending file that
shrank, a Markdown document resumed mid-file. Each must end exactly as an uninterrupted run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ingestd.pipeline
import ingestd.reader
import ingestd.stages.read
from conftest import CountingProvider, ingest, make_settings, stored_points, until
from generators import paragraph, simple_pdf, write_transcript
from ingestd.engine import Engine
from ingestd.ledger import FileRecord, Ledger, Status
from ingestd.pipeline import FileJob
from ingestd.settings import Settings
from ingestd.store import point_id


async def _rows(engine: Engine, kind: str, path: Path) -> list[tuple[Any, ...]]:
    rows = await engine.store.scroll_all(kind, ["path", "ordinal", "heading", "text"])
    return sorted((p["ordinal"], p.get("heading"), p["text"]) for _, p in rows if p["path"] == str(path))


async def _clean_rows(engine: Engine, kind: str, path: Path) -> list[tuple[Any, ...]]:
    """What an uninterrupted ingest of the file's bytes stores (under another name)."""
    twin = path.with_name("twin-" + path.name)
    twin.write_bytes(path.read_bytes())
    assert (await ingest(engine, twin)).status == "done"
    return await _rows(engine, kind, twin)


async def _stop_part_way(
    settings: Settings, provider: CountingProvider, path: Path, acked: int
) -> FileRecord:
    """Start a pass over `path`, stop the engine once `acked` chunks are stored and more are in
    flight (as SIGTERM does: the read is cancelled, then the engine closes), and return the
    file's record as the stop left it."""
    engine = Engine(settings, provider=provider)
    await engine.open("test")
    try:
        reading = asyncio.create_task(engine.submit(path))

        def part_way() -> bool:
            job = engine.pipeline.job(str(path))
            return job is not None and job.reading and job.acked >= acked and job.emitted > job.acked

        await until(part_way)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    finally:
        await engine.close()  # the stop: what was read lands within the grace
    ledger = Ledger(settings.ops.state_dir)
    ledger.open()
    record = ledger.get(str(path))
    ledger.close()
    assert record is not None
    return record


async def test_cancelled_read_leaves_the_file_pending_then_resumes_cleanly(
    tmp_path: Path, counting: CountingProvider
) -> None:
    """SIGTERM cancels the readers: a half-read file must stay pending, never become `done`."""
    settings = make_settings(tmp_path, embed_cache_max_entries=0, read_block_bytes=4096, queue_max_chunks=4)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        path = settings.watch.conversations_dirs[0] / "p" / "big.jsonl"
        write_transcript(path, seed=5, exchanges=120)
        task = asyncio.create_task(engine.submit(path))

        def reading_and_acked() -> FileJob | None:
            job = engine.pipeline.job(str(path))
            return job if job is not None and job.reading and job.acked >= 5 else None

        job = await until(reading_and_acked)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(1.0)  # batches in flight land; they must not complete the pass
        record = engine.ledger.get(str(path))
        assert record is not None and record.status == "pending", (record and record.status, job.outcome)
        assert record.offset == 0 and 0 < record.resume_offset < path.stat().st_size
        assert engine.pipeline.job(str(path)) is None, "a cancelled pass does not hold the file busy"

        again = await ingest(engine, path)
        assert again.status == "done" and 0 < again.embedded < again.chunks, "resumed, not redone"
        record = engine.ledger.get(str(path))
        assert record is not None and record.offset == path.stat().st_size
        assert await _rows(engine, "conversations", path) == await _clean_rows(engine, "conversations", path)
    finally:
        await engine.close()


async def test_cancel_while_every_chunk_is_acknowledged_does_not_mark_the_file_done(
    uncached: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SIGTERM case that used to record `done` at offset 0: the reader is cancelled between
    lines at a moment when all it has emitted is stored (no chunk in flight to hold the pass)."""
    engine = uncached
    path = engine.settings.watch.conversations_dirs[0] / "p" / "paused.jsonl"
    write_transcript(path, seed=6, exchanges=30)
    original = ingestd.reader.read_lines  # what the pipeline calls, kept to delegate to
    paused = asyncio.Event()

    async def pausing(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        count = 0
        async for line in original(*args, **kwargs):
            yield line
            count += 1
            if count == 40:
                paused.set()
                await asyncio.sleep(3600)  # a slow read (huge lines, a slow disk), cut by SIGTERM

    monkeypatch.setattr(ingestd.stages.read, "read_lines", pausing)
    task = asyncio.create_task(engine.submit(path))
    await asyncio.wait_for(paused.wait(), 60)
    job = engine.pipeline.job(str(path))
    assert job is not None
    await until(lambda: job.emitted > 0 and job.acked == job.emitted)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    record = engine.ledger.get(str(path))
    assert record is not None and record.status == "pending", (record and record.status, record)
    assert record.resume_offset > 0 and record.offset == 0
    monkeypatch.undo()
    again = await ingest(engine, path)
    assert again.status == "done" and 0 < again.embedded < again.chunks
    record = engine.ledger.get(str(path))
    assert record is not None and record.offset == path.stat().st_size
    assert await _rows(engine, "conversations", path) == await _clean_rows(engine, "conversations", path)


async def test_stop_returns_while_the_store_is_down_and_the_file_stays_pending(
    tmp_path: Path, counting: CountingProvider
) -> None:
    settings = make_settings(tmp_path, qdrant_timeout_seconds=0.5)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    path = settings.watch.conversations_dirs[0] / "p" / "a.jsonl"
    real_delete = engine.store.delete_file

    async def down(*_: Any, **__: Any) -> None:
        raise ConnectionError("injected: store down")

    try:
        write_transcript(path, seed=1, exchanges=3)
        assert (await ingest(engine, path)).status == "done"
        engine.store.delete_file = down  # type: ignore[method-assign]
        os.utime(path)  # touched, not changed: a resumed pass whose completion deletes past its end
        job = await engine.submit(path)
        assert isinstance(job, FileJob)
        await until(lambda: not engine.pipeline.status().store_available)
        started = time.monotonic()
        await asyncio.wait_for(engine.pipeline.stop(), 20)  # completions cancelled after a grace
        assert time.monotonic() - started < ingestd.pipeline.STOP_GRACE + 7, "stop() waited for the store"
        assert job.done.is_set()
        record = engine.ledger.get(str(path))
        assert record is not None and record.status == "pending"
    finally:
        engine.store.delete_file = real_delete  # type: ignore[method-assign]
        await engine.close()
    saved = Ledger(settings.ops.state_dir)
    saved.open()
    record = saved.get(str(path))
    saved.close()
    assert record is not None and record.status == "pending", "the interrupted completion is not done"

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        outcome = await ingest(engine, path)
        assert outcome.status == "done"
        assert await stored_points(engine.store, "conversations", str(path)) == outcome.chunks
    finally:
        await engine.close()


async def test_a_stop_that_lands_as_a_store_call_fails_is_not_swallowed(uncached: Engine) -> None:
    """The cancel that stop() sends can arrive just as a store call fails. Python 3.11's
    asyncio.wait_for then raises the call's error instead of the cancel; the retry loop took it
    for an outage and retried for good, and stop() hung (seen once in CI)."""
    retrying: asyncio.Task[None] | None = None
    calls = 0

    async def fails_as_the_stop_arrives() -> None:
        nonlocal calls
        calls += 1
        assert retrying is not None
        retrying.cancel()
        raise ConnectionError("injected: store down")

    retrying = asyncio.create_task(
        uncached.pipeline.gateway.call("delete", ["a.jsonl"], fails_as_the_stop_arrives)
    )
    done, _ = await asyncio.wait({retrying}, timeout=5)
    assert retrying in done, f"the cancel was swallowed: still retrying after {calls} calls"
    assert retrying.cancelled() and calls == 1


async def test_a_job_still_in_flight_when_the_pipeline_stops_is_released_as_pending(
    uncached: Engine, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ingestd import` waits on `settled`: a job whose chunks no stage will acknowledge any more
    must end (pending) at stop, not keep its waiter for good."""
    engine = uncached
    path = engine.settings.watch.conversations_dirs[0] / "p" / "stuck.jsonl"
    write_transcript(path, seed=8, exchanges=4)
    asked = asyncio.Event()

    async def never_answers(texts: list[str]) -> list[list[float]]:
        asked.set()
        await asyncio.sleep(3600)  # a model that hangs: the batch is in flight at stop
        raise AssertionError("unreachable")

    monkeypatch.setattr(counting, "embed_documents", never_answers)
    job = await engine.submit(path)
    assert isinstance(job, FileJob)
    waiting = asyncio.create_task(engine.pipeline.settled(job))
    await asyncio.wait_for(asked.wait(), 60)
    await asyncio.wait_for(engine.pipeline.stop(), 20)
    done, _ = await asyncio.wait({waiting}, timeout=5)
    assert waiting in done, "settled() still waits on a job the stopped pipeline will never finish"
    assert waiting.exception() is None
    assert job.outcome is not None and job.outcome.status == "pending", job.outcome
    assert engine.pipeline.job(str(path)) is None
    record = engine.ledger.get(str(path))
    assert record is not None and record.status == "pending"


async def test_a_stop_while_a_batch_is_handed_on_leaves_no_embedding_running(
    uncached: Engine, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embed stage starts batch N+1, then hands batch N on. A stop during the hand-off used
    to cancel only batch N: N+1 ran on and reached the embedding cache after the engine closed
    it ("Cannot operate on a closed database", a task exception nobody retrieved; seen in CI)."""
    engine = uncached
    path = engine.settings.watch.conversations_dirs[0] / "p" / "long.jsonl"
    write_transcript(path, seed=9, exchanges=60)
    stalled = asyncio.Event()
    real_embed = counting.embed_documents

    async def hung_upsert(*_: Any, **__: Any) -> None:
        stalled.set()
        await asyncio.sleep(3600)  # a store that stopped answering: the hand-off queue fills up

    async def slow_once_stalled(texts: list[str]) -> list[list[float]]:
        if stalled.is_set():
            await asyncio.sleep(30)  # the newer batch is still in flight at the stop
        return await real_embed(texts)

    monkeypatch.setattr(engine.store, "upsert", hung_upsert)
    monkeypatch.setattr(counting, "embed_documents", slow_once_stalled)
    reading = asyncio.create_task(engine.submit(path))

    def embedding() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "embed-batch" and not t.done()]

    await until(lambda: stalled.is_set() and embedding(), 60)
    await asyncio.wait_for(engine.pipeline.stop(), 20)
    left = embedding()
    assert not left, f"{len(left)} embedding task(s) still running after stop()"
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)


async def test_a_stop_during_a_read_stores_what_was_read_so_nothing_is_embedded_twice(
    tmp_path: Path, counting: CountingProvider
) -> None:
    """The stop's grace covers all the work in flight (chunks queued, being embedded, being
    stored), not just the hand-off queue: after a stop mid-read and a restart, every chunk of
    the file has been embedded exactly once."""
    settings = make_settings(tmp_path, embed_cache_max_entries=0, read_block_bytes=4096, queue_max_chunks=8)
    path = settings.watch.conversations_dirs[0] / "p" / "long.jsonl"
    write_transcript(path, seed=12, exchanges=120)
    stopped = await _stop_part_way(settings, counting, path, acked=5)
    first = len(counting.texts)
    assert stopped.status == "pending" and stopped.chunks == first

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        outcome = await ingest(engine, path)
    finally:
        await engine.close()
    assert outcome.status == "done" and outcome.reused == 0
    assert len(counting.texts) == outcome.chunks, "a chunk was embedded twice across the stop"
    assert len(set(counting.texts)) == len(counting.texts)


async def test_pending_file_shrunk_below_its_resume_point_is_rewritten(uncached: Engine) -> None:
    engine = uncached
    path = engine.settings.watch.conversations_dirs[0] / "p" / "shrinks.jsonl"
    write_transcript(path, seed=31, exchanges=12)
    assert (await ingest(engine, path)).status == "done"
    record = engine.ledger.get(str(path))
    assert record is not None
    # As an interrupted first pass leaves it: pending, offset still 0, the resume point far in.
    record.status, record.offset = Status.PENDING, 0
    engine.ledger.begin(str(path), record)
    data = path.read_bytes()
    cut = data.rfind(b"\n", 0, record.resume_offset - 1) + 1
    assert record.head_len <= cut < record.resume_offset
    path.write_bytes(data[:cut])
    outcome = await ingest(engine, path)
    assert outcome.status == "done"
    record = engine.ledger.get(str(path))
    assert record is not None and record.generation == 1 and record.offset == cut
    assert await _rows(engine, "conversations", path) == await _clean_rows(engine, "conversations", path)


def _fenced_document(seed: int) -> str:
    """A heading, prose, then a code block long enough to be cut inside the fence (32 KB), its
    lines looking like headings: a resume inside it must know both the heading and the fence."""
    rng = random.Random(seed)
    prose = "\n\n".join(paragraph(rng, 6) for _ in range(3))
    code = "".join(f"# step {i}: restart the worker\nrun({i})\n" for i in range(900))
    return f"# Runbook\n\n{prose}\n\n```python\n{code}```\n\n## After\n\n{paragraph(rng, 4)}\n"


async def test_markdown_resumed_mid_file_keeps_heading_and_fence_state(uncached: Engine) -> None:
    engine = uncached
    path = engine.settings.watch.documents_dirs[0] / "runbook.md"
    path.write_text(_fenced_document(41))
    assert (await ingest(engine, path)).status == "done"
    data = path.read_bytes()
    fence = data.index(b"```python")
    rows = await engine.store.scroll_all("documents", ["path", "ordinal", "offset"])
    inside = sorted(
        (p["ordinal"], p["offset"]) for _, p in rows if p["path"] == str(path) and p["offset"] > fence
    )
    assert inside, "the fence was not cut: make the code block longer"
    ordinal, offset = inside[0]  # the first section that starts inside the fence: a resume point
    record = engine.ledger.get(str(path))
    assert record is not None
    # As a pass interrupted there leaves it: later chunks not stored, the record pointing at it.
    await engine.store.delete_file("documents", str(path), record.generation, ordinal)
    record.status = Status.PENDING
    record.resume_offset, record.resume_ordinal = offset, ordinal
    record.resume_line = data[:offset].count(b"\n") + 1
    engine.ledger.begin(str(path), record)
    outcome = await ingest(engine, path)
    assert outcome.status == "done" and outcome.embedded == outcome.chunks - ordinal
    resumed = await _rows(engine, "documents", path)
    assert {heading for _, heading, _ in resumed[ordinal:]} <= {"Runbook", "After"}
    assert resumed == await _clean_rows(engine, "documents", path)


async def _points(engine: Engine, path: Path) -> dict[str, tuple[Any, ...]]:
    """Each stored point of the file: its ID, and what it holds (ordinal, page, text)."""
    rows = await engine.store.scroll_all("documents", ["path", "ordinal", "page", "text"])
    return {pid: (p["ordinal"], p.get("page"), p["text"]) for pid, p in rows if p["path"] == str(path)}


async def test_a_pdf_interrupted_part_way_resumes_with_each_chunk_embedded_once(
    tmp_path: Path, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PDF is parsed as a whole, so its pass resumes from the file's start: the chunks stored
    before the interruption are verified, not embedded again, and no point is stored twice."""
    settings = make_settings(tmp_path, embed_cache_max_entries=0, queue_max_chunks=4)
    rng = random.Random(47)
    data = simple_pdf([paragraph(rng, 6) for _ in range(30)])
    path = settings.watch.documents_dirs[0] / "manual.pdf"
    path.write_bytes(data)
    real_embed = counting.embed_documents

    async def unhurried(texts: list[str]) -> list[list[float]]:  # a pass long enough to cut short
        await asyncio.sleep(0.05)
        return await real_embed(texts)

    monkeypatch.setattr(counting, "embed_documents", unhurried)
    stopped = await _stop_part_way(settings, counting, path, acked=3)
    first = len(counting.texts)
    assert stopped.status == "pending", stopped.status

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        outcome = await ingest(engine, path)
        assert outcome.status == "done" and 0 < first < outcome.chunks, (first, outcome)
        assert (outcome.embedded, outcome.reused) == (outcome.chunks - first, first), "verified, not redone"
        embedded = list(counting.texts)
        resumed = await _points(engine, path)
        generation = engine.ledger.get(str(path)).generation  # type: ignore[union-attr]
        twin = path.with_name("twin-" + path.name)
        twin.write_bytes(data)
        assert (await ingest(engine, twin)).status == "done"
        clean = await _points(engine, twin)
    finally:
        await engine.close()
    assert len(embedded) == outcome.chunks, "a chunk was embedded twice across the interruption"
    assert sorted(embedded) == sorted(text for _, _, text in clean.values())
    assert set(resumed) == {point_id(str(path), generation, ordinal) for ordinal, _, _ in clean.values()}
    assert sorted(resumed.values()) == sorted(clean.values()), "the same points as a clean ingest"
