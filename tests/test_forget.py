"""`ingestd forget PATH`: the file's points go, and it stays gone until it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ingest, stored_points
from generators import dump, write_transcript
from ingestd.engine import Engine


async def test_forget_deletes_points_and_holds_until_the_file_changes(engine: Engine) -> None:
    path = engine.settings.watch.conversations_dirs[0] / "p" / "private.jsonl"
    other = engine.settings.watch.conversations_dirs[0] / "p" / "kept.jsonl"
    session = write_transcript(path, seed=21, exchanges=3)
    write_transcript(other, seed=22, exchanges=2)
    assert (await ingest(engine, path)).status == "done"
    assert (await ingest(engine, other)).status == "done"
    kept_before = await stored_points(engine.store, "conversations", str(other))
    assert await stored_points(engine.store, "conversations", str(path)) > 0

    outcome = await engine.forget(str(path))
    assert outcome.status == "forgotten"
    assert await stored_points(engine.store, "conversations", str(path)) == 0
    assert await stored_points(engine.store, "conversations", str(other)) == kept_before, "only that file"
    record = engine.ledger.get(str(path))
    assert record is not None and record.status == "forgotten"
    hits = await engine.search("flaky test", "conversations", None, 20)
    assert all(hit["path"] != str(path) for hit in hits)

    # Seen again unchanged (a rescan, a restart): not re-ingested.
    assert (await ingest(engine, path)).status == "unchanged"
    assert await stored_points(engine.store, "conversations", str(path)) == 0
    engine.ledger.close()  # as a restart reads it: from the file, nothing held in memory
    engine.ledger.open()
    assert (await ingest(engine, path)).status == "unchanged"

    # Changed: ingested again, under a new generation.
    with path.open("ab") as handle:
        handle.write(dump([session.user("A new question after the file was forgotten.")]))
    again = await ingest(engine, path)
    assert again.status == "done" and again.chunks > 0
    record = engine.ledger.get(str(path))
    assert record is not None and record.status == "done" and record.generation == 1
    assert await stored_points(engine.store, "conversations", str(path)) == again.chunks


async def test_forget_unknown_path_is_an_error(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        await engine.forget(str(tmp_path / "never-seen.jsonl"))


async def _stored(engine: Engine, path: Path) -> list[tuple[int, int]]:
    rows = await engine.store.scroll_all("conversations", ["path", "generation", "ordinal"])
    return sorted((int(p["generation"]), int(p["ordinal"])) for _, p in rows if p["path"] == str(path))


async def test_retry_of_a_forgotten_file_stores_all_its_chunks_once(uncached: Engine) -> None:
    engine = uncached
    path = engine.settings.watch.conversations_dirs[0] / "p" / "again.jsonl"
    write_transcript(path, seed=23, exchanges=8)
    first = await ingest(engine, path)
    assert first.status == "done" and first.chunks > 3
    await engine.forget(str(path))
    assert engine.retry([str(path)]) == [str(path)]
    again = await ingest(engine, path)
    assert again.status == "done" and again.chunks == first.chunks
    assert again.embedded == first.chunks, "re-ingested in full, not resumed at the last chunk"
    record = engine.ledger.get(str(path))
    assert record is not None and record.generation == 1 and record.chunks == first.chunks
    assert await _stored(engine, path) == [(1, n) for n in range(first.chunks)]


async def test_retry_of_a_done_file_replaces_its_points(uncached: Engine) -> None:
    engine = uncached
    path = engine.settings.watch.conversations_dirs[0] / "p" / "done.jsonl"
    write_transcript(path, seed=24, exchanges=6)
    first = await ingest(engine, path)
    assert engine.retry([str(path)]) == [str(path)]
    again = await ingest(engine, path)
    assert again.status == "done" and again.embedded == first.chunks
    assert await _stored(engine, path) == [(1, n) for n in range(first.chunks)], "old generation deleted"
    assert (await ingest(engine, path)).status == "unchanged", "retried once, not on every pass"


async def test_readd_brings_back_only_forgotten_files(uncached: Engine) -> None:
    """What `ingestd import PATH` needs for a forgotten file (its scan alone says unchanged)."""
    engine = uncached
    forgotten = engine.settings.watch.conversations_dirs[0] / "p" / "gone.jsonl"
    kept = engine.settings.watch.conversations_dirs[0] / "p" / "kept.jsonl"
    write_transcript(forgotten, seed=25, exchanges=3)
    write_transcript(kept, seed=26, exchanges=3)
    first = await ingest(engine, forgotten)
    await ingest(engine, kept)
    await engine.forget(str(forgotten))
    assert engine.readd([forgotten, kept]) == [str(forgotten)]
    assert (await ingest(engine, kept)).status == "unchanged"
    again = await ingest(engine, forgotten)
    assert again.status == "done" and again.chunks == first.chunks
    assert await _stored(engine, forgotten) == [(1, n) for n in range(first.chunks)]
