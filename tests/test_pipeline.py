"""End to end against the real model and the real embedded Qdrant: no mocks of either."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from conftest import CountingProvider, captured_logs, engine_with, ingest, stored_points
from generators import ClaudeSession, codex_rollout, dump, markdown_document, simple_pdf, write_transcript
from ingestd.engine import Engine
from ingestd.ledger import Ledger, Status
from ingestd.store import point_id


async def points_of(engine: Engine, kind: str, path: Path) -> dict[str, dict[str, object]]:
    rows = await engine.store.scroll_all(kind, ["path", "ordinal", "generation", "text", "digest"])
    return {pid: payload for pid, payload in rows if payload["path"] == str(path)}


def conv(engine: Engine, *parts: str) -> Path:
    return engine.settings.watch.conversations_dirs[0].joinpath(*parts)


async def test_transcript_ingested_and_searchable(engine: Engine) -> None:
    path = conv(engine, "-home-dev-project", "s1.jsonl")
    write_transcript(path, seed=1, exchanges=6)
    outcome = await ingest(engine, path)
    assert outcome.status == "done" and outcome.chunks > 0
    points = await points_of(engine, "conversations", path)
    assert len(points) == outcome.chunks
    texts = "\n".join(str(p["text"]) for p in points.values())
    assert "user:" in texts and "assistant:" in texts and "[tool_use " in texts and "[tool_result]" in texts
    assert "SECRET-THOUGHT" not in texts, "thinking blocks are dropped by default"
    hits = await engine.search("flaky test", "conversations", None, 3)
    assert hits and hits[0]["path"] == str(path)
    assert hits[0]["project"] == "-home-dev-project" and hits[0]["session"] == "s1"
    assert hits[0]["project_name"] == "project"


async def test_every_chunk_within_token_limit(engine: Engine) -> None:
    path = conv(engine, "p", "long.jsonl")
    session = ClaudeSession(7, "long")
    huge = " ".join(["tokenization"] * 3000)
    lines = [*session.lines(3), session.user(huge), session.tool_result("t", huge)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump(lines))
    doc = engine.settings.watch.documents_dirs[0] / "big.md"
    doc.write_text(markdown_document(3, 40) + "\n" + "word " * 5000)
    await ingest(engine, path)
    await ingest(engine, doc)
    counter = engine.provider.counter.tokenizer
    limit = engine.settings.chunk.chunk_max_tokens
    for kind in ("conversations", "documents"):
        rows = await engine.store.scroll_all(kind, ["text"])
        assert rows
        for _, payload in rows:
            assert len(counter.encode(str(payload["text"])).ids) <= limit  # with [CLS] and [SEP]


async def test_append_embeds_only_new_lines(uncached: Engine, counting) -> None:  # type: ignore[no-untyped-def]
    engine = uncached  # with the cache on, re-embedded chunks would be cache hits: invisible here
    path = conv(engine, "p", "live.jsonl")
    session = write_transcript(path, seed=2, exchanges=20)
    first = await ingest(engine, path)
    assert first.embedded == first.chunks > 5
    for _ in range(3):
        before = len(counting.texts)
        with path.open("ab") as handle:
            handle.write(dump([session.user("One more question about the flaky retry timeout.")]))
        outcome = await ingest(engine, path)
        embedded_now = len(counting.texts) - before
        assert outcome.status == "done"
        assert 1 <= embedded_now <= 2, f"an append re-embedded {embedded_now} chunks"
        assert outcome.embedded == embedded_now
    # The final collection equals a clean ingest of the final file.
    points = await points_of(engine, "conversations", path)
    clean = conv(engine, "p", "clean.jsonl")
    clean.write_bytes(path.read_bytes())
    await ingest(engine, clean)
    clean_points = await points_of(engine, "conversations", clean)
    assert sorted((p["ordinal"], p["text"]) for p in points.values()) == sorted(
        (p["ordinal"], p["text"]) for p in clean_points.values()
    )


async def test_incomplete_last_line_waits_for_its_newline(engine: Engine) -> None:
    path = conv(engine, "p", "partial.jsonl")
    session = write_transcript(path, seed=3, exchanges=2)
    tail = json.dumps(session.user("the unfinished line about kernels")).encode()
    with path.open("ab") as handle:
        handle.write(tail[:40])
    await ingest(engine, path)
    record = engine.ledger.get(str(path))
    assert record is not None and record.offset == path.stat().st_size - 40
    assert all(
        "unfinished" not in str(p["text"]) for p in (await points_of(engine, "conversations", path)).values()
    )
    with path.open("ab") as handle:
        handle.write(tail[40:] + b"\n")
    await ingest(engine, path)
    texts = [str(p["text"]) for p in (await points_of(engine, "conversations", path)).values()]
    assert any("unfinished line about kernels" in text for text in texts)


async def test_rewritten_file_replaces_its_points(engine: Engine) -> None:
    path = conv(engine, "p", "rewrite.jsonl")
    write_transcript(path, seed=4, exchanges=8)
    await ingest(engine, path)
    old = await points_of(engine, "conversations", path)
    write_transcript(path, seed=5, exchanges=3)  # different head, shorter
    outcome = await ingest(engine, path)
    new = await points_of(engine, "conversations", path)
    assert outcome.status == "done"
    assert len(new) == outcome.chunks and not set(old) & set(new)
    assert {p["generation"] for p in new.values()} == {1}


async def test_deletion_policies(engine: Engine) -> None:
    doc = engine.settings.watch.documents_dirs[0] / "gone.md"
    doc.write_text(markdown_document(1, 3))
    transcript = conv(engine, "p", "kept.jsonl")
    write_transcript(transcript, seed=6, exchanges=2)
    await ingest(engine, doc)
    await ingest(engine, transcript)
    doc.unlink()
    transcript.unlink()
    assert (await ingest(engine, doc)).reason == "purged"
    assert (await ingest(engine, transcript)).reason == "kept"
    assert await stored_points(engine.store, "documents", str(doc)) == 0
    assert await stored_points(engine.store, "conversations", str(transcript)) > 0
    record = engine.ledger.get(str(transcript))
    assert record is not None and record.status == "deleted"


async def test_restart_resumes_without_duplicates(tmp_path: Path, counting) -> None:  # type: ignore[no-untyped-def]
    from conftest import make_settings

    settings = make_settings(tmp_path, embed_cache_max_entries=0)  # counting sees every embedding
    path = settings.watch.conversations_dirs[0] / "p" / "resume.jsonl"
    write_transcript(path, seed=8, exchanges=15)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    outcome = await ingest(engine, path)
    ids = set(await points_of(engine, "conversations", path))
    await engine.close()
    embedded = len(counting.texts)

    engine = Engine(settings, provider=counting)
    await engine.open("test")
    again = await ingest(engine, path)
    assert again.status == "unchanged" and len(counting.texts) == embedded
    # Lose the state's progress (as a kill before the flush would): nothing is re-embedded,
    # because stored chunks are verified against Qdrant first.
    record = engine.ledger.get(str(path))
    assert record is not None
    record.status, record.resume_offset, record.resume_ordinal, record.resume_line = Status.PENDING, 0, 0, 1
    engine.ledger.begin(str(path), record)
    redo = await ingest(engine, path)
    assert redo.status == "done" and redo.reused == outcome.chunks and redo.embedded == 0
    assert len(counting.texts) == embedded, "verified against Qdrant, not re-embedded"
    assert set(await points_of(engine, "conversations", path)) == ids
    assert await stored_points(engine.store, "conversations", str(path)) == len(ids)
    assert ids == {point_id(str(path), 0, n) for n in range(outcome.chunks)}
    await engine.close()


async def test_malformed_lines_are_skipped_and_reported(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingestd.logs import configure_logging

    configure_logging("INFO", "json")
    path = conv(engine, "p", "bad.jsonl")
    session = ClaudeSession(9, "bad")
    good = dump(session.lines(2)).splitlines(keepends=True)
    body = (
        good[0]
        + b"{not json\n"
        + good[1]
        + b"[1, 2, 3]\n"
        + b'{"type": "mystery-type"}\n'
        + b"".join(good[2:])
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    outcome = await ingest(engine, path)
    assert outcome.status == "done" and outcome.chunks > 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    skipped = [e for e in events if e["event"] == "line.skipped"]
    assert {(e["line"], e["path"]) for e in skipped} == {(2, str(path)), (4, str(path))}
    done = next(e for e in events if e["event"] == "file.ingested")
    assert done["lines"]["malformed"] == 2 and done["lines"]["unknown:mystery-type"] == 1
    configure_logging("WARNING", "json")


async def test_codex_rollout_and_subagents(engine: Engine) -> None:
    rollout = conv(
        engine, "2025", "10", "30", "rollout-2025-10-30T11-00-00-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl"
    )
    rollout.parent.mkdir(parents=True, exist_ok=True)
    rollout.write_bytes(dump(codex_rollout(1, 3)))
    sub = conv(engine, "p", "parent-session", "subagents", "agent-abc.jsonl")
    write_transcript(sub, seed=10, exchanges=1, session="ignored")
    await ingest(engine, rollout)
    await ingest(engine, sub)
    codex = await engine.store.scroll_all(
        "conversations", ["path", "session", "text", "git_branch", "project", "project_name"]
    )
    rows = [p for _, p in codex if p["path"] == str(rollout)]
    assert rows and all(p["session"] == "sess-1" and p["git_branch"] == "dev" for p in rows)
    # Rollouts are filed by date: the project is session_meta.cwd (in Claude's spelling), not "2025".
    assert {(p["project"], p["project_name"]) for p in rows} == {("-work-codex-proj", "codex-proj")}
    joined = "\n".join(str(p["text"]) for p in rows)
    assert "[tool_use shell]" in joined and joined.count("user:") == 3  # event_msg copies not embedded
    subs = [p for _, p in codex if p["path"] == str(sub)]
    assert subs and {p["session"] for p in subs} == {"parent-session"}


async def test_documents_markdown_pdf_and_binary(engine: Engine, tmp_path: Path) -> None:
    docs = engine.settings.watch.documents_dirs[0]
    (docs / "notes.md").write_text(markdown_document(2, 6))
    (docs / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    (docs / "page.html").write_text(
        "<html><head><title>T</title><script>var x=1;</script></head>"
        "<body><p>Kernel signal handling notes.</p></body></html>"
    )
    (docs / "report.pdf").write_bytes(simple_pdf(["Quarterly memory leak report", "Second page"]))
    outcomes = {p.name: await ingest(engine, p) for p in sorted(docs.iterdir())}
    assert outcomes["notes.md"].status == "done"
    assert outcomes["image.md"].status == "skipped" and "binary" in (outcomes["image.md"].reason or "")
    assert outcomes["page.html"].status == "done" and outcomes["report.pdf"].status == "done"
    rows = await engine.store.scroll_all("documents", ["path", "text", "heading", "page"])
    html_text = [p["text"] for _, p in rows if str(p["path"]).endswith("page.html")]
    assert len(html_text) == 1 and "Kernel signal handling notes." in str(html_text[0])
    assert "var x" not in str(html_text[0]), "scripts are not text"
    pdf = [p for _, p in rows if str(p["path"]).endswith("report.pdf")]
    assert pdf and pdf[0]["page"] == 1 and "memory leak" in str(pdf[0]["text"])
    headings = {p.get("heading") for _, p in rows if str(p["path"]).endswith("notes.md")}
    assert any(str(h).startswith("Section ") for h in headings), headings


async def test_embedding_failure_quarantines_then_retry(engine: Engine, counting) -> None:  # type: ignore[no-untyped-def]
    path = conv(engine, "p", "quarantine.jsonl")
    write_transcript(path, seed=11, exchanges=2)
    counting.fail_next = 100
    outcome = await ingest(engine, path)
    assert outcome.status == "quarantined" and "injected" in (outcome.reason or "")
    record = engine.ledger.get(str(path))
    assert record is not None and record.status == "quarantined" and record.attempts == 1
    assert (await ingest(engine, path)).status == "unchanged", "quarantine holds until the file changes"
    status = await engine.status()
    assert status["problems"]["quarantined"][0]["path"] == str(path)
    counting.fail_next = 0
    assert engine.retry() == [str(path)]
    assert (await ingest(engine, path)).status == "done"


async def test_identical_text_is_embedded_once(engine: Engine, counting) -> None:  # type: ignore[no-untyped-def]
    first = conv(engine, "p", "one.jsonl")
    write_transcript(first, seed=12, exchanges=4)
    outcome = await ingest(engine, first)
    before = len(counting.texts)
    copy = conv(engine, "q", "one.jsonl")
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(first.read_bytes())
    again = await ingest(engine, copy)
    assert again.status == "done" and again.chunks == outcome.chunks
    assert len(counting.texts) == before, "every chunk of the copy came from the cache"
    hits = engine.metrics.registry.get_sample_value("ingestd_embed_cache_hits_total")
    assert hits is not None and hits >= outcome.chunks
    assert await stored_points(engine.store, "conversations", str(copy)) == outcome.chunks


async def test_codex_rollout_without_session_meta_falls_back_to_its_folder(engine: Engine) -> None:
    rollout = conv(engine, "legacy", "rollout-2024-01-02T03-04-05-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c.jsonl")
    rollout.parent.mkdir(parents=True, exist_ok=True)
    rollout.write_bytes(dump(codex_rollout(2, 2)[2:]))  # no session_meta, no turn_context
    assert (await ingest(engine, rollout)).status == "done"
    rows = await engine.store.scroll_all("conversations", ["path", "project"])
    assert {p["project"] for _, p in rows if p["path"] == str(rollout)} == {"legacy"}


async def test_non_utf8_file_name_rewrite_and_delete_leave_no_stale_points(engine: Engine) -> None:
    from ingestd.recovery import rebuild_state

    raw = os.fsencode(engine.settings.watch.documents_dirs[0]) + b"/caf\xe9.md"
    path = Path(os.fsdecode(raw))
    path.write_bytes(b"# Bytes\n\nA file name that is not UTF-8, about beavers.\n")
    assert (await ingest(engine, path)).status == "done"
    rows = await engine.store.scroll_all("documents", ["path", "generation", "text"])
    shown = f"{engine.settings.watch.documents_dirs[0]}/caf\\xe9.md"  # the byte kept as an escape
    assert [p["path"] for _, p in rows] == [shown]
    rebuilt = Ledger(engine.settings.ops.state_dir / "rebuilt")
    rebuilt.open()
    assert await rebuild_state(engine.store, rebuilt) == 1
    assert [key for key, _ in rebuilt.records()] == [str(path)]
    rebuilt.close()

    path.write_bytes(b"# Other\n\nCompletely different content now, about otters and more.\n")
    assert (await ingest(engine, path)).status == "done"
    rows = await engine.store.scroll_all("documents", ["path", "generation", "text"])
    assert {p["generation"] for _, p in rows} == {1}, "the first generation's points are stale"
    assert all("otters" in str(p["text"]) for _, p in rows)

    path.unlink()
    assert (await ingest(engine, path)).reason == "purged"
    assert await engine.store.count("documents") == 0


async def test_secrets_in_headings_and_titles_are_redacted(tmp_path: Path, counting) -> None:  # type: ignore[no-untyped-def]
    from conftest import make_settings

    engine = Engine(make_settings(tmp_path, redact_secrets=True), provider=counting)
    await engine.open("test")
    try:
        await _check_metadata_redacted(engine)
    finally:
        await engine.close()


async def _check_metadata_redacted(engine: Engine) -> None:
    key = "AKIAIOSFODNN7EXAMPLE"
    docs = engine.settings.watch.documents_dirs[0]
    (docs / "keys.md").write_text(f"# Rotate {key} today\n\nThe deploy notes, about otters.\n")
    (docs / "keys.html").write_text(
        f"<html><head><title>Token {key}</title></head><body><p>Kernel notes.</p>"
        + "".join(f"<p>{paragraph}</p>" for paragraph in ["Otters swim. " * 150] * 3)
        + "</body></html>"
    )
    for name in ("keys.md", "keys.html"):
        assert (await ingest(engine, docs / name)).status == "done"
    rows = await engine.store.scroll_all("documents", ["path", "heading", "text", "redactions"])
    assert rows and all(key not in json.dumps(payload) for _, payload in rows)
    assert {p["heading"] for _, p in rows} == {
        "Rotate [REDACTED:aws-access-key] today",
        "Token [REDACTED:aws-access-key]",
    }
    for name in ("keys.md", "keys.html"):
        record = engine.ledger.get(str(docs / name))
        mine = [p for _, p in rows if p["path"] == str(docs / name)]
        assert record is not None and record.redactions >= len(mine) >= 1, "headings are counted"
        assert record.redactions == sum(int(p.get("redactions") or 0) for p in mine)


async def test_small_files_share_batches_within_both_caps(tmp_path: Path, counting: CountingProvider) -> None:
    """One chunk per file, forty files at once: the model gets few, full batches, never more
    than EMBED_BATCH_SIZE chunks nor more than EMBED_BATCH_MAX_TOKENS once padded."""
    caps = {"embed_batch_size": 8, "embed_batch_max_tokens": 200, "embed_cache_max_entries": 0}
    async with engine_with(tmp_path, counting, **caps) as engine:
        docs = [engine.settings.watch.documents_dirs[0] / f"note{i}.md" for i in range(40)]
        for i, doc in enumerate(docs):
            doc.write_text(f"# Note {i}\n\nSensor {i} drifts at dusk{' and again' * (i % 7)}.\n")
        outcomes = await asyncio.gather(*(ingest(engine, doc) for doc in docs))
        tokenizer = engine.provider.counter.tokenizer
    assert all(outcome.status == "done" for outcome in outcomes)
    assert sum(len(batch) for batch in counting.batches) == sum(outcome.chunks for outcome in outcomes) >= 40
    assert len(counting.batches) <= 12, [len(batch) for batch in counting.batches]
    for batch in counting.batches:
        longest = max(len(tokenizer.encode(text).ids) for text in batch)
        assert len(batch) <= 8 and len(batch) * longest <= 200, (len(batch), longest)


async def test_a_failed_completion_leaves_the_file_pending_and_says_why(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = engine.settings.watch.documents_dirs[0] / "notes.md"
    doc.write_text(markdown_document(6, 2))

    def refuse(*_: object) -> None:
        raise OSError("injected: state volume gone")

    monkeypatch.setattr(engine.ledger, "done", refuse)
    with captured_logs("ERROR") as logs:
        outcome = await ingest(engine, doc, limit_s=60)
    assert outcome.status == "pending" and outcome.reason is not None
    assert "injected: state volume gone" in outcome.reason
    assert [(e["event"], e["path"]) for e in logs] == [("file.error", str(doc))]
    record = engine.ledger.get(str(doc))
    assert record is None or record.status != "done"
    monkeypatch.undo()
    outcome = await ingest(engine, doc, limit_s=60)
    assert outcome.status == "done"
    assert await stored_points(engine.store, "documents", str(doc)) == outcome.chunks > 0


async def test_a_librarys_own_warnings_are_structured_lines_naming_the_file(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """pypdf logs through `logging` and qdrant-client through `warnings`: before, their lines
    reached `docker logs` as bare text, naming neither the file nor the outcome."""
    import warnings

    from ingestd.logs import concerning, configure_logging

    configure_logging("INFO", "json")
    try:
        good = simple_pdf(["Tide tables for the harbour"])
        shifted = good.replace(b"%PDF-1.4\n", b"%PDF-1.4\n%every offset is now wrong\n", 1)
        path = engine.settings.watch.documents_dirs[0] / "shifted.pdf"
        path.write_bytes(shifted)
        outcome = await ingest(engine, path)
        with concerning("/notes/big.md"):
            await asyncio.to_thread(warnings.warn, "Local mode is not recommended", UserWarning)
        out = capsys.readouterr().out
    finally:
        configure_logging("WARNING", "json")
    assert outcome.status == "done"  # pypdf recovers the text and says so
    lines = [line for line in out.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), [line for line in lines if not line.startswith("{")]
    events = [json.loads(line) for line in lines]
    pypdf = [e for e in events if str(e.get("logger", "")).startswith("pypdf")]
    assert pypdf and all(e["path"] == str(path) and e["outcome"] == "continued" for e in pypdf), pypdf
    warned = [e for e in events if e["event"] == "library.warning"]
    assert len(warned) == 1 and warned[0]["path"] == "/notes/big.md", warned
    assert warned[0]["category"] == "UserWarning" and "Local mode" in warned[0]["message"]


async def test_a_halt_waits_in_a_loop_so_the_stack_does_not_grow_round_after_round(
    tmp_path: Path, counting: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused credentials halt embedding and the batch is tried again after a pause. That retry
    used to be a recursive call, one stack frame deeper per round: a halt of a day grew the
    stack by 1,440 frames. The depth at each attempt must stay the same."""
    import sys

    from ingestd.errors import Fatal

    depths: list[int] = []
    real = counting.embed_documents

    async def refused_then_accepted(texts: list[str]) -> list[list[float]]:
        frame, depth = sys._getframe(), 0
        while frame is not None:
            frame, depth = frame.f_back, depth + 1  # type: ignore[assignment]
        depths.append(depth)
        if len(depths) <= 6:
            raise Fatal("injected: credentials refused")
        return await real(texts)

    monkeypatch.setattr(counting, "embed_documents", refused_then_accepted)
    async with engine_with(
        tmp_path,
        counting,
        embed_cache_max_entries=0,
        retry_backoff_seconds=0.01,
        retry_backoff_max_seconds=0.01,
    ) as engine:
        doc = engine.settings.watch.documents_dirs[0] / "halted.md"
        doc.write_text(markdown_document(3, 1))
        outcome = await ingest(engine, doc, limit_s=60)
        assert outcome.status == "done" and engine.pipeline.status().embedding_halted is None
    assert len(depths) == 7 and len(set(depths)) == 1, depths
