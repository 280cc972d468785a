"""Opt-in checks against the real files in ../shared/corpus (`pytest -m corpus`).

A fresh clone has no ../shared: these tests skip there. They parse every real transcript, and
ingest a sample of transcripts, Markdown and PDFs end to end with the real model and Qdrant.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from conftest import CountingProvider, make_settings
from ingestd.engine import Engine
from ingestd.parsers.claude import RenderOptions
from ingestd.parsers.transcripts import TranscriptParser
from ingestd.pipeline import FileJob
from ingestd.reader import read_lines

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present"),
]


def test_every_real_transcript_parses() -> None:
    files = sorted(CORPUS.glob("claude/**/*.jsonl")) + sorted(CORPUS.glob("codex/**/*.jsonl"))
    assert len(files) > 100
    kept = 0

    async def parse(path: Path) -> int:
        parser = TranscriptParser(path, path.parent, RenderOptions())
        async for line in read_lines(path, 0, 1, 65536, 8 << 20, include_partial=False):
            parser.parse(line)
        return parser.counts["kept"]

    for path in files:
        kept += asyncio.run(parse(path))
    assert kept > 1000


async def test_sample_ingests_within_the_token_limit(tmp_path: Path, counting: CountingProvider) -> None:
    settings = make_settings(tmp_path)
    conversations, documents = settings.watch.conversations_dirs[0], settings.watch.documents_dirs[0]
    shutil.copytree(CORPUS / "claude" / "d-kimuson-claude-code-viewer" / "projects", conversations / "viewer")
    for doc in sorted((CORPUS / "docs" / "rust-book").glob("ch0*.md"))[:10]:
        shutil.copy(doc, documents)
    for pdf in sorted((CORPUS / "pdf").rglob("*.pdf"))[:10]:
        shutil.copy(pdf, documents)
    engine = Engine(settings, provider=counting)
    await engine.open("test")
    try:
        outcomes = []
        for path in sorted(p for p in tmp_path.joinpath("watch").rglob("*") if p.is_file()):
            job = await engine.submit(path)
            if isinstance(job, FileJob):
                await job.done.wait()
                outcomes.append(job.outcome)
        statuses = {o.status for o in outcomes if o}
        assert "done" in statuses and statuses <= {"done", "skipped"}
        tokenizer = engine.provider.counter.tokenizer
        for kind in ("conversations", "documents"):
            for _, payload in await engine.store.scroll_all(kind, ["text"]):
                assert len(tokenizer.encode(str(payload["text"])).ids) <= settings.chunk.chunk_max_tokens
    finally:
        await engine.close()
