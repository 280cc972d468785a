"""Deletion policies (issue 2, item 12), with the defaults and with each one switched.

Documents: purged when deleted (DOCUMENTS_PURGE_ON_DELETE=true by default). Conversations:
kept when deleted, since Claude Code removes transcripts after 30 days and the points may be the
only copy left (CONVERSATIONS_PURGE_ON_DELETE=false by default). Points are counted in the real
embedded Qdrant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import CountingProvider, engine_with, ingest, stored_points
from generators import ClaudeSession, dump
from ingestd.engine import Engine

SESSION = "5b1e2c3d-4f60-4a7b-8c9d-0e1f2a3b4c5d"


def transcript_lines(session: str, topic: str, turns: int = 4) -> bytes:
    """A small Claude Code transcript, several chunks long."""
    claude = ClaudeSession(seed=len(topic), session=session, cwd="/home/dev/retry-lab")
    lines: list[dict[str, Any]] = []
    for n in range(turns):
        lines.append(
            claude.user(f"Question {n} about {topic}: why does the retry loop time out under load? " * 3)
        )
        answer = f"Answer {n} on {topic}: the backoff ceiling is too low, raise it and add jitter. " * 3
        lines.append(claude.assistant([{"type": "text", "text": answer}]))
    return dump(lines)


def markdown(topic: str) -> str:
    sections = [f"# {topic}\n\nIntro to {topic}, a small handbook page."]
    for n in range(4):
        body = f"Step {n} of the {topic} runbook: check the queue depth, then the worker logs. " * 4
        sections.append(f"## Step {n}\n\n{body}")
    return "\n\n".join(sections) + "\n"


async def put_document(engine: Engine, name: str) -> tuple[Path, int]:
    path = engine.settings.watch.documents_dirs[0] / name
    path.write_text(markdown(path.stem))
    outcome = await ingest(engine, path)
    assert outcome.status == "done" and outcome.chunks > 1
    count = await stored_points(engine.store, "documents", str(path))
    assert count == outcome.chunks
    return path, count


async def put_transcript(engine: Engine, *parts: str, session: str = SESSION) -> tuple[Path, int]:
    path = engine.settings.watch.conversations_dirs[0].joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(transcript_lines(session, path.stem))
    outcome = await ingest(engine, path)
    assert outcome.status == "done" and outcome.chunks > 1
    count = await stored_points(engine.store, "conversations", str(path))
    assert count == outcome.chunks
    return path, count


async def test_defaults_purge_documents_and_keep_conversations(engine: Engine) -> None:
    assert engine.settings.store.documents_purge_on_delete is True
    assert engine.settings.store.conversations_purge_on_delete is False
    doc, _ = await put_document(engine, "gone.md")
    other_doc, other_doc_points = await put_document(engine, "stays.md")
    transcript, transcript_points = await put_transcript(engine, "-home-dev-retry-lab", f"{SESSION}.jsonl")
    total_docs = await engine.store.count("documents")

    doc.unlink()
    transcript.unlink()
    purged = await ingest(engine, doc)
    kept = await ingest(engine, transcript)

    assert (purged.status, purged.reason) == ("deleted", "purged")
    assert (kept.status, kept.reason) == ("deleted", "kept")
    assert await stored_points(engine.store, "documents", str(doc)) == 0
    assert await engine.store.count("documents") == other_doc_points < total_docs
    assert await stored_points(engine.store, "documents", str(other_doc)) == other_doc_points
    assert await stored_points(engine.store, "conversations", str(transcript)) == transcript_points
    assert engine.ledger.get(str(doc)) is None  # forgotten entirely
    record = engine.ledger.get(str(transcript))
    assert record is not None and record.status == "deleted" and record.reason == "file deleted; points kept"
    # The kept conversation is still searchable, the purged document is not.
    hits = await engine.search("retry loop backoff ceiling jitter", None, None, 10)
    assert any(hit["path"] == str(transcript) for hit in hits)
    assert not any(hit["path"] == str(doc) for hit in hits)


async def test_documents_purge_off_keeps_a_deleted_documents_points(
    tmp_path: Path, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCUMENTS_PURGE_ON_DELETE", "false")
    async with engine_with(tmp_path, counting) as engine:
        assert engine.settings.store.documents_purge_on_delete is False
        doc, points = await put_document(engine, "handbook.md")
        doc.unlink()
        outcome = await ingest(engine, doc)
        assert (outcome.status, outcome.reason) == ("deleted", "kept")
        assert await stored_points(engine.store, "documents", str(doc)) == points
        record = engine.ledger.get(str(doc))
        assert record is not None and record.status == "deleted"
        # A second notice of the same deletion changes nothing.
        assert (await ingest(engine, doc)).status == "unchanged"
        assert await stored_points(engine.store, "documents", str(doc)) == points
        hits = await engine.search("handbook runbook queue depth worker logs", "documents", None, 5)
        assert hits and hits[0]["path"] == str(doc)

    # The policy survives a restart: the record is still `deleted`, the points still there.
    async with engine_with(tmp_path, counting) as engine:
        assert await stored_points(engine.store, "documents", str(doc)) == points
        record = engine.ledger.get(str(doc))
        assert record is not None and record.status == "deleted"


async def test_conversations_purge_on_purges_a_deleted_transcripts_points(
    tmp_path: Path, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERSATIONS_PURGE_ON_DELETE", "true")
    async with engine_with(tmp_path, counting) as engine:
        assert engine.settings.store.conversations_purge_on_delete is True
        project = "-home-dev-retry-lab"
        transcript, _ = await put_transcript(engine, project, f"{SESSION}.jsonl")
        subagent, sub_points = await put_transcript(
            engine, project, SESSION, "subagents", "agent-a1b2c3.jsonl"
        )
        sibling, sibling_points = await put_transcript(
            engine, project, "6c2f3e4d-5a71-4b8c-9dae-1f2a3b4c5d6e.jsonl", session="other"
        )
        doc, _ = await put_document(engine, "notes.md")
        transcript.unlink()
        outcome = await ingest(engine, transcript)
        assert (outcome.status, outcome.reason) == ("deleted", "purged")
        assert await stored_points(engine.store, "conversations", str(transcript)) == 0
        assert engine.ledger.get(str(transcript)) is None
        # Only that file's points go: its subagent file and other sessions are untouched.
        assert await stored_points(engine.store, "conversations", str(subagent)) == sub_points
        assert await stored_points(engine.store, "conversations", str(sibling)) == sibling_points
        assert await engine.store.count("conversations") == sub_points + sibling_points
        # Documents keep their own (default) policy.
        doc.unlink()
        assert (await ingest(engine, doc)).reason == "purged"
        assert await engine.store.count("documents") == 0


async def test_conversations_purge_off_explicitly_keeps_points(
    tmp_path: Path, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERSATIONS_PURGE_ON_DELETE", "false")
    monkeypatch.setenv("DOCUMENTS_PURGE_ON_DELETE", "true")
    async with engine_with(tmp_path, counting) as engine:
        transcript, points = await put_transcript(engine, "p", f"{SESSION}.jsonl")
        transcript.unlink()
        assert (await ingest(engine, transcript)).reason == "kept"
        assert await engine.store.count("conversations") == points


async def test_kept_file_that_comes_back_is_not_duplicated(engine: Engine) -> None:
    transcript, points = await put_transcript(engine, "p", f"{SESSION}.jsonl")
    data = transcript.read_bytes()
    transcript.unlink()
    assert (await ingest(engine, transcript)).reason == "kept"
    assert await stored_points(engine.store, "conversations", str(transcript)) == points

    transcript.write_bytes(data)  # restored from a backup, say
    again = await ingest(engine, transcript)
    assert again.status == "done"
    assert await stored_points(engine.store, "conversations", str(transcript)) == points
    rows = await engine.store.scroll_all("conversations", ["path", "generation"])
    generations = {p["generation"] for _, p in rows if p["path"] == str(transcript)}
    assert generations == {1}, "the kept points of generation 0 were replaced, not added to"
    record = engine.ledger.get(str(transcript))
    assert record is not None and record.status == "done"


async def test_document_that_comes_back_after_purge_is_ingested_again(engine: Engine) -> None:
    doc, points = await put_document(engine, "again.md")
    doc.unlink()
    assert (await ingest(engine, doc)).reason == "purged"
    assert await stored_points(engine.store, "documents", str(doc)) == 0
    doc.write_text(markdown("again"))
    outcome = await ingest(engine, doc)
    assert outcome.status == "done"
    assert await stored_points(engine.store, "documents", str(doc)) == points == outcome.chunks
